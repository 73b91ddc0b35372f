"""Fuzz target `config`: shared.config.load on arbitrary file contents, and parse_address.

Input: ``[mode][bytes]``.
- mode 0: ``bytes`` is written to a file that ``load`` reads (tomllib is instrumented too, so the
  fuzzer learns TOML and gets past it to the schema checks).
- mode 1: ``bytes`` (decoded as UTF-8, errors replaced) goes to ``parse_address``.
- mode 2: ``bytes`` is lines of ``[table][setting][value text]``: the harness writes
  ``[table]`` headers and ``name = value text`` with the name of a setting shared/config.py knows
  (the byte indexes them; past the end, the line's text up to ``=`` is the key), so the fuzzer
  spends its time on values (huge numbers, odd strings, nesting) rather than on spelling keys.

Only ConfigError may escape, and its message must be one non-empty line of printable characters
(shared.config.shown escapes what the input brought).

Run: ``python -m fuzz.fuzz_config CORPUS_DIR [libFuzzer flags]`` from the repository root.
"""

from __future__ import annotations

import atexit
import shutil
import sys
import tempfile
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["tls_privsep", "tomllib"]):
    import dataclasses

    from fuzz.base import Finding
    from tls_privsep.shared import config
    from tls_privsep.shared.errors import ConfigError

_DIR = Path(tempfile.mkdtemp(prefix="tls-privsep-fuzz-config-"))
atexit.register(shutil.rmtree, _DIR, True)
_FILE = _DIR / "config.toml"


TABLES = ("", "secured", "appd")
KEYS = {
    "": sorted(f.name for f in dataclasses.fields(config.Settings) if f.name not in ("secured", "appd")),
    "secured": sorted(f.name for f in dataclasses.fields(config.SecuredSettings)),
    "appd": sorted(f.name for f in dataclasses.fields(config.AppdSettings)),
}


def compose(data: bytes) -> bytes:
    """Mode 2: a TOML file from ``[table][setting][value]`` lines."""
    tables: dict[str, list[bytes]] = {t: [] for t in TABLES}
    for line in data.split(b"\n"):
        if len(line) < 2:
            continue
        table = TABLES[line[0] % len(TABLES)]
        names, value = KEYS[table], line[2:]
        if line[1] < len(names):
            tables[table].append(names[line[1]].encode() + b" = " + value)
        else:
            tables[table].append(value)  # a key of its own making
    out = tables[""]
    for table in TABLES[1:]:
        if tables[table]:
            out += [f"[{table}]".encode(), *tables[table]]
    return b"\n".join(out) + b"\n"


def check_message(exc: ConfigError) -> None:
    text = str(exc)
    if not text.strip() or len(text.splitlines()) != 1 or not text.isprintable():
        raise Finding(f"ConfigError message is not one printable line: {text!r}") from exc


def test_one_input(data: bytes) -> None:
    if not data:
        return
    try:
        mode = data[0] % 3
        if mode == 1:
            config.parse_address(data[1:].decode("utf-8", "replace"), "appd.listen")
        else:
            _FILE.write_bytes(data[1:] if mode == 0 else compose(data[1:]))
            config.load(_FILE)
    except ConfigError as exc:
        check_message(exc)


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
