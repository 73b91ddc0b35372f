"""The tables ``make bench`` prints: our figures beside the references, ratios, targets.

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
    t12 = r.get("tls12", {})
    for mode, name in (("full", "full handshake, ECDSA P-256"), ("resume", "resumed handshake")):
        out.append(Row(f"TLS 1.2: CPU per {name} (µs)", _get(t12, mode, "ours", "cpu_us"),
                       _get(t12, mode, "openssl", "cpu_us"), _get(t12, mode, "trio_ssl", "cpu_us")))
        out.append(Row(f"TLS 1.2: {name.split(',')[0]}s/s", _get(t12, mode, "ours", "per_s"),
                       _get(t12, mode, "openssl", "per_s"), _get(t12, mode, "trio_ssl", "per_s")))
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


# The connection-cost table: each load's figure, the reference its target names, and the target's ratio.
CONN_REFS = (("openssl", "openssl s_server"), ("trio_ssl", "trio+ssl"), ("nginx", "nginx stream"),
             ("hitch", "hitch"))
PROXIED_TARGET = 1.0  # CPU per proxied connection ≤ 1.0x the trio+ssl proxy
SERIAL_TARGET = 1.5  # CPU per full handshake, one client at a time, ≤ 1.5x openssl s_server
SATURATED_TARGET = 1.3  # the same with many clients (the handshake phase), ≤ 1.3x openssl s_server


@dataclass
class ConnRow:
    label: str
    values: dict[str, float | None]  # ours and every reference; None: not measured
    missing: dict[str, str]  # reference -> why it is missing
    digits: int = 0
    target: str = ""
    passed: bool | None = None


def has_connection_cost(r: dict[str, Any]) -> bool:
    return any(key in r for key in ("proxied", "serial")) or _get(r, "handshake", "ecdsa", "ours") is not None


def connection_rows(r: dict[str, Any]) -> list[ConnRow]:
    """The three loads of a connection's cost: proxied connections with many clients (against trio+ssl, nginx and
    hitch), full handshakes one client at a time, and full handshakes with many clients (against s_server)."""
    out: list[ConnRow] = []
    names = ("ours", *(name for name, _ in CONN_REFS))

    def row(path: tuple[str, ...], key: str, label: str, missing: dict[str, str], against: str | None = None,
            limit: float = 0.0) -> ConnRow:
        values = {name: _get(r, *path, name, key) for name in names}
        got = ConnRow(label, values, missing)
        if against is not None:
            got.target = f"≤ {limit:.1f}x {dict(CONN_REFS)[against]}"
            ours, ref = values["ours"], values[against]
            got.passed = None if ours is None or ref is None else ours <= limit * ref
        return got

    missing = _get(r, "proxied", "missing") or {}
    clients = _get(r, "proxied", "clients") or _get(r, "plan", "clients") or "?"
    if "proxied" in r:
        out.append(row(("proxied",), "cpu_us", f"proxied connection, {clients} clients: CPU per connection (µs)",
                       missing, "trio_ssl", PROXIED_TARGET))
        out.append(row(("proxied",), "core_us", f"proxied connection, {clients} clients: whole server core per "
                       "connection (µs)", missing))
        out.append(row(("proxied",), "per_s", f"proxied connection, {clients} clients: connections/s", missing))
    if "serial" in r:
        out.append(row(("serial",), "cpu_us", "one client at a time: CPU per full handshake (µs)", {}, "openssl",
                       SERIAL_TARGET))
        out.append(row(("serial",), "core_us", "one client at a time: whole server core per handshake (µs)", {}))
        out.append(row(("serial",), "per_s", "one client at a time: full handshakes/s", {}))
    if _get(r, "handshake", "ecdsa", "ours") is not None:
        many = _get(r, "plan", "clients") or "?"
        out.append(row(("handshake", "ecdsa"), "cpu_us", f"{many} clients (saturated): CPU per full handshake (µs)",
                       {}, "openssl", SATURATED_TARGET))
        out.append(row(("handshake", "ecdsa"), "core_us",
                       f"{many} clients (saturated): whole server core per handshake (µs)", {}))
        out.append(row(("handshake", "ecdsa"), "per_s", f"{many} clients (saturated): full handshakes/s", {}))
    return out


def connection_table(r: dict[str, Any]) -> str:
    """ECDSA P-256, TLS 1.3, X25519, no tickets throughout; ``missing`` for a reference that could not run (the
    notes say why), ``—`` for one the load does not apply to."""
    head = ["figure", "ours", *(label for _, label in CONN_REFS), *(f"ours/{label}" for _, label in CONN_REFS),
            "target", "pass"]
    align = ["---", *["---:"] * (1 + 2 * len(CONN_REFS)), "---", ":-:"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(align) + "|"]
    for row in connection_rows(r):
        ours = row.values["ours"]
        cells = [row.label, _num(ours, row.digits)]
        cells += ["missing" if name in row.missing else _num(row.values[name], row.digits) for name, _ in CONN_REFS]
        cells += [_ratio(ours, row.values[name]) for name, _ in CONN_REFS]
        cells += [row.target, {True: "pass", False: "FAIL", None: ""}[row.passed]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


PQ_TARGET = 1.15  # the hybrid may cost the server at most 15 % more CPU per full handshake than X25519


def pq_table(r: dict[str, Any]) -> str:
    """The post-quantum phase: CPU per full ECDSA handshake with X25519 and with X25519MLKEM768, the same
    client (pyOpenSSL, offering both shares) against our pair and against a pyOpenSSL server. The ratio is
    the median of the per-round ratios (the two measured back to back), not the ratio of the medians."""
    pq = r.get("pq", {})
    head = ["figure", "x25519", "X25519MLKEM768", "hybrid / x25519", "target", "pass"]
    lines = ["| " + " | ".join(head) + " |", "|---|---:|---:|---:|---|:-:|"]
    for impl, label in (("ours", "ours"), ("pyopenssl", "pyOpenSSL server (reference)")):
        a, b = _get(pq, f"{impl}_x25519", "cpu_us"), _get(pq, f"{impl}_x25519mlkem768", "cpu_us")
        ratio = _get(pq, "cpu_ratio", impl)
        ok = None if impl != "ours" or ratio is None else ratio <= PQ_TARGET
        lines.append("| " + " | ".join([f"CPU per full handshake, {label} (µs)", _num(a, 0), _num(b, 0),
                                        "—" if ratio is None else f"{ratio:.2f}x",
                                        f"≤ {PQ_TARGET:.2f}x" if impl == "ours" else "",
                                        {True: "pass", False: "FAIL", None: ""}[ok]]) + " |")
    for impl, label in (("ours", "ours"), ("pyopenssl", "pyOpenSSL server")):
        a, b = _get(pq, f"{impl}_x25519", "per_s"), _get(pq, f"{impl}_x25519mlkem768", "per_s")
        lines.append("| " + " | ".join([f"full handshakes/s, {label}", _num(a, 0), _num(b, 0), _ratio(b, a), "", ""])
                     + " |")
    engine = pq.get("engine_us", {})
    a, b = engine.get("x25519"), engine.get("X25519MLKEM768")
    lines.append("| " + " | ".join(["handshake engine alone, in memory (µs)", _num(a, 0), _num(b, 0), _ratio(b, a),
                                    "", ""]) + " |")
    return "\n".join(lines)


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


WORKER_LAYOUTS = ("w1", "w1_both", "w2")
RAW_TARGET, COST_TARGET = 1.8, 0.9  # two cores give >= 1.8x one; 0.9 x 2 cores = 1.8x
FREE = 0.95  # a core counts as free when the servers could have this much of it


def _layout(layout: dict[str, Any] | None) -> str:
    """``--workers 2, servers on cores 0+1, load on cores 0+1``: a column heading of the workers table."""
    if not layout:
        return "?"

    def cores(which: str) -> str:
        return ("core " if len(layout[which]) == 1 else "cores ") + "+".join(map(str, layout[which]))

    return f"--workers {layout['workers']}, servers on {cores('server_cores')}, load on {cores('load_cores')}"


def _shares(counts: dict[str, int] | None, workers: int) -> str:
    """``51 / 49 %``: each worker's share, worker 0 first; a worker that got nothing shows as 0."""
    if counts is None:
        return "—"
    total = sum(counts.values())
    if total == 0:
        return "—"
    return " / ".join(f"{counts.get(str(w), 0) / total * 100:.0f}" for w in range(workers)) + " %"


