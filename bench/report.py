"""The one table ``make bench`` prints: our figures beside the references, ratios, targets.

Rows are built from the raw results dict (the same one written as JSON), so a results file can be
re-rendered later: ``python -m bench.report bench/results/FILE.json``.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from typing import Any


@dataclass
class Row:
    label: str
    ours: float | None
    openssl: float | None = None
    trio: float | None = None
    floor: float | None = None
    target: str = ""
    passed: bool | None = None
    digits: int = 0


def _get(d: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(d, dict) or key not in d:
            return None
        d = d[key]
    return d


def _num(value: float | None, digits: int) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:,.{digits}f}"


def _ratio(a: float | None, b: float | None) -> str:
    return "—" if a is None or b is None or b == 0 else f"{a / b:.2f}x"


def rows(r: dict[str, Any]) -> list[Row]:
    out: list[Row] = []
    hs = r.get("handshake", {})
    for kind, name in (("ecdsa", "ECDSA P-256"), ("rsa2048", "RSA-2048")):
        ours_cpu = _get(hs, kind, "ours", "cpu_us")
        osl_cpu = _get(hs, kind, "openssl", "cpu_us")
        row = Row(f"CPU per full handshake, {name} (µs)", ours_cpu, osl_cpu, _get(hs, kind, "trio_ssl", "cpu_us"),
                  _get(hs, kind, "floor_us"))
        if kind == "ecdsa":
            row.target = "≤ 1.0x openssl"
            row.passed = None if ours_cpu is None or osl_cpu is None else ours_cpu <= osl_cpu
        out.append(row)
    res = r.get("resumed", {})
    out.append(Row("CPU per resumed handshake (µs)", _get(res, "ours", "cpu_us"), _get(res, "openssl", "cpu_us"),
                   _get(res, "trio_ssl", "cpu_us"), _get(res, "floor_us")))
    for kind, name in (("ecdsa", "ECDSA"), ("rsa2048", "RSA")):
        out.append(Row(f"full handshakes/s, {name}", _get(hs, kind, "ours", "per_s"),
                       _get(hs, kind, "openssl", "per_s"), _get(hs, kind, "trio_ssl", "per_s")))
    out.append(Row("resumed handshakes/s", _get(res, "ours", "per_s"), _get(res, "openssl", "per_s"),
                   _get(res, "trio_ssl", "per_s")))
    for kind, name in (("ecdsa", "ECDSA"), ("rsa2048", "RSA")):
        out.append(Row(f"handshake engine alone, in memory, {name} (µs)", _get(hs, kind, "engine_us"),
                       floor=_get(hs, kind, "floor_us")))
    bulk = r.get("bulk", {})
    for way, name in (("up", "upload"), ("down", "download")):
        out.append(Row(f"bulk {name} through tcp:// proxy (MB/s)", _get(bulk, way, "ours", "mb_per_s"), None,
                       _get(bulk, way, "trio_ssl", "mb_per_s"), digits=0))
        ours_eff, trio_eff = _get(bulk, way, "ours", "mb_per_cpu_s"), _get(bulk, way, "trio_ssl", "mb_per_cpu_s")
        ok = None if ours_eff is None or trio_eff is None else ours_eff >= 400 and ours_eff >= 2 * trio_eff
        out.append(Row(f"bulk {name}, MB per server CPU-second", ours_eff, None, trio_eff,
                       target="≥ 400 and ≥ 2x trio+ssl", passed=ok))
    ho = r.get("handoff", {})
    share = ho.get("share_of_full_handshake")
    is_now = "" if share is None else f" (is {share * 100:.0f} %)"
    out.append(Row("handoff per connection: channel + seal + import (µs)", ho.get("total_us"),
                   target=f"≤ 10 % of full ECDSA handshake{is_now}", passed=None if share is None else share <= 0.10))
    mem = r.get("memory", {})
    for stage in _get(mem, "echo", "stages") or []:
        n = stage["connections"]
        row = Row(f"appd memory per idle connection at {n:,}, echo (KiB)", stage.get("kib_per_connection"), digits=1)
        if n >= 10000:
            row.target, row.passed = "≤ 32 KiB at 10,000", stage.get("kib_per_connection", math.inf) <= 32
        out.append(row)
    for stage in _get(mem, "proxy", "stages") or []:
        out.append(Row(f"appd memory per idle connection at {stage['connections']:,}, tcp:// proxy (KiB)",
                       stage.get("kib_per_connection"), digits=1))
    lat = r.get("latency", {})
    for q in ("p50", "p99"):
        out.append(Row(f"full ECDSA handshake latency {q} at half peak rate (ms)", _get(lat, "ours", f"{q}_ms"),
                       _get(lat, "openssl", f"{q}_ms"), _get(lat, "trio_ssl", f"{q}_ms"), digits=2))
    return out


def table(r: dict[str, Any]) -> str:
    head = ["figure", "ours", "openssl s_server", "trio+ssl", "crypto floor", "ours/openssl", "ours/trio+ssl",
            "ours - floor", "target", "pass"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * 7 + ["---", ":-:"]) + "|"]
    for row in rows(r):
        over = None if row.ours is None or row.floor is None else row.ours - row.floor
        cells = [row.label, _num(row.ours, row.digits), _num(row.openssl, row.digits), _num(row.trio, row.digits),
                 _num(row.floor, row.digits), _ratio(row.ours, row.openssl), _ratio(row.ours, row.trio),
                 _num(over, row.digits), row.target, {True: "pass", False: "FAIL", None: ""}[row.passed]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def notes(r: dict[str, Any]) -> list[str]:
    """Facts a reader needs beside the table: which side was the bottleneck, anything that failed."""
    out = []
    sections = (("full ECDSA", ("handshake", "ecdsa")), ("full RSA", ("handshake", "rsa2048")),
                ("resumed", ("resumed",)), ("bulk upload", ("bulk", "up")), ("bulk download", ("bulk", "down")))
    for section, path in sections:
        for name in ("ours", "openssl", "trio_ssl"):
            m = _get(r, *path, name)
            if isinstance(m, dict) and "server_busy" in m:
                out.append(f"{section}, {name}: server core {m['server_busy'] * 100:.0f} % busy "
                           f"(+{m.get('server_core_others', 0) * 100:.0f} % others), "
                           f"client core {m['client_busy'] * 100:.0f} % busy "
                           f"(+{m.get('client_core_others', 0) * 100:.0f} % others)")
    for name in ("ours", "openssl", "trio_ssl"):
        m = _get(r, "latency", name)
        if isinstance(m, dict) and "cpu" in m:
            out.append(f"latency, {name}: {m['rate']:.0f} arrivals/s offered, {m['achieved_rate']:.0f}/s completed, "
                       f"client core {m['cpu'] / m['wall'] * 100:.0f} % busy, {m['errors']} errors")
    out.extend(f"error in {phase}: {msg}" for phase, msg in r.get("errors", {}).items())
    return out


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        data = json.load(f)
    print(table(data))
    print("\n".join(notes(data)))
