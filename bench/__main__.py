"""``make bench``: our pair against ``openssl s_server`` and a trio+ssl server, measured in one run.

Servers run on one core, load generators on another, every figure is set beside the references
measured minutes apart on the same machine: absolute numbers drift with whatever else the machine
does, ratios much less. The proxied phase adds nginx's stream proxy and hitch as references for a
whole proxied connection. The workers phase then sets our pair with ``--workers 2`` on two cores
beside itself with ``--workers 1`` on one. See docs/performance.md for what each figure means.

    python -m bench [--quick] [--keep]
        [--only handshake,serial,proxied,resumed,bulk,workers,handoff,memory,latency,pq,tls12]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import functools
import json
import os
import platform
import re
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import pki, proc, report, servers
from bench.servers import ROOT, Server, Workdir

ALL = ("ours", "openssl", "trio_ssl")
PHASES = ("handshake", "serial", "proxied", "resumed", "bulk", "workers", "handoff", "memory", "latency", "pq",
          "tls12")
# The proxied phase's servers: ours and trio+ssl must start, nginx and hitch are reported missing when they cannot.
PROXIED = ("ours", "trio_ssl", "nginx", "hitch")
OPTIONAL = ("nginx", "hitch")
# The post-quantum phase: (server, group) pairs, each group the only one that server offers.
PQ_SERVERS = (("ours", "x25519"), ("ours", "X25519MLKEM768"), ("pyopenssl", "X25519"),
              ("pyopenssl", "X25519MLKEM768"))
RESULTS = ROOT / "bench" / "results"
BULK_STREAMS = 8  # the workers phase's downloads: with 8, SO_REUSEPORT leaves a worker idle once in 128 windows


@dataclass
class Plan:
    """How long and how hard: the quick mode is for development, the full one for the record."""

    seconds: int
    rounds: int
    clients: int
    connections: tuple[int, ...]
    micro_n: int
    loadgen: str

    @classmethod
    def from_env(cls, quick: bool) -> Plan:
        env = os.environ.get
        conns = env("BENCH_CONNECTIONS") or ("500,1000" if quick else "1000,10000")
        return cls(seconds=int(env("BENCH_SECONDS") or (1 if quick else 3)),
                   rounds=int(env("BENCH_ROUNDS") or (2 if quick else 3)),
                   clients=int(env("BENCH_CLIENTS") or 8),
                   connections=tuple(int(n) for n in conns.split(",")),
                   micro_n=int(env("BENCH_MICRO_N") or (200 if quick else 1000)),
                   loadgen=env("BENCH_LOADGEN") or "python")


def flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "no", "false")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- set-up ---------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    import cryptography
    import trio
    from cryptography.hazmat.backends.openssl.backend import backend as ossl_backend

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "?")
    return {
        "nproc": os.cpu_count(), "cpu": cpu, "kernel": platform.release(),
        "openssl": subprocess.run(["openssl", "version"], capture_output=True, text=True).stdout.strip(),
        "python": platform.python_version(), "python_ssl": ssl.OPENSSL_VERSION,
        "cryptography": cryptography.__version__, "cryptography_openssl": ossl_backend.openssl_version_text(),
        "trio": trio.__version__, "loadavg_start": os.getloadavg(), "root": os.geteuid() == 0,
    }


# -- load generators ------------------------------------------------------------------------------


def _client(work: Workdir, module: str, *args: str, cores: frozenset[int] | None = None,
            env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", module, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, preexec_fn=proc.pinned(work.client_core if cores is None else cores),
                            env={**os.environ, **work.env, **(env or {})}, cwd=ROOT)


def _read_json(p: subprocess.Popen[str]) -> dict[str, Any]:
    assert p.stdout is not None
    line = p.stdout.readline()
    if not line:
        p.wait()
        raise RuntimeError(f"load client exited with {p.returncode} before reporting")
    return json.loads(line)  # type: ignore[no-any-return]


def lockstep(server: Server, clients: list[subprocess.Popen[str]]) -> dict[str, Any]:
    """Start every client's measured window at once; server CPU is read around the whole window."""
    try:
        for p in clients:
            assert p.stdout is not None
            if p.stdout.readline().strip() != "ready":
                p.wait()
                raise RuntimeError(f"load client failed to warm up (exit {p.returncode})")
        cores0, cpu0, t0 = proc.core_times(), server.cpu(), time.monotonic()
        for p in clients:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        results = [_read_json(p) for p in clients]
        wall, cpu, cores1 = time.monotonic() - t0, server.cpu() - cpu0, proc.core_times()
    except BaseException:
        for p in clients:
            p.kill()
            p.wait()
        raise
    for p in clients:
        p.wait()
    return {"results": results, "wall": wall, "server_cpu": cpu, "cores": (cores0, cores1)}