@dataclass
class WorkersRow:
    label: str
    cells: list[str]
    ratio: str = ""
    target: str = ""
    passed: str = ""


def workers_rows(r: dict[str, Any]) -> list[WorkersRow]:
    """The workers phase: one column per layout, then workers 2 / workers 1 (both in their own layout)."""
    w = r.get("workers", {})
    lay = w.get("layouts", {})
    out: list[WorkersRow] = []

    def figures(what: str, key: str, label: str, digits: int) -> WorkersRow:
        values = [_get(w, what, name, key) for name in WORKER_LAYOUTS]
        return WorkersRow(label, [_num(v, digits) for v in values], _ratio(values[2], values[0]))

    def shares(what: str, key: str, label: str) -> WorkersRow:
        cells = [_shares(_get(w, what, name, "per_worker", key), (lay.get(name) or {}).get("workers", 1))
                 for name in WORKER_LAYOUTS]
        return WorkersRow(label, cells)

    n_bulk = w.get("bulk_connections", "?")
    sections = (("handshake", "handshakes", "per_s", "full ECDSA handshakes/s", "per_cpu_s",
                 "full handshakes per server CPU-second", f"{_get(r, 'plan', 'clients') or '?'} clients"),
                ("bulk", "bulk", "mb_per_s", f"bulk download, {n_bulk} connections (MB/s)", "mb_per_cpu_s",
                 "bulk download, MB per server CPU-second", f"{n_bulk} clients + backend"))
    for what, short, rate, rate_label, per_cpu, cost_label, load in sections:
        if what not in w:
            continue
        raw, cost = figures(what, rate, rate_label, 0), figures(what, per_cpu, cost_label, 0)
        ceiling = _get(w, what, "w2", "available_cores"), _get(w, what, "w1", "available_cores")
        rates = _get(w, what, "w2", rate), _get(w, what, "w1", rate)
        if None not in rates and None not in ceiling and rates[1]:
            # Judged only when the windows really were two free cores against one; otherwise "n/a", and the
            # normalised row below is the one that says something.
            raw.target = f"≥ {RAW_TARGET}x, when the servers had 2 free cores against 1"
            fair = ceiling[0] >= 2 * FREE and ceiling[1] >= FREE
            raw.passed = "n/a" if not fair else "pass" if rates[0] / rates[1] >= RAW_TARGET else "FAIL"
        costs = _get(w, what, "w2", per_cpu), _get(w, what, "w1", per_cpu)
        if None not in costs and costs[1]:
            cost.target = f"≥ {COST_TARGET}x (normalised; {COST_TARGET}x on 2 cores = {RAW_TARGET}x)"
            cost.passed = "pass" if costs[0] / costs[1] >= COST_TARGET else "FAIL"
        out.append(raw)
        if what == "handshake":
            out.append(figures(what, "cpu_us", "server CPU per full handshake (µs)", 0))
        out.append(cost)
        out.append(figures(what, "server_cores", f"{short}: server cores used", 2))
        out.append(figures(what, "available_cores", f"{short}: server cores available (cores - load - others)", 2))
        out.append(figures(what, "load_cores", f"{short}: load generator cores ({load})", 2))
        out.append(figures(what, "others_cores", f"{short}: others' cores on the servers' cores", 2))
        if what == "handshake":
            out.append(shares(what, "appd_connections", f"{short}: appd workers' share of connections"))
            out.append(shares(what, "secured_handshakes", f"{short}: secured workers' share of handshakes"))
        else:
            out.append(shares(what, "appd_bytes_out", f"{short}: appd workers' share of bytes sent"))
            out.append(shares(what, "appd_connections", f"{short}: appd workers' share of connections"))
    return out


