"""Run the fuzz targets one after another and summarise: executions, coverage and findings per target.

Usage: ``python -m fuzz.run [--seconds N] [TARGET ...]`` from the repository root (``make fuzz`` runs
every target for ``FUZZ_SECONDS``, default 60; ``make fuzz-smoke``, part of ``.ci/run``, a few seconds
each). Per target it uses:

- ``fuzz/corpus/<target>/``   the working corpus (libFuzzer adds what it finds; kept between runs)
- ``fuzz/seeds/<target>/``    the seeds from ``python -m fuzz.seeds`` (read only), and
  ``fuzz/seeds/<target>.dict`` a libFuzzer dictionary where one is written
- ``fuzz/findings/<target>/`` crash-*, timeout-* and oom-* inputs, plus the log of the last run

libFuzzer stops a target at its first finding; the summary names the file, the harness's complaint and
the command that replays it (and, up to 4 KiB, the input in base64, so a CI log is enough to rebuild it).
A target fails on a finding, on a harness that exits with an error or hangs, and on a run that saw no
coverage at all (the harness instrumented nothing, so libFuzzer would only be guessing). Exit status 1 if
any target failed.
"""

from __future__ import annotations

import argparse
import base64
import os
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TARGETS = ("record", "client_hello", "handshake", "second_flight", "second_flight12", "channel", "blob",
           "config")
MAX_LEN = {"record": 20000, "handshake": 20000, "second_flight": 8192, "second_flight12": 8192, "client_hello": 4096,
           "channel": 8192, "blob": 8192, "config": 4096}
FINDING_PREFIXES = ("crash-", "timeout-", "oom-", "leak-")
# libFuzzer's words for a run whose target reported no coverage (nothing instrumented, or every input refused
# before the first branch).
NO_COVERAGE = "no interesting inputs were found so far"
# Findings up to this size are printed in base64 too, so a CI log is enough to rebuild them.
PRINT_BYTES = 4096
# A hard stop well past the budget: libFuzzer's own -max_total_time ends a healthy run.
GRACE_SECONDS = 300


@dataclass
class Result:
    target: str
    execs: int = 0
    coverage: int = 0
    findings: list[str] = field(default_factory=list)  # file names in fuzz/findings/<target>/
    reason: str = ""  # the harness's complaint, from the log
    problem: str = ""  # why the target failed; empty when it did not

    @property
    def failed(self) -> bool:
        return bool(self.problem)


def findings(directory: Path) -> set[str]:
    return {p.name for p in directory.iterdir() if p.name.startswith(FINDING_PREFIXES)} if directory.exists() else set()


def replay_command(target: str, name: str) -> str:
    python = os.path.relpath(sys.executable, ROOT) if sys.executable.startswith(str(ROOT)) else sys.executable
    return shlex.join([python, "-m", f"fuzz.fuzz_{target}", f"fuzz/findings/{target}/{name}"])


def complaint(log: str) -> str:
    """The first line of what the harness raised (atheris prints it after 'Uncaught Python exception')."""
    lines = log.splitlines()
    for i, line in enumerate(lines):
        if "Uncaught Python exception" in line and i + 1 < len(lines):
            return lines[i + 1].strip()
    for line in lines:
        if line.startswith("==") and "ERROR: libFuzzer:" in line:
            return line.split("ERROR: ", 1)[1].strip()
    return ""


def run_target(target: str, seconds: int) -> Result:
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
    result = Result(target)
    started = time.monotonic()
    with log.open("wb") as out:
        try:
            proc = subprocess.run(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                  timeout=seconds + GRACE_SECONDS, env={**os.environ, "PYTHONHASHSEED": "0"},
                                  check=False)
            returncode: int | None = proc.returncode
        except subprocess.TimeoutExpired:
            returncode = None
    elapsed = time.monotonic() - started
    text = log.read_text(errors="replace")
    execs = re.findall(r"stat::number_of_executed_units:\s*(\d+)", text)
    cov = re.findall(r"\bcov: (\d+)", text)
    result.execs = int(execs[-1]) if execs else 0
    result.coverage = max(map(int, cov)) if cov else 0
    # A finding libFuzzer wrote, even over an identical file an earlier run left.
    written = {Path(p).name for p in re.findall(r"Test unit written to (\S+)", text)}
    result.findings = sorted((findings(found) - before) | {n for n in written if n.startswith(FINDING_PREFIXES)})
    result.reason = complaint(text)
    if returncode is None:
        result.problem = f"killed after {elapsed:.0f} s (libFuzzer did not stop)"
    elif result.findings:
        result.problem = f"{len(result.findings)} finding(s)"
    elif returncode != 0:
        result.problem = f"exit {returncode} after {elapsed:.0f} s, no input saved"
    elif NO_COVERAGE in text or not cov:
        result.problem = "no coverage: is the code under test imported inside atheris.instrument_imports()?"
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=int(os.environ.get("FUZZ_SECONDS", "60")))
    parser.add_argument("targets", nargs="*", metavar="TARGET", help=f"any of {', '.join(TARGETS)} (default: all)")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.targets) - set(TARGETS))
    if unknown:
        parser.error(f"unknown target(s) {', '.join(unknown)}")
    targets = args.targets or list(TARGETS)
    print(f"fuzzing {len(targets)} target(s), {args.seconds} s each", flush=True)
    started = time.monotonic()
    failed = []
    for target in targets:
        r = run_target(target, args.seconds)
        status = f"FAILED: {r.problem}" if r.failed else "ok"
        print(f"  {target:15} {r.execs:>10} execs  cov {r.coverage:>5}  {len(r.findings)} finding(s)  [{status}]",
              flush=True)
        if r.failed:
            failed.append(r)
            if r.reason:
                reason = "".join(c if c.isprintable() else repr(c)[1:-1] for c in r.reason)
                print(f"      {reason if len(reason) <= 400 else reason[:400] + ' ...'}")
            for name in r.findings:
                path = HERE / "findings" / target / name
                print(f"      fuzz/findings/{target}/{name}")
                if path.is_file() and path.stat().st_size <= PRINT_BYTES:
                    print(f"      base64: {base64.b64encode(path.read_bytes()).decode()}")
                print(f"      replay: {replay_command(target, name)}")
            print(f"      log: fuzz/findings/{target}/last-run.log")
    total = sum(len(r.findings) for r in failed)
    print(f"{total} finding(s), {len(failed)} target(s) failed in {time.monotonic() - started:.0f} s; "
          "logs in fuzz/findings/<target>/last-run.log")
    if total:
        print("fix the parser (not the harness), then pin the input in tests/unit/test_fuzz_regressions.py "
              "(fuzz/README.md)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