def s_time(work: Workdir, server: Server, n_procs: int, seconds: int) -> dict[str, Any]:
    """``openssl s_time -new`` in ``n_procs`` processes; each runs one connection at a time."""
    argv = ["openssl", "s_time", "-connect", f"127.0.0.1:{server.port}", "-new", "-tls1_3",
            "-ciphersuites", servers.SUITE, "-time", str(seconds)]
    cores0, cpu0, t0 = proc.core_times(), server.cpu(), time.monotonic()
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              preexec_fn=proc.pinned(work.client_core)) for _ in range(n_procs)]
    client_cpu, total = 0.0, 0
    for p in procs:
        _, status, usage = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        client_cpu += usage.ru_utime + usage.ru_stime
        assert p.stdout is not None
        text = p.stdout.read()
        found = re.search(r"(\d+) connections in [\d.]+s;", text)
        if p.returncode != 0 or found is None:
            raise RuntimeError(f"s_time failed (exit {p.returncode}): {text[-500:]}")
        total += int(found.group(1))
    wall, cpu, cores1 = time.monotonic() - t0, server.cpu() - cpu0, proc.core_times()
    return {"n": total, "wall": wall, "server_cpu": cpu, "client_cpu": client_cpu, "cores": (cores0, cores1)}


def handshakes(work: Workdir, server: Server, plan: Plan, mode: str, client: str = "ssl",
               tls12: bool = False) -> dict[str, Any]:
    """Closed-loop handshake load; CPU per handshake, handshakes/s, and which core was busy. ``client``
    ``pyopenssl``: full handshakes from a client that offers the hybrid (hsclient.py); ``tls12``: TLS 1.2."""
    if mode == "full" and plan.loadgen == "s_time" and client == "ssl" and not tls12:
        m = s_time(work, server, plan.clients, plan.seconds)
        n, reused, client_cpu = m["n"], 0, m["client_cpu"]
    else:
        version = ["--tls12"] if tls12 else []
        env = {"OPENSSL_CONF": str(work.path / "openssl-tls12.cnf")} if tls12 else None
        clients = [_client(work, "bench.hsclient", "--port", str(server.port), "--mode", mode,
                           "--seconds", str(plan.seconds), "--client", client, *version, env=env)
                   for _ in range(plan.clients)]
        m = lockstep(server, clients)
        n = sum(r["n"] for r in m["results"])
        reused = sum(r["reused"] for r in m["results"])
        client_cpu = sum(r["cpu"] for r in m["results"])
        if mode == "resume" and reused < 0.9 * n:
            raise RuntimeError(f"{server.name}: only {reused} of {n} handshakes resumed")
    if n == 0:
        raise RuntimeError(f"{server.name}: no handshake completed")
    cores = busy(work, m, client_cpu)
    return {"n": float(n), "reused": float(reused), "per_s": n / m["wall"], "cpu_us": m["server_cpu"] / n * 1e6,
            "core_us": cores["server_core_busy"] * m["wall"] / n * 1e6, **cores,
            "loadgen": plan.loadgen if mode == "full" and client == "ssl" else f"python ({client})"}


def busy(work: Workdir, m: dict[str, Any], client_cpu: float) -> dict[str, float]:
    """How busy each core was over a window, and how much of it went to processes not in the bench.
    ``server_core_busy``: the server core's whole use, by any process or interrupt."""
    before, after = m["cores"]
    server_core = proc.core_busy(before, after, work.server_core)
    client_core = proc.core_busy(before, after, work.client_core)
    return {"wall": m["wall"], "server_busy": m["server_cpu"] / m["wall"], "client_busy": client_cpu / m["wall"],
            "server_core_busy": server_core,
            "server_core_others": max(0.0, server_core - m["server_cpu"] / m["wall"]),
            "client_core_others": max(0.0, client_core - client_cpu / m["wall"])}


def check(server: Server, tls12: bool = False) -> dict[str, Any]:
    """One handshake from this process (no OPENSSL_CONF): the server alone must pick the suite."""
    from bench import hsclient

    got = hsclient.check(server.port, tls12)
    want = ({"version": "TLSv1.2", "cipher": servers.SUITE12} if tls12
            else {"version": "TLSv1.3", "cipher": servers.SUITE})
    if got != want:
        raise RuntimeError(f"{server.name} negotiated {got}")
    return got