def workers_table(r: dict[str, Any]) -> str:
    lay = r.get("workers", {}).get("layouts", {})
    head = ["figure", *(_layout(lay.get(n)) for n in WORKER_LAYOUTS), "workers 2 / workers 1", "target", "pass"]
    align = ["---", "---:", "---:", "---:", "---:", "---", ":-:"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(align) + "|"]
    for row in workers_rows(r):
        lines.append("| " + " | ".join([row.label, *row.cells, row.ratio, row.target, row.passed]) + " |")
    return "\n".join(lines)


def workers_notes(r: dict[str, Any]) -> list[str]:
    """What the workers table can and cannot show on this machine, in its own numbers."""
    w = r.get("workers", {})
    out = []
    for what, name in (("handshake", "full handshakes"), ("bulk", "bulk download")):
        one, two = _get(w, what, "w1"), _get(w, what, "w2")
        if not isinstance(one, dict) or not isinstance(two, dict) or not one.get("available_cores"):
            continue
        ceiling = two["available_cores"] / one["available_cores"]
        out.append(f"workers, {name}: with 2 workers the load generator took {two['load_cores']:.2f} cores and "
                   f"others {two['others_cores']:.2f}, leaving the servers {two['available_cores']:.2f} cores against "
                   f"{one['available_cores']:.2f} for 1 worker on its own core (they used {two['server_cores']:.2f} "
                   f"and {one['server_cores']:.2f}): at equal work per CPU-second the raw ratio could be at most "
                   f"{ceiling:.2f}x here; 2x needs two free cores against one")
        errors = two.get("errors")
        if errors:
            out.append(f"workers, {name}: {errors:.0f} failed connections per window with 2 workers (median)")
        out.extend(_uneven(w, what, name))
    return out


