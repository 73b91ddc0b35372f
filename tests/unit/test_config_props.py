"""Property tests for shared.config: whatever the file holds, the loader returns settings or raises a
ConfigError of one printable line that names the setting — never any other exception.

Documents are generated as Python values and rendered to TOML here, with the keys shared/config.py
knows (read from its dataclasses, so new settings are covered as they appear), unknown keys, wrong
types, out-of-range and non-finite numbers, odd strings; raw bytes and text go in as the file too.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tls_privsep.shared import config
from tls_privsep.shared.errors import ConfigError

PROPS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

SECTIONS: dict[str, type[Any]] = {"": config.Settings, "secured": config.SecuredSettings, "appd": config.AppdSettings}
FIELDS: dict[str, dict[str, str]] = {
    name: {f.name: str(f.type) for f in dataclasses.fields(cls) if name or f.name not in ("secured", "appd")}
    for name, cls in SECTIONS.items()
}
# Ranges docs/configuration.md promises (only keys the loader has are tested).
INT_RANGES: dict[tuple[str, str], tuple[int, int | None]] = {
    ("secured", "tickets"): (0, 16),
    ("secured", "ticket_lifetime"): (1, 604800),
    ("secured", "socket_mode"): (0, 0o777),
    ("secured", "max_handshakes_per_channel"): (1, None),
    ("appd", "max_connections"): (1, None),
}
POSITIVE_SECONDS = [("secured", "handshake_timeout"), ("appd", "handshake_timeout"), ("appd", "idle_timeout")]
HUGE_INTS = [10**400, -(10**400), 2**63, -(2**63) - 1, 2**64]


# ---- rendering Python values as TOML -----------------------------------------------------------


def toml_string(s: str) -> str:
    out = []
    for ch in s:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def toml_key(k: str) -> str:
    return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else toml_string(k)


def toml_value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return toml_string(v)
    if isinstance(v, datetime.datetime | datetime.date):
        return v.isoformat()
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{toml_key(k)} = {toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(type(v))


def render(doc: dict[str, Any]) -> str:
    """Top-level scalars first, then one [table] per dict value (so `secured = 5` stays possible)."""
    lines = [f"{toml_key(k)} = {toml_value(v)}" for k, v in doc.items() if not isinstance(v, dict)]
    for name, table in doc.items():
        if isinstance(table, dict):
            lines.append(f"[{toml_key(name)}]")
            lines += [f"{toml_key(k)} = {toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


# ---- strategies ---------------------------------------------------------------------------------

SCALARS = st.one_of(
    st.text(max_size=20),
    st.integers(),
    st.sampled_from(HUGE_INTS),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.dates(),
    st.datetimes(timezones=st.just(datetime.UTC)),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=8,
)
GOOD = {
    "cipher_suites": st.lists(st.sampled_from(sorted(config.SUITE_NAMES)), min_size=1, max_size=3),
    "groups": st.lists(st.sampled_from(["x25519", "secp256r1", "P-256", "X25519MLKEM768", "secp256r1mlkem768"]),
                       min_size=1, max_size=3),
    "post_quantum": st.sampled_from(config.POST_QUANTUM),
    "client_auth": st.sampled_from(config.CLIENT_AUTH),
    "log_format": st.sampled_from(config.LOG_FORMATS),
    "log_level": st.sampled_from(["debug", "info", "warning", "error"]),
    "listen": st.lists(st.sampled_from(["127.0.0.1:8443", "[::1]:443", "h:0"]), min_size=1, max_size=2),
    "certificates": st.lists(st.fixed_dictionaries({"cert": st.text(max_size=5), "key": st.text(max_size=5)}),
                             max_size=2),
}


def plausible(name: str, type_: str) -> st.SearchStrategy[Any]:
    """A value of the right type (often a valid one), or anything at all."""
    typed = {
        "str": st.text(max_size=20),
        "str | None": st.text(max_size=20),
        "int": st.one_of(st.integers(-5, 70000), st.integers(), st.sampled_from(HUGE_INTS)),
        "float": st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-5, 1000)),
        "bool": st.booleans(),
        "tuple[str, ...]": st.one_of(st.text(max_size=10), st.lists(st.text(max_size=10), max_size=3)),
        "tuple[int, ...]": st.lists(st.integers(), max_size=3),
    }.get(type_, VALUES)
    return st.one_of(GOOD.get(name, typed), typed, VALUES)


def section_tables(name: str) -> st.SearchStrategy[dict[str, Any]]:
    known = FIELDS[name]
    known_part = st.lists(st.sampled_from(sorted(known)), unique=True, max_size=4).flatmap(
        lambda keys: st.fixed_dictionaries({k: plausible(k, known[k]) for k in keys})
    )
    unknown_part = st.dictionaries(st.text(max_size=12).filter(lambda k: k not in known and k not in SECTIONS),
                                   VALUES, max_size=1)
    return st.tuples(known_part, st.one_of(st.just({}), unknown_part)).map(lambda t: {**t[0], **t[1]})


@st.composite
def documents(draw: st.DrawFn) -> dict[str, Any]:
    doc: dict[str, Any] = {k: v for k, v in draw(section_tables("")).items() if not isinstance(v, dict)}
    for name in ("secured", "appd"):
        choice = draw(st.integers(0, 9))
        if choice < 7:
            doc[name] = draw(section_tables(name))
        elif choice == 7:
            doc[name] = draw(SCALARS)  # not a table
    return doc


# ---- helpers -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cfg_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("config") / "config.toml"


def load_bytes(path: Path, data: bytes) -> config.Settings | ConfigError:
    path.write_bytes(data)
    try:
        return config.load(path)
    except ConfigError as exc:
        return exc


def assert_one_line(exc: ConfigError) -> str:
    text = str(exc)
    assert text.strip(), "empty ConfigError"
    assert len(text.splitlines()) == 1, f"ConfigError over several lines: {text!r}"
    assert text.isprintable(), f"ConfigError with unprintable characters: {text!r}"
    return text


def names_in(doc: dict[str, Any]) -> set[str]:
    names = set()
    for k, v in doc.items():
        names.add(k)
        if isinstance(v, dict):
            names.update(v)
    return names


def assert_valid(s: config.Settings) -> None:
    """What validate() promises about settings it lets through."""
    assert s.secured.cipher_suites and all(n in config.SUITE_NAMES for n in s.secured.cipher_suites)
    assert s.secured.groups and s.appd.listen
    kinds = {config.GROUP_NAMES[g.lower()] in config.HYBRID_GROUPS for g in s.secured.groups}
    assert {"require": True in kinds, "off": False in kinds, "prefer": True}[s.secured.post_quantum]
    assert not (s.secured.post_quantum == "require" and s.secured.allow_psk_ke)
    served = config.served_versions(s.secured)
    assert served and set(served) <= set(s.secured.versions)
    assert "1.2" not in served or (s.secured.post_quantum != "require" and any(
        config.GROUP_NAMES[g.lower()] not in config.HYBRID_GROUPS for g in s.secured.groups))
    for sec, key in POSITIVE_SECONDS:
        value = getattr(getattr(s, sec), key)
        assert math.isfinite(value) and value > 0
    assert math.isfinite(s.appd.drain_timeout) and s.appd.drain_timeout >= 0
    for (sec, key), (lo, hi) in INT_RANGES.items():
        if key in FIELDS[sec]:
            value = getattr(getattr(s, sec), key)
            assert lo <= value and (hi is None or value <= hi)
    for addr in s.appd.listen:
        config.parse_address(addr)


# ---- properties ----------------------------------------------------------------------------------


@settings(PROPS, max_examples=100)
@given(doc=documents())
def test_any_document_gives_settings_or_one_line_naming_a_key(cfg_file: Path, doc: dict[str, Any]) -> None:
    outcome = load_bytes(cfg_file, render(doc).encode())
    if isinstance(outcome, ConfigError):
        text = assert_one_line(outcome)
        names = names_in(doc) | {"secured", "appd"}
        assert any(n in text or repr(n) in text for n in names if n), f"names no key: {text!r}"
    else:
        assert_valid(outcome)


def wrong_values(type_: str) -> st.SearchStrategy[Any]:
    """Values of a type the setting must refuse."""
    not_str = VALUES.filter(lambda v: not isinstance(v, str))
    if type_ in ("str", "str | None"):
        return not_str
    if type_ == "int":
        return VALUES.filter(lambda v: isinstance(v, bool) or not isinstance(v, int))
    if type_ == "float":
        return VALUES.filter(lambda v: isinstance(v, bool) or not isinstance(v, int | float))
    if type_ == "bool":
        return VALUES.filter(lambda v: not isinstance(v, bool))
    if type_ == "tuple[str, ...]":
        return st.one_of(not_str.filter(lambda v: not isinstance(v, list)),
                         st.lists(not_str, min_size=1, max_size=3).map(lambda v: ["ok", *v]))
    if type_ == "tuple[int, ...]":
        bad_item = VALUES.filter(lambda v: isinstance(v, bool) or not isinstance(v, int))
        return st.one_of(bad_item.filter(lambda v: not isinstance(v, list)),
                         st.lists(bad_item, min_size=1, max_size=3).map(lambda v: [1, *v]))
    # certificates: anything but a list of {cert = str, key = str}
    return st.one_of(
        VALUES.filter(lambda v: not isinstance(v, list)),
        st.lists(VALUES.filter(lambda v: not isinstance(v, dict)), min_size=1, max_size=2),
        st.lists(st.dictionaries(st.sampled_from(["cert", "key", "extra"]), VALUES, max_size=3)
                 .filter(lambda d: set(d) != {"cert", "key"}
                         or not all(isinstance(x, str) for x in d.values())), min_size=1, max_size=2),
    )


@st.composite
def wrong_types(draw: st.DrawFn) -> tuple[str, str, Any]:
    section = draw(st.sampled_from(sorted(SECTIONS)))
    key = draw(st.sampled_from(sorted(FIELDS[section])))
    return section, key, draw(wrong_values(FIELDS[section][key]))


@PROPS
@given(case=wrong_types())
@example(case=("secured", "allowed_uids", [True]))
@example(case=("secured", "allowed_uids", True))
def test_wrong_type_is_refused_naming_the_key(cfg_file: Path, case: tuple[str, str, Any]) -> None:
    section, key, value = case
    if key not in FIELDS[section]:
        return  # an @example for a setting this version does not have
    doc = {section: {key: value}} if section else {key: value}
    outcome = load_bytes(cfg_file, render(doc).encode())
    assert isinstance(outcome, ConfigError), f"{section}.{key} = {value!r} accepted"
    text = assert_one_line(outcome)
    assert (f"{section}.{key}" if section else key) in text, text


NUMBERS = st.one_of(st.integers(), st.sampled_from(HUGE_INTS), st.integers(-3, 3),
                    st.floats(allow_nan=True, allow_infinity=True))


@PROPS
@given(where=st.sampled_from(sorted(INT_RANGES) + POSITIVE_SECONDS + [("appd", "drain_timeout")]), value=NUMBERS)
@example(where=("secured", "handshake_timeout"), value=10**400)
@example(where=("appd", "idle_timeout"), value=-(10**400))
@example(where=("appd", "drain_timeout"), value=float("nan"))
def test_numbers_out_of_range_are_refused(cfg_file: Path, where: tuple[str, str], value: int | float) -> None:
    section, key = where
    if key not in FIELDS[section]:
        return
    is_int = FIELDS[section][key] == "int"
    if is_int and isinstance(value, float):
        value = int(value) if math.isfinite(value) else 10**400
    outcome = load_bytes(cfg_file, render({section: {key: value}}).encode())
    if where in INT_RANGES:
        lo, hi = INT_RANGES[where]
        ok = lo <= value and (hi is None or value <= hi)
    elif isinstance(value, int) and abs(value) > 2**1000:
        ok = False  # no float holds it
    elif key == "drain_timeout":
        ok = math.isfinite(value) and value >= 0
    else:
        ok = math.isfinite(value) and value > 0
    if ok:
        assert isinstance(outcome, config.Settings), outcome
    else:
        assert isinstance(outcome, ConfigError), f"{section}.{key} = {value!r} accepted"
        assert f"{section}.{key}" in assert_one_line(outcome)


@PROPS
@given(data=st.one_of(st.binary(max_size=300), st.text(max_size=300).map(str.encode)))
@example(data=b"x = " + b"[" * 5000 + b"]" * 5000)
@example(data=b"x = " + b"{a = " * 2000 + b"1" + b"}" * 2000)
@example(data=b"x = " + b"9" * 5000)
@example(data=b"[appd]\nidle_timeout = " + b"9" * 400)
@example(data=b"\xff\xfe")
@example(data=b'[secured]\n"a\\nb" = 1\n')
@example(data=b'"\\u0000" = 1\n')
def test_raw_file_contents(cfg_file: Path, data: bytes) -> None:
    outcome = load_bytes(cfg_file, data)
    if isinstance(outcome, ConfigError):
        assert_one_line(outcome)
    else:
        assert_valid(outcome)


@PROPS
@given(text=st.text(max_size=40))
@example(text="[::1]:" + "9" * 5000)
@example(text="host:٣")
@example(text="\x1e\x00ho\x00\ufffd\x00hT\ufffdt\t:TT-o\ufffdt\t:-00")
@example(text="a\u2028b:c:80")
def test_parse_address_any_string(text: str) -> None:
    try:
        host, port = config.parse_address(text, "appd.listen")
    except ConfigError as exc:
        assert "appd.listen" in assert_one_line(exc)
        return
    assert isinstance(host, str) and host
    assert 0 <= port <= 65535


@PROPS
@given(
    host=st.one_of(st.from_regex(r"[a-z0-9]([a-z0-9.-]{0,20}[a-z0-9])?", fullmatch=True),
                   st.ip_addresses(v=4).map(str), st.ip_addresses(v=6).map(lambda a: f"[{a}]")),
    port=st.integers(0, 65535),
)
def test_parse_address_round_trip(host: str, port: int) -> None:
    assert config.parse_address(f"{host}:{port}") == (host.strip("[]"), port)


@PROPS
@given(addr=st.text(max_size=30))
def test_bad_listen_addresses_name_appd_listen(cfg_file: Path, addr: str) -> None:
    outcome = load_bytes(cfg_file, render({"appd": {"listen": [addr]}}).encode())
    try:
        config.parse_address(addr)
    except ConfigError:
        assert isinstance(outcome, ConfigError)
        assert "appd.listen" in assert_one_line(outcome)
    else:
        assert isinstance(outcome, config.Settings)


# Text that must come back escaped: line and paragraph breaks, C0 and C1 controls, DEL, format characters.
UNPRINTABLE = st.text(st.characters(codec="utf-8", categories=["Cc", "Cf", "Zl", "Zp", "Zs"]), min_size=1, max_size=4)
HOSTILE_TEXT = st.one_of(st.text(max_size=30), st.tuples(st.text(max_size=10), UNPRINTABLE, st.text(max_size=10))
                         .map("".join))
# Every place a configuration file's text comes back in a message: (section, key, how the text is placed).
ECHOED = [
    ("secured", "cipher_suites", lambda t: [t]),
    ("secured", "groups", lambda t: [t]),
    ("secured", "alpn", lambda t: [t, "x" * 256]),
    ("appd", "listen", lambda t: [t]),
    ("appd", "listen", lambda t: [f"{t}:{t}:80"]),  # the unbracketed-IPv6 suggestion
    ("appd", "listen", lambda t: [f"h:{t}"]),
]


@PROPS
@given(case=st.sampled_from(range(len(ECHOED))), text=HOSTILE_TEXT)
@example(case=4, text="\x1e\x00")
@example(case=0, text="\n")
def test_every_echoed_input_stays_one_printable_line(cfg_file: Path, case: int, text: str) -> None:
    section, key, place = ECHOED[case]
    outcome = load_bytes(cfg_file, render({section: {key: place(text)}}).encode())
    if isinstance(outcome, ConfigError):
        assert f"{section}.{key}" in assert_one_line(outcome)


@PROPS
@given(key=HOSTILE_TEXT.filter(lambda k: k not in FIELDS["appd"]))
def test_unknown_keys_stay_one_printable_line(cfg_file: Path, key: str) -> None:
    outcome = load_bytes(cfg_file, render({"appd": {key: 1}}).encode())
    assert isinstance(outcome, ConfigError)
    assert "unknown setting appd." in assert_one_line(outcome)


@PROPS
@given(text=st.text(max_size=20))
@example(text="\x1e\u2028\r\n")
def test_shown_is_one_printable_line(text: str) -> None:
    for quote in (True, False):
        out = config.shown(text, quote=quote)
        assert out.isprintable() and len(out.splitlines()) == 1
        assert out == text or eval(out) == text  # repr-style: it reads back as the text


@pytest.mark.parametrize("make", ["missing", "missing_with_line_break", "directory", "nul", "not_utf8", "empty"])
def test_bad_paths(tmp_path: Path, make: str) -> None:
    path = {
        "missing": tmp_path / "nope.toml",
        "missing_with_line_break": tmp_path / "no\npe\x1b[2J.toml",
        "directory": tmp_path,
        "nul": Path(str(tmp_path / "a") + "\x00b.toml"),
        "not_utf8": tmp_path / "latin1.toml",
        "empty": tmp_path / "empty.toml",
    }[make]
    if make == "not_utf8":
        path.write_bytes("log_level = 'd\xe9bug'\n".encode("latin-1"))
    if make == "empty":
        path.write_bytes(b"")
        assert config.load(path) == config.Settings()
        return
    with pytest.raises(ConfigError) as ei:
        config.load(path)
    assert_one_line(ei.value)


@pytest.mark.parametrize(("secured", "error"), [
    ({"post_quantum": "always"}, "secured.post_quantum must be one of prefer, require, off"),
    ({"post_quantum": "require", "groups": ["x25519", "P-256"]}, "needs a hybrid in secured.groups"),
    ({"post_quantum": "off", "groups": ["X25519MLKEM768"]}, "lists only hybrids"),
    ({"post_quantum": "require", "allow_psk_ke": True}, "excludes secured.allow_psk_ke"),
    ({"groups": ["X25519Kyber768Draft00"]}, "known: x25519, secp256r1, X25519MLKEM768, SecP256r1MLKEM768"),
    ({"post_quantum": "require", "groups": ["x25519mlkem768"]}, None),  # TLS 1.2 is then not served
    ({"post_quantum": "require", "versions": ["1.2"]}, "cannot be served: post_quantum = \"require\""),
    ({"post_quantum": "require", "groups": ["x25519mlkem768"], "versions": ["1.3"]}, None),
    ({"versions": ["1.2"], "groups": ["x25519mlkem768"]}, "cannot be served: secured.groups lists only hybrids"),
    ({"groups": ["x25519mlkem768"]}, None),  # TLS 1.3 only then, as before TLS 1.2 existed (and logged)
    ({"versions": ["1.1"]}, "unknown version '1.1'"),
    ({"versions": []}, "secured.versions must list"),
    ({"tls12_cipher_suites": ["AES128-SHA"]}, "unknown suite 'AES128-SHA'"),
    ({"tls12_cipher_suites": ["TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"], "versions": ["1.2"]}, None),
    ({"post_quantum": "off"}, None),
    ({"groups": ["SECP256R1MLKEM768", "x25519"]}, None),
])
def test_post_quantum_settings(secured: dict[str, Any], error: str | None) -> None:
    if error is None:
        assert config.from_dict({"secured": secured}).secured.post_quantum == secured.get("post_quantum", "prefer")
        return
    with pytest.raises(ConfigError, match=error):
        config.from_dict({"secured": secured})


def test_the_defaults_offer_the_hybrids_first() -> None:
    s = config.Settings().secured
    assert s.post_quantum == "prefer"
    assert [config.GROUP_NAMES[g.lower()] for g in s.groups] == [0x11EC, 0x11EB, 0x001D, 0x0017]