def settle(server: Server, limit: float = 15.0) -> None:
    """Wait until the server tree is idle (under 2 % of a core over 0.5 s): handshakes all finished."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        before = server.cpu()
        time.sleep(0.5)
        if server.cpu() - before <= 0.01:
            return


# -- phases ---------------------------------------------------------------------------------------


def start(work: Workdir, name: str, kind: str, *, tickets: int, backend: str = "echo",
          max_connections: int = 10000, workers: int = 1, cores: frozenset[int] | None = None,
          tls12: bool = False) -> Server:
    if name == "ours":
        server = servers.ours(work, kind, tickets=tickets, backend=backend, max_connections=max_connections,
                              workers=workers, cores=cores)
    elif name == "openssl":
        server = servers.openssl(work, kind, tickets=tickets, tls12=tls12)
    else:
        server = servers.trio_ssl(work, kind, tickets=tickets, backend=backend)
    try:
        if backend == "echo":
            check(server, tls12)
    except BaseException:
        server.stop()
        raise
    return server


@contextlib.contextmanager
def started(work: Workdir, names: tuple[str, ...], kind: str, **kw: Any) -> Iterator[dict[str, Server]]:
    """Several servers up at once on the server core; only the one under load uses it."""
    with contextlib.ExitStack() as stack:
        yield {name: stack.enter_context(start(work, name, kind, **kw)) for name in names}


def interleaved(plan: Plan, group: dict[str, Server], measure: Callable[[Server], dict[str, Any]],
                what: str) -> dict[str, dict[str, Any]]:
    """``plan.rounds`` short windows per server, taking turns, so a change in the machine's background
    load lands on every server alike; each figure is the median of its rounds (all rounds kept)."""
    rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in group}
    names = list(group)
    for i in range(plan.rounds):
        for name in names[i % len(names):] + names[: i % len(names)]:
            log(f"{what}, {name}, round {i + 1}/{plan.rounds}")
            rounds[name].append(measure(group[name]))
    out = {}
    for name, got in rounds.items():
        summary = {key: statistics.median(r[key] for r in got) for key in got[0] if isinstance(got[0][key], float)}
        out[name] = {**summary, "rounds": got}
    return out


def phase_handshake(work: Workdir, plan: Plan, results: dict[str, Any], latency: bool) -> None:
    from bench import engine
    from bench.pki import in_memory

    hs = results.setdefault("handshake", {})
    for kind in ("ecdsa", "rsa2048"):
        entry = hs.setdefault(kind, {})
        entry["floor_us"] = engine.crypto_floor(kind, plan.micro_n) * 1e6
        config, ctx = in_memory().server_config(kind), in_memory().client_context()
        for _ in range(10):
            engine.one_handshake(config, ctx)
        n = max(50, plan.micro_n // 5)
        entry["engine_us"] = sum(engine.one_handshake(config, ctx) for _ in range(n)) / n * 1e6
        with started(work, ALL, kind, tickets=0) as group:
            entry.update(interleaved(plan, group, lambda srv: handshakes(work, srv, plan, "full"),
                                     f"full handshakes, {kind}"))
            if latency and kind == "ecdsa":
                for name, server in group.items():
                    log(f"latency at half peak, {name}")
                    rate = entry[name]["per_s"] / 2
                    p = _client(work, "bench.latency", "--port", str(server.port), "--rate", f"{rate:.1f}",
                                "--seconds", str(plan.seconds * plan.rounds))
                    results.setdefault("latency", {})[name] = _read_json(p)
                    p.wait()


def phase_serial(work: Workdir, plan: Plan, results: dict[str, Any]) -> None:
    """Full ECDSA handshakes from one closed-loop client: each server handles one connection at a time, so every
    wakeup's fixed cost falls on a single handshake (the saturated phase spreads it over several)."""
    one = dataclasses.replace(plan, clients=1)
    with started(work, ALL, "ecdsa", tickets=0) as group:
        results["serial"] = interleaved(one, group, lambda srv: handshakes(work, srv, one, "full"),
                                        "full handshakes, one client at a time")


