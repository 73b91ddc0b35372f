"""Inputs that once made a parser raise something other than its typed error, kept as plain tests.

Each comes from the property tests or the fuzz harnesses (fuzz/README.md); the test pins the
fixed behaviour so it needs neither hypothesis nor atheris to stay fixed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from shared import config
from shared.errors import ConfigError

# shared.config.load: file contents that escaped as RecursionError, ValueError or OverflowError, or
# gave a ConfigError message over several lines.
CONFIG_FILES = {
    "array_nested_5000_deep": (b"x = " + b"[" * 5000 + b"]" * 5000, "nested too deeply"),
    "inline_table_nested_2000_deep": (b"x = " + b"{a = " * 2000 + b"1" + b"}" * 2000, "nested too deeply"),
    "integer_past_int_digit_limit": (b"x = " + b"1" * 5000, "digits"),
    "integer_past_float_range": (b"[appd]\nidle_timeout = " + b"9" * 400, "appd.idle_timeout"),
    "negative_integer_past_float_range": (b"[secured]\nhandshake_timeout = -" + b"9" * 400, "secured.handshake_timeout"),
    "unknown_key_with_line_break": (b'[appd]\n"a\\nb" = 1\n', "unknown setting appd."),
    "unknown_key_with_record_separator": (b'[appd]\n"\\u001e0" = []\n', "unknown setting appd."),
    "boolean_as_uid": (b"[secured]\nallowed_uids = [true]\n", "secured.allowed_uids"),
    "boolean_alone_as_uid": (b"[secured]\nallowed_uids = false\n", "secured.allowed_uids"),
}


@pytest.mark.parametrize("name", sorted(CONFIG_FILES))
def test_config_file_gives_one_line_config_error(tmp_path: Path, name: str) -> None:
    data, expected = CONFIG_FILES[name]
    path = tmp_path / "config.toml"
    path.write_bytes(data)
    with pytest.raises(ConfigError) as ei:
        config.load(path)
    message = str(ei.value)
    assert len(message.splitlines()) == 1, message
    assert expected in message


def test_config_path_with_nul_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as ei:
        config.load(str(tmp_path / "a") + "\x00b.toml")
    assert "null byte" in str(ei.value)
