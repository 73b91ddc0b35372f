"""Run the fuzz targets one after another and summarise: executions and findings per target.

Usage: ``python -m fuzz.run [--seconds N] [TARGET ...]`` from the repository root (``make fuzz`` runs
every target for ``FUZZ_SECONDS``, default 60). Per target it uses:

- ``fuzz/corpus/<target>/``   the working corpus (libFuzzer adds what it finds; kept between runs)
- ``fuzz/seeds/<target>/``    the seeds from ``python -m fuzz.seeds`` (read only), and
  ``fuzz/seeds/<target>.dict`` a libFuzzer dictionary where one is written
- ``fuzz/findings/<target>/`` crash-*, timeout-* and oom-* inputs, plus the log of the last run

libFuzzer stops a target at its first finding; the summary names the file to replay with
``python -m fuzz.fuzz_<target> fuzz/findings/<target>/crash-...``. Exit status 1 if any target found
something.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TARGETS = ("record", "client_hello", "handshake", "handshake2", "channel", "blob", "config")
MAX_LEN = {"record": 20000, "handshake": 20000, "handshake2": 8192, "client_hello": 4096, "channel": 8192,
           "blob": 8192, "config": 4096}
FINDING_PREFIXES = ("crash-", "timeout-", "oom-", "leak-")


def findings(directory: Path) -> set[str]:
    return {p.name for p in directory.iterdir() if p.name.startswith(FINDING_PREFIXES)} if directory.exists() else set()


def run_target(target: str, seconds: int) -> tuple[int, list[str], str]:
    corpus, seeds, found = HERE / "corpus" / target, HERE / "seeds" / target, HERE / "findings" / target
    corpus.mkdir(parents=True, exist_ok=True)
    found.mkdir(parents=True, exist_ok=True)
    before = findings(found)
    cmd = [
        sys.executable, "-m", f"fuzz.fuzz_{target}",
        f"-max_total_time={seconds}",
        f"-max_len={MAX_LEN[target]}",
        "-timeout=10",
        "-rss_limit_mb=2048",
        "-print_final_stats=1",
        f"-artifact_prefix={found}/",
        str(corpus),
    ]
    if seeds.is_dir():
        cmd.append(str(seeds))
    dictionary = HERE / "seeds" / f"{target}.dict"
    if dictionary.is_file():
        cmd.insert(3, f"-dict={dictionary}")
    log = found / "last-run.log"
    started = time.monotonic()
    with log.open("wb") as out:
        # A hard stop well past the budget: libFuzzer's own -max_total_time ends a healthy run.
        proc = subprocess.run(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, timeout=seconds + 300,
                              env={**os.environ, "PYTHONHASHSEED": "0"}, check=False)
    elapsed = time.monotonic() - started
    text = log.read_text(errors="replace")
    execs = re.findall(r"stat::number_of_executed_units:\s*(\d+)", text)
    new = sorted(findings(found) - before)
    status = "ok" if proc.returncode == 0 and not new else f"exit {proc.returncode} after {elapsed:.0f} s"
    return int(execs[-1]) if execs else 0, new, status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=int(os.environ.get("FUZZ_SECONDS", "60")))
    parser.add_argument("targets", nargs="*", metavar="TARGET", help=f"any of {', '.join(TARGETS)} (default: all)")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.targets) - set(TARGETS))
    if unknown:
        parser.error(f"unknown target(s) {', '.join(unknown)}")
    targets = args.targets or list(TARGETS)
    print(f"fuzzing {len(targets)} target(s), {args.seconds} s each")
    total = 0
    for target in targets:
        execs, new, status = run_target(target, args.seconds)
        total += len(new)
        print(f"  {target:13} {execs:>10} execs  {len(new)} finding(s)  [{status}]", flush=True)
        for name in new:
            print(f"      fuzz/findings/{target}/{name}")
    print(f"{total} finding(s); logs in fuzz/findings/<target>/last-run.log")
    return 1 if total else 0


if __name__ == "__main__":
    sys.exit(main())
