"""Inputs that once made a parser raise something other than its typed error, kept as plain tests.

Each comes from the property tests or the fuzz harnesses (fuzz/README.md); the test pins the
fixed behaviour so it needs neither hypothesis nor atheris to stay fixed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tls_privsep.shared import config
from tls_privsep.shared.errors import ConfigError

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


@pytest.mark.parametrize("text", ["h:+80", "h:8_0", "h:\u0668\u0660", " h: 80", "[]:80", "::1:80", "h :80", "h:123456"])
def test_parse_address_refuses_what_int_or_rpartition_would_let_through(text: str) -> None:
    """int() takes '+80', '8_0' and other scripts' digits; rpartition splits an unbracketed IPv6 address."""
    from tls_privsep.shared.config import parse_address

    with pytest.raises(ConfigError) as exc:
        parse_address(text, "appd.listen")
    assert str(exc.value).startswith("appd.listen: ") and "\n" not in str(exc.value)


# fuzz config, mode 1: the "needs brackets" suggestion echoed the host raw, control characters and all.
PARSE_ADDRESS_ECHOES = [
    "\x1e\x00\x00\x01ho\x00\ufffd\x00\x00\x00\x00hTTTTTTTTTTTTTTTT\ufffdt\t:TT-o\ufffdt\t:-00",
    "a\nb:c:80",
    "a\u2028b:80",
    "h:8\x1b[2J0",
    "\r:80",
]


@pytest.mark.parametrize("text", PARSE_ADDRESS_ECHOES)
def test_parse_address_echoes_input_as_one_printable_line(text: str) -> None:
    with pytest.raises(ConfigError) as exc:
        config.parse_address(text, "appd.listen")
    message = str(exc.value)
    assert message.startswith("appd.listen: ") and message.isprintable() and len(message.splitlines()) == 1, message


@pytest.mark.parametrize("data", [b'[secured]\ncipher_suites = ["A\\u001eB"]\n', b'[secured]\ngroups = ["\\n"]\n',
                                  b'[appd]\nlisten = ["\\u0085:\\u0007:1"]\n'])
def test_config_values_echo_as_one_printable_line(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "config.toml"
    path.write_bytes(data)
    with pytest.raises(ConfigError) as ei:
        config.load(path)
    message = str(ei.value)
    assert message.isprintable() and len(message.splitlines()) == 1, message


@pytest.mark.parametrize("uid", [-1, 2**32 - 1, 2**32, 2**63])
def test_allowed_uids_out_of_range(uid: int) -> None:
    with pytest.raises(ConfigError, match=r"secured\.allowed_uids"):
        config.from_dict({"secured": {"allowed_uids": [uid]}})