def check_proxied(server: Server) -> None:
    """One proxied connection from this process (no OPENSSL_CONF): TLS 1.3, the suite, no ticket, the backend's
    byte back; then a client preferring P-256 (a key share for it first) must still get X25519."""
    from bench import hsclient

    got = hsclient.check_byte(server.port)
    want = {"version": "TLSv1.3", "cipher": servers.SUITE, "ticket": False}
    if got != want:
        raise RuntimeError(f"{server.name} negotiated {got}, not {want}")
    with warnings.catch_warnings():  # importing pyOpenSSL warns about DSA, which nothing here uses
        warnings.simplefilter("ignore")
        group = str(hsclient.pq_connect(server.port, b"*P-256:*X25519")["group"])
    if group.lower() != "x25519":
        raise RuntimeError(f"{server.name} chose the group {group} over X25519")


def start_proxied(work: Workdir, name: str, backend: str) -> Server:
    if name == "ours":
        server = servers.ours(work, "ecdsa", tickets=0, backend=backend)
    elif name == "trio_ssl":
        server = servers.trio_ssl(work, "ecdsa", tickets=0, backend=backend)
    elif name == "nginx":
        server = servers.nginx(work, "ecdsa", backend=backend)
    else:
        server = servers.hitch(work, "ecdsa", backend=backend)
    try:
        check_proxied(server)
    except BaseException:
        server.stop()
        raise
    return server


def proxied_window(work: Workdir, plan: Plan, server: Server, backend_pid: int) -> dict[str, Any]:
    """``plan.clients`` closed-loop clients, each connection a full handshake, one byte each way through the proxy
    to the byte backend (on the client core, its CPU counted with the clients'), and the close."""
    clients = [_client(work, "bench.hsclient", "--port", str(server.port), "--mode", "byte",
                       "--seconds", str(plan.seconds)) for _ in range(plan.clients)]
    b0 = proc.cpu_seconds([backend_pid])
    m = lockstep(server, clients)
    backend_cpu = proc.cpu_seconds([backend_pid]) - b0
    n = sum(r["n"] for r in m["results"])
    if n == 0:
        raise RuntimeError(f"{server.name}: no proxied connection completed")
    cores = busy(work, m, sum(r["cpu"] for r in m["results"]) + backend_cpu)
    return {"n": float(n), "errors": float(sum(r["errors"] for r in m["results"])), "per_s": n / m["wall"],
            "cpu_us": m["server_cpu"] / n * 1e6, "core_us": cores["server_core_busy"] * m["wall"] / n * 1e6,
            **cores, "backend_busy": backend_cpu / m["wall"]}


def phase_proxied(work: Workdir, plan: Plan, results: dict[str, Any], backend: tuple[int, int]) -> None:
    """Whole proxied connections through ours and trio+ssl with ``--backend tcp://``, nginx's stream proxy and
    hitch, all to the byte backend. A reference that cannot start is recorded as missing, with the reason."""
    pid, port = backend
    spec = f"tcp://127.0.0.1:{port}"
    out = results.setdefault("proxied", {"clients": plan.clients, "missing": {}})
    with contextlib.ExitStack() as stack:
        group: dict[str, Server] = {}
        for name in PROXIED:
            try:
                group[name] = stack.enter_context(start_proxied(work, name, spec))
            except Exception as exc:
                if name not in OPTIONAL:
                    raise
                out["missing"][name] = f"{type(exc).__name__}: {exc}"
                log(f"proxied: {name} missing: {exc}")
        out.update(interleaved(plan, group, functools.partial(proxied_window, work, plan, backend_pid=pid),
                               "proxied connections"))


def phase_resumed(work: Workdir, plan: Plan, results: dict[str, Any]) -> None:
    from bench import engine

    res = results.setdefault("resumed", {"floor_us": engine.crypto_floor(None, plan.micro_n) * 1e6})
    with started(work, ALL, "ecdsa", tickets=2) as group:
        res.update(interleaved(plan, group, lambda srv: handshakes(work, srv, plan, "resume"), "resumed handshakes"))


def phase_tls12(work: Workdir, plan: Plan, results: dict[str, Any]) -> None:
    """TLS 1.2 full (no tickets) and resumed (a ticket) ECDSA handshakes, ECDHE-ECDSA-AES128-GCM-SHA256 over
    X25519, against ``openssl s_server -tls1_2`` and the trio+ssl server, each figure beside the others."""
    out = results.setdefault("tls12", {})
    for mode, tickets in (("full", 0), ("resume", 2)):
        with started(work, ALL, "ecdsa", tickets=tickets, tls12=True) as group:
            out[mode] = interleaved(plan, group, functools.partial(handshakes, work, plan=plan, mode=mode, tls12=True),
                                    f"TLS 1.2 {mode} handshakes")


