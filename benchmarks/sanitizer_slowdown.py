"""What a sanitizer build costs, plain vs address/thread/undefined, in one run.

    .venv/bin/python benchmarks/sanitizer_slowdown.py [--runs 3] [--flood-seconds 10]
    .venv/bin/python benchmarks/sanitizer_slowdown.py --repo CLONE --ref 1.6.18

For each build of Debian's 1.6.18 (or --ref of --repo): the build time (the cache's
record of the original build; ccache, when present, makes repeat builds faster), the
flood's connection cycles/s and ops/s over a clean soak of the generic ``flood`` scenario
(no amplifier), the sanitizer reports that soak produced (count, distinct signatures),
and the time to the HANG verdict of the reintroduced 1.4.6 race
(``tests/fixtures/patches/reintroduce-maxconns-race.diff``, ``maxconns-deadlock`` with its
default amplifier), over --runs trials (that fixture only on Debian's tree).

The flood is connection churn and mostly measures its own client (it shares the cores
with the server, and with whatever else runs on the machine), so the server's own cost is
measured apart: one connection sends --ops pipelined ``get``s of a stored key (100 per
write) and the server's CPU time (utime + stime from /proc) is divided by the ops. CPU
time, unlike wall time, does not count the time the server waited for a core.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import tempfile
import time
from pathlib import Path

from tabulate import tabulate

from verifier.build.builder import Builder, BuildRequest
from verifier.build.sanitizer import report_files, runtime_env
from verifier.evidence.sanitizer import distinct
from verifier.paths import CacheLayout, default_cache_dir
from verifier.records.trial import TrialResult
from verifier.run.server import HOST, MemcachedServer, ServerConfig
from verifier.run.trial import sanitizer_dir
from verifier.scenario import load_scenario
from verifier.source.select import choose_source
from verifier.verify import SoakPlan, VerifyCore, VerifyOptions
from verifier.vocabulary import AmplifierKind, Sanitizer, TrialOutcome

ROOT = Path(__file__).resolve().parent.parent
RACE = ROOT / "tests" / "fixtures" / "patches" / "reintroduce-maxconns-race.diff"
VARIANTS: list[Sanitizer | None] = [None, *Sanitizer]


def _stats(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{statistics.median(values):.2f} (min {min(values):.2f}, max {max(values):.2f})"


def soak_once(
    core: VerifyCore, request: BuildRequest, options: VerifyOptions, soak_s: float, work: Path
) -> TrialResult:
    with core.prepare(request, options) as prepared:
        (trial,) = core.soak(prepared, work, SoakPlan(1, soak_s))
    return trial


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def server_cost(
    binary: Path, sanitizer: Sanitizer | None, ops: int, work: Path
) -> tuple[float, float, int]:
    """(gets/s on one connection, server CPU microseconds per get, reports written)."""
    work.mkdir(parents=True, exist_ok=True)
    reports = sanitizer_dir(work, sanitizer)
    config = ServerConfig(binary, threads=2, maxconns=64, env=runtime_env(sanitizer, reports))
    batch = 100
    server = MemcachedServer(config, work / "server.log")
    with server, socket.create_connection((HOST, server.port), timeout=10) as sock:
        sock.sendall(b"set vk:1 0 0 100\r\n" + b"x" * 100 + b"\r\n")
        sock.recv(64)
        request = b"get vk:1\r\n" * batch
        cpu, started = _cpu_s(server.pid), time.monotonic()
        for _ in range(max(1, ops // batch)):
            sock.sendall(request)
            reply = b""
            while reply.count(b"END\r\n") < batch:
                chunk = sock.recv(1 << 16)
                if not chunk:
                    raise RuntimeError("server closed the connection")
                reply += chunk
        wall = time.monotonic() - started
        cpu = _cpu_s(server.pid) - cpu
    done = max(1, ops // batch) * batch
    written = len(report_files(reports)) if reports.is_dir() else 0
    if not reports.is_relative_to(work):
        shutil.rmtree(reports, ignore_errors=True)  # staged for nobody in the temp dir
    return done / wall, cpu / done * 1e6, written


def measure(
    core: VerifyCore,
    builder: Builder,
    pristine: BuildRequest,
    race: BuildRequest | None,
    runs: int,
    flood_s: float,
    ops: int,
    work: Path,
) -> list[str]:
    name = str(pristine.sanitizer or "plain")
    build = builder.build(pristine)
    rate, cpu_us, _ = server_cost(build.binary, pristine.sanitizer, ops, work / f"{name}-gets")
    flood = soak_once(
        core,
        pristine,
        VerifyOptions(scenario=load_scenario("flood"), amplify=AmplifierKind.NONE),
        flood_s,
        work / f"{name}-flood",
    )
    summary = flood.flood
    reports = distinct(flood.sanitizer)
    row = [
        name,
        f"{build.build_seconds:.1f}",
        f"{rate:,.0f}",
        f"{cpu_us:.1f}",
        str(flood.outcome),
        f"{summary.cycles_per_s:,.0f}" if summary else "-",
        f"{summary.ops_per_s:,.0f}" if summary else "-",
        f"{len(flood.sanitizer)} / {len(reports)}",
    ]
    if race is None:
        return [*row, "-", "-"]
    options = VerifyOptions(scenario=load_scenario("maxconns-deadlock"))
    times, outcomes = [], []
    for i in range(runs):
        trial = soak_once(core, race, options, 30.0, work / f"{name}-race-{i}")
        outcomes.append(str(trial.hang_class or trial.outcome))
        if trial.outcome == TrialOutcome.HANG:
            times.append(trial.verdict_at_s or 0.0)
    seen = ", ".join(f"{k} x{outcomes.count(k)}" for k in sorted(set(outcomes)))
    return [*row, seen, _stats(times)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--flood-seconds", type=float, default=10.0)
    parser.add_argument("--ops", type=int, default=100_000, help="pipelined gets per build")
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument("--repo", help="measure this repository's --ref instead of Debian's")
    parser.add_argument("--ref", help="with --repo: the ref to measure")
    args = parser.parse_args()
    cache = CacheLayout(args.cache_dir or default_cache_dir())
    source = choose_source(args.repo, None if args.repo else "debian", cache)
    ref = args.ref or source.default_ref
    if ref is None:
        parser.error("--repo needs --ref")
    builder = Builder(cache.builds, cache.locks)
    core = VerifyCore(builder, cache.tools)
    rows = []
    with tempfile.TemporaryDirectory(prefix="sanitizer-slowdown-") as tmp:
        work = Path(tmp)
        for sanitizer in VARIANTS:
            pristine = BuildRequest(source, ref, sanitizer=sanitizer)
            race = None if args.repo else BuildRequest(source, ref, (RACE,), sanitizer=sanitizer)
            sizes = (args.runs, args.flood_seconds, args.ops)
            rows.append(measure(core, builder, pristine, race, *sizes, work))
    print(
        f"{ref}: build, a {args.flood_seconds:.0f} s flood (no amplifier), and the "
        f"reintroduced 1.4.6 race (maxconns-deadlock), {args.runs} trials per build"
    )
    print(
        tabulate(
            rows,
            headers=[
                "build",
                "build s",
                "gets/s (1 conn)",
                "server CPU us/get",
                "flood outcome",
                "cycles/s",
                "ops/s",
                "reports / signatures",
                "race trials",
                "HANG proven at s",
            ],
        )
    )


if __name__ == "__main__":
    main()