def _uneven(w: dict[str, Any], what: str, name: str) -> list[str]:
    """A worker that had under half its fair share of its daemon's work with 2 workers; for secured, how many
    appd channels it took (each appd worker holds one channel, served by the secured worker that accepted it)."""
    counts = _get(w, what, "w2", "per_worker") or {}
    workers = _get(w, "layouts", "w2", "workers") or 2
    channels = counts.get("secured_channels") or {}
    out = []
    for key, daemon, unit in (("appd_connections", "appd", "connections"),
                              ("secured_handshakes", "secured", "handshakes")):
        got = counts.get(key) or {}
        total = sum(got.values())
        for worker in range(workers):
            mine = got.get(str(worker), 0)
            if total and mine < total / workers / 2:
                why = ""
                if daemon == "secured" and channels:
                    why = f" (it took {channels.get(str(worker), 0)} of the {sum(channels.values())} appd channels)"
                out.append(f"workers, {name}: {daemon} worker {worker} had {mine} of {total} {unit}{why}")
    return out


def notes(r: dict[str, Any]) -> list[str]:
    """Facts a reader needs beside the table: which side was the bottleneck, anything that failed."""
    out = []
    sections = (("full ECDSA", ("handshake", "ecdsa")), ("full RSA", ("handshake", "rsa2048")),
                ("one client at a time", ("serial",)), ("proxied", ("proxied",)),
                ("resumed", ("resumed",)), ("bulk upload", ("bulk", "up")), ("bulk download", ("bulk", "down")),
                ("TLS 1.2 full", ("tls12", "full")), ("TLS 1.2 resumed", ("tls12", "resume")))
    for section, path in sections:
        for name in ("ours", "openssl", "trio_ssl", "nginx", "hitch"):
            m = _get(r, *path, name)
            if isinstance(m, dict) and "server_busy" in m:
                out.append(f"{section}, {name}: server core {m['server_busy'] * 100:.0f} % busy "
                           f"(+{m.get('server_core_others', 0) * 100:.0f} % others), "
                           f"client core {m['client_busy'] * 100:.0f} % busy "
                           f"(+{m.get('client_core_others', 0) * 100:.0f} % others)"
                           + (f", of it the backend {m['backend_busy'] * 100:.0f} %" if "backend_busy" in m else "")
                           + (f"; {m['errors']:.0f} failed connections per window" if m.get("errors") else ""))
    for name, why in (_get(r, "proxied", "missing") or {}).items():
        out.append(f"proxied, {name}: missing, {' / '.join(why.splitlines())[:400]}")
    for name in ("ours", "openssl", "trio_ssl"):
        m = _get(r, "latency", name)
        if isinstance(m, dict) and "cpu" in m:
            out.append(f"latency, {name}: {m['rate']:.0f} arrivals/s offered, {m['achieved_rate']:.0f}/s completed, "
                       f"client core {m['cpu'] / m['wall'] * 100:.0f} % busy, {m['errors']} errors")
    out.extend(workers_notes(r))
    out.extend(f"error in {phase}: {msg}" for phase, msg in r.get("errors", {}).items())
    return out


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        data = json.load(f)
    print(table(data))
    if has_connection_cost(data):
        print()
        print(connection_table(data))
    if "pq" in data:
        print()
        print(pq_table(data))
    if "workers" in data:
        print()
        print(workers_table(data))
    print()
    print("\n".join(f"- {note}" for note in notes(data)))