def phase_pq(work: Workdir, plan: Plan, results: dict[str, Any]) -> None:
    """Full ECDSA handshakes from a client that offers X25519MLKEM768 and X25519 shares (pyOpenSSL): our pair
    offering X25519 only, then the hybrid only, and the same pair of figures from a pyOpenSSL server, the
    reference that speaks the hybrid (Debian's openssl 3.0 cannot). The same client in all four, so the
    ratio hybrid / X25519 is what the hybrid costs the server.

    The two groups of one server are measured back to back in every round (which goes first alternates), and
    the figure of record is the median of those per-round ratios: the hybrid's cost is a few percent, less
    than a shared machine drifts between windows minutes apart."""
    from bench import engine, hsclient

    pq = results.setdefault("pq", {})
    with contextlib.ExitStack() as stack:
        group: dict[str, Server] = {}
        for name, grp in PQ_SERVERS:
            if name == "ours":
                server = servers.ours(work, "ecdsa", tickets=0, backend="echo", group=grp)
            else:
                server = servers.pyopenssl(work, "ecdsa", group=grp)
            stack.enter_context(server)
            server.name = f"{name}_{grp.lower()}"
            got = hsclient.pq_connect(server.port)
            if (got["cipher"], str(got["group"]).lower()) != (servers.SUITE, grp.lower()):
                raise RuntimeError(f"{server.name} negotiated {got}")
            group[server.name] = server
        rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in group}
        ratios: dict[str, list[float]] = {"ours": [], "pyopenssl": []}
        for i in range(max(plan.rounds, 3)):
            for impl in ratios:
                pair = [f"{impl}_x25519", f"{impl}_x25519mlkem768"]
                for name in pair if i % 2 == 0 else pair[::-1]:
                    log(f"full handshakes, hybrid client, {name}, round {i + 1}")
                    rounds[name].append(handshakes(work, group[name], plan, "full", "pyopenssl"))
                ratios[impl].append(rounds[pair[1]][-1]["cpu_us"] / rounds[pair[0]][-1]["cpu_us"])
        for name, taken in rounds.items():
            summary = {k: statistics.median(r[k] for r in taken) for k in taken[0] if isinstance(taken[0][k], float)}
            pq[name] = {**summary, "rounds": taken}
        pq["cpu_ratio"] = {impl: statistics.median(v) for impl, v in ratios.items()}
        pq["cpu_ratio_rounds"] = ratios
    n = max(50, plan.micro_n // 5)
    pq["engine_us"] = {grp: engine.pq_engine_us(grp, n) for grp in ("x25519", "X25519MLKEM768")}


def bulk_window(work: Workdir, plan: Plan, server: Server, way: str, backend_pid: int) -> dict[str, Any]:
    p = _client(work, "bench.bulk", "--port", str(server.port), "--direction", way, "--seconds", str(plan.seconds))
    b0 = proc.cpu_seconds([backend_pid])
    m = lockstep(server, [p])
    backend_cpu = proc.cpu_seconds([backend_pid]) - b0
    r = m["results"][0]
    mb = r["bytes"] / 1e6
    return {"bytes": float(r["bytes"]), "mb_per_s": mb / r["wall"], "mb_per_cpu_s": mb / m["server_cpu"],
            **busy(work, m, r["cpu"] + backend_cpu), "client_only_busy": r["cpu"] / r["wall"],
            "backend_busy": backend_cpu / m["wall"]}


def phase_bulk(work: Workdir, plan: Plan, results: dict[str, Any], backend: tuple[int, int, int]) -> None:
    bulk = results.setdefault("bulk", {})
    pid, discard, source = backend
    for way, port in (("up", discard), ("down", source)):
        with started(work, ("ours", "trio_ssl"), "ecdsa", tickets=0, backend=f"tcp://127.0.0.1:{port}") as group:
            measure = functools.partial(bulk_window, work, plan, way=way, backend_pid=pid)
            bulk[way] = interleaved(plan, group, measure, f"bulk {way}")


@dataclass(frozen=True)
class Layout:
    """One configuration of the workers phase: ``--workers``, the cores the servers may use, the load's cores."""

    workers: int
    server_cores: frozenset[int]
    load_cores: frozenset[int]

    def __post_init__(self) -> None:  # core_shares() charges the load to the servers' cores wholly or not at all
        if self.load_cores & self.server_cores and not self.load_cores <= self.server_cores:
            raise ValueError("the load generator's cores must be apart from the servers' or among them")

    @property
    def load_shares_servers_cores(self) -> bool:
        return bool(self.load_cores & self.server_cores)


def layouts(work: Workdir) -> dict[str, Layout]:
    """``w1``: one worker on the server core, the load on the client core, as in every other phase. ``w2``: two
    workers per daemon on two cores. ``w1_both``: one worker on the same two cores, to tell what the second worker
    adds from what lifting the pin adds (secured and appd are two processes already).

    With two cores, the second server core is the client core and the load runs on both: it cannot be kept
    apart. With a third core, that one is the servers' second and the load keeps its own (and any further ones).
    """
    spare = [c for c in sorted(os.sched_getaffinity(0)) if c not in (work.server_core, work.client_core)]
    one = frozenset({work.server_core})
    if spare:
        two, load = frozenset({work.server_core, spare[0]}), frozenset({work.client_core, *spare[1:]})
        return {"w1": Layout(1, one, load), "w1_both": Layout(1, two, load), "w2": Layout(2, two, load)}
    both = frozenset({work.server_core, work.client_core})
    return {"w1": Layout(1, one, frozenset({work.client_core})), "w1_both": Layout(1, both, both),
            "w2": Layout(2, both, both)}


def core_shares(layout: Layout, m: dict[str, Any], load_cpu: float) -> dict[str, float]:
    """Over one window, in cores (CPU-seconds per second of wall time): what the servers used, what the load
    generator used, what else kept the servers' cores busy (other processes, and kernel time charged to no
    process), and so how many cores the servers could have had at most."""
    before, after = m["cores"]
    server, load = m["server_cpu"] / m["wall"], load_cpu / m["wall"]
    busy = sum(proc.core_busy(before, after, core) for core in layout.server_cores)
    load_here = load if layout.load_shares_servers_cores else 0.0
    others = max(0.0, busy - server - load_here)
    return {"server_cores": server, "load_cores": load, "others_cores": others,
            "available_cores": len(layout.server_cores) - load_here - others}


def workers_handshakes(work: Workdir, plan: Plan, layout: Layout, server: Server) -> dict[str, Any]:
    """Full handshakes, as in the handshake phase, from clients placed by ``layout``."""
    clients = [_client(work, "bench.hsclient", "--port", str(server.port), "--mode", "full",
                       "--seconds", str(plan.seconds), cores=layout.load_cores) for _ in range(plan.clients)]
    m = lockstep(server, clients)
    n = sum(r["n"] for r in m["results"])
    if n == 0:
        raise RuntimeError(f"{server.name}: no handshake completed")
    return {"n": float(n), "errors": float(sum(r["errors"] for r in m["results"])), "per_s": n / m["wall"],
            "cpu_us": m["server_cpu"] / n * 1e6, "per_cpu_s": n / max(m["server_cpu"], 1e-9), "wall": m["wall"],
            **core_shares(layout, m, sum(r["cpu"] for r in m["results"]))}


def workers_bulk(work: Workdir, plan: Plan, layout: Layout, backend_pid: int, server: Server) -> dict[str, Any]:
    """``BULK_STREAMS`` downloads at once through the proxy; the backend joins the load generator's cores."""
    clients = [_client(work, "bench.bulk", "--port", str(server.port), "--direction", "down",
                       "--seconds", str(plan.seconds), cores=layout.load_cores) for _ in range(BULK_STREAMS)]
    os.sched_setaffinity(backend_pid, layout.load_cores)
    try:
        b0 = proc.cpu_seconds([backend_pid])
        m = lockstep(server, clients)
        backend_cpu = proc.cpu_seconds([backend_pid]) - b0
    finally:
        os.sched_setaffinity(backend_pid, {work.client_core})
    mb = sum(r["bytes"] for r in m["results"]) / 1e6
    return {"mb": mb, "mb_per_s": mb / m["wall"], "mb_per_cpu_s": mb / max(m["server_cpu"], 1e-9), "wall": m["wall"],
            **core_shares(layout, m, sum(r["cpu"] for r in m["results"]) + backend_cpu)}


def phase_workers(work: Workdir, plan: Plan, results: dict[str, Any], backend: tuple[int, int, int]) -> None:
    """Our pair with ``--workers 1`` on one core against ``--workers 2`` on both, full handshakes and downloads;
    afterwards each server's log tells how the connections spread over the workers."""
    pid, _, source = backend
    lay = layouts(work)
    out = results.setdefault("workers", {})
    out["layouts"] = {key: {"workers": lt.workers, "server_cores": sorted(lt.server_cores),
                            "load_cores": sorted(lt.load_cores)} for key, lt in lay.items()}
    out["bulk_connections"] = BULK_STREAMS
    for what, spec in (("handshake", "echo"), ("bulk", f"tcp://127.0.0.1:{source}")):
        group: dict[str, Server] = {}
        with contextlib.ExitStack() as stack:
            for key, layout in lay.items():
                group[key] = stack.enter_context(start(work, "ours", "ecdsa", tickets=0, backend=spec,
                                                       workers=layout.workers, cores=layout.server_cores))
                group[key].name = key
            if what == "handshake":
                def measure(srv: Server) -> dict[str, Any]:
                    return workers_handshakes(work, plan, lay[srv.name], srv)
            else:
                def measure(srv: Server) -> dict[str, Any]:
                    return workers_bulk(work, plan, lay[srv.name], pid, srv)
            out[what] = interleaved(plan, group, measure, f"workers, {what}")
        for key, server in group.items():  # stopped: every connection has logged its line
            out[what][key]["per_worker"] = servers.worker_counts(server.log)


def phase_handoff(plan: Plan, results: dict[str, Any]) -> None:
    import trio

    from bench import handoff

    trio.run(handoff.run, 200)
    total, seal, imp = trio.run(handoff.run, plan.micro_n * 2)
    entry = {"total_us": total, "seal_us": seal, "import_us": imp, "channel_us": total - seal - imp}
    full = results.get("handshake", {}).get("ecdsa", {}).get("ours", {}).get("cpu_us")
    if full:
        entry["share_of_full_handshake"] = total / full
    results["handoff"] = entry


def hold(work: Workdir, server: Server, stages: tuple[int, ...]) -> dict[str, Any]:
    """Open idle connections stage by stage; appd's RSS growth over its idle size, per connection."""
    from bench import hsclient

    for _ in range(50):  # lazy imports and first allocations happen before the baseline
        hsclient.check(server.port)
    settle(server)
    appd = server.find("tls_privsep.appd")
    base = sum(proc.rss_kib(pid) for pid in appd)
    out: dict[str, Any] = {"appd_processes": len(appd), "appd_rss_kib_idle": base, "stages": [],
                           "secured_rss_kib_idle": sum(proc.rss_kib(pid) for pid in server.find("tls_privsep.secured"))}
    p = _client(work, "bench.hold", "--port", str(server.port), "--stages", ",".join(map(str, stages)))
    try:
        for n in stages:
            log(f"memory: opening {n:,} idle connections to {server.name}")
            held = _read_json(p)
            settle(server)
            rss = sum(proc.rss_kib(pid) for pid in appd)
            out["stages"].append({"connections": held["held"], "errors": held["errors"], "appd_rss_kib": rss,
                                  "kib_per_connection": (rss - base) / held["held"], "open_seconds": held["seconds"]})
            assert p.stdin is not None
            p.stdin.write("next\n")
            p.stdin.flush()
    finally:
        p.kill()
        p.wait()
    settle(server)
    return out


def phase_memory(work: Workdir, plan: Plan, results: dict[str, Any], discard: int) -> None:
    """Idle connections with the echo application (the TLS session alone: one socket, one task) at every
    stage, then through the tcp:// proxy (a backend socket and two relay tasks more) at the first stage."""
    most = max(plan.connections)
    limit = proc.raise_nofile(2 * most + 4096)
    room = limit - 1024  # appd's own descriptors, the listener, the channel
    mem: dict[str, Any] = {"rlimit_nofile": limit}
    results["memory"] = mem
    with start(work, "ours", "ecdsa", tickets=0, max_connections=most + 1000) as server:
        mem["echo"] = hold(work, server, tuple(min(n, room) for n in plan.connections))
    with start(work, "ours", "ecdsa", tickets=0, backend=f"tcp://127.0.0.1:{discard}",
               max_connections=most + 1000) as server:
        mem["proxy"] = hold(work, server, (min(plan.connections[0], room // 2),))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", default=flag("BENCH_QUICK"),
                    help="short windows and fewer connections (development; env BENCH_QUICK=1)")
    ap.add_argument("--only", default=os.environ.get("BENCH_ONLY", ",".join(PHASES)),
                    help=f"comma-separated phases out of {','.join(PHASES)}")
    ap.add_argument("--keep", action="store_true", default=flag("BENCH_KEEP"),
                    help="keep the work directory (server logs, certificates)")
    args = ap.parse_args()
    only = [p.strip() for p in args.only.split(",") if p.strip()]
    unknown = set(only) - set(PHASES)
    if unknown:
        ap.error(f"unknown phase(s): {', '.join(sorted(unknown))}")
    plan = Plan.from_env(args.quick)
    started = time.monotonic()
    cores = sorted(os.sched_getaffinity(0))
    server_core = int(os.environ.get("BENCH_SERVER_CORE", cores[0]))
    client_core = int(os.environ.get("BENCH_CLIENT_CORE", cores[1] if len(cores) > 1 else cores[0]))
    proc.raise_nofile(2 * max(plan.connections) + 4096)

    path = Path(tempfile.mkdtemp(prefix="tls-privsep-bench-"))
    path.chmod(0o711)  # appd, as nobody, must reach secured's socket in a subdirectory
    work = Workdir(path, pki.write_certs(path), server_core, client_core)
    work.openssl_conf.write_text(servers.OPENSSL_CNF)
    (path / "openssl-tls12.cnf").write_text(servers.OPENSSL_CNF_TLS12)
    work.env = {"OPENSSL_CONF": str(work.openssl_conf), "PYTHONPATH": str(ROOT)}
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    results: dict[str, Any] = {
        "started_utc": stamp, "quick": args.quick, "machine": machine(),
        "plan": {**plan.__dict__, "server_core": server_core, "client_core": client_core, "phases": only},
        "errors": {},
    }
    log(f"tls-privsep bench ({'quick' if args.quick else 'full'}): servers on core {server_core}, "
        f"load on core {client_core}; work dir {path}")
    backend = subprocess.Popen([sys.executable, "-m", "bench.backend"], stdout=subprocess.PIPE, text=True,
                               preexec_fn=proc.pinned(client_core), cwd=ROOT)
    assert backend.stdout is not None
    discard, source, byte = (int(x) for x in backend.stdout.readline().split())
    steps: list[tuple[str, Callable[[], None]]] = [
        ("handshake", lambda: phase_handshake(work, plan, results, latency="latency" in only)),
        ("serial", lambda: phase_serial(work, plan, results)),
        ("proxied", lambda: phase_proxied(work, plan, results, (backend.pid, byte))),
        ("resumed", lambda: phase_resumed(work, plan, results)),
        ("bulk", lambda: phase_bulk(work, plan, results, (backend.pid, discard, source))),
        ("workers", lambda: phase_workers(work, plan, results, (backend.pid, discard, source))),
        ("handoff", lambda: phase_handoff(plan, results)),
        ("memory", lambda: phase_memory(work, plan, results, discard)),
        ("pq", lambda: phase_pq(work, plan, results)),
        ("tls12", lambda: phase_tls12(work, plan, results)),
    ]
    if "latency" in only and "handshake" not in only:
        steps.append(("latency", lambda: phase_handshake(work, plan, results, latency=True)))
    try:
        for name, step in steps:
            if name in only:
                try:
                    step()
                except Exception as exc:
                    results["errors"][name] = f"{type(exc).__name__}: {exc}"
                    log(f"{name} failed:\n{traceback.format_exc()}")
    finally:
        backend.terminate()
        backend.wait()
        if args.keep or results["errors"]:
            log(f"work directory kept: {path}")
        else:
            shutil.rmtree(path, ignore_errors=True)
    results["machine"]["loadavg_end"] = os.getloadavg()
    results["duration_s"] = time.monotonic() - started
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{stamp}.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(report.table(results))
    if report.has_connection_cost(results):
        print()
        print(report.connection_table(results))
    if "pq" in results:
        print()
        print(report.pq_table(results))
    if "workers" in results:
        print()
        print(report.workers_table(results))
    print()
    for note in report.notes(results):
        print(f"- {note}")
    m = results["machine"]
    print(f"\n{m['nproc']} cores ({m['cpu']}), Linux {m['kernel']}, {m['openssl']}, Python {m['python']}, "
          f"cryptography {m['cryptography']}; load average {m['loadavg_start'][0]:.2f} at start. "
          f"{results['duration_s']:.0f} s. Raw numbers: {out.relative_to(ROOT)}")
    return 1 if results["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
