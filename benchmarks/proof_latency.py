"""How fast a hang is proven from the live process (wait-for graph, state proof), vs gdb.

    .venv/bin/python benchmarks/proof_latency.py [--runs 5] [--repeats 50] [--cache-dir DIR]

Builds Debian's memcached with tests/fixtures/patches/lock-order-inversion.diff (an ABBA
inversion reached by a plain flood) and pristine 1.6.18, then, over --runs servers each:
  - ABBA: seconds of flood until a fresh connection gets no answer and the wait-for graph
    proves the deadlock (reached / runs); then the proof's cost on the hung server
    (first call, then median and 90th percentile of --repeats calls), and one gdb dump of
    all threads side by side (what the timed-out path pays);
  - lost wake-up (listener-lost-wakeup, interpose amplifier): seconds until the state
    proof says proven, and its cost (it includes a 25 ms gap between its two snapshots
    and two stats round trips);
  - the C fixture tests/fixtures/c/abba.c: proof cost with libc's debug file and with
    exported symbols only.
Other work on the machine skews absolute times: read the ratios.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tabulate import tabulate

from verifier.build.builder import Builder, BuildRequest, BuildResult
from verifier.evidence import gdb
from verifier.evidence.state_proof import prove_lost_wakeup
from verifier.evidence.symtab import DEBUG_ROOT, SymbolTable
from verifier.evidence.waitfor import find_deadlock, warm_up
from verifier.paths import CacheLayout, default_cache_dir
from verifier.probe.telnet import ProbeTimeout, TelnetSession, probe_new_connection
from verifier.run.amplifier import plan_amplifier
from verifier.run.server import HOST, MemcachedServer, ServerConfig, server_options_for
from verifier.scenario import load_scenario
from verifier.source.select import choose_source
from verifier.stress import Flood, FloodConfig

ROOT = Path(__file__).resolve().parent.parent
ABBA_PATCH = ROOT / "tests" / "fixtures" / "patches" / "lock-order-inversion.diff"
ABBA_C = ROOT / "tests" / "fixtures" / "c" / "abba.c"
FLOOD_BOUND_S = 30


def _ms(values: list[float]) -> str:
    if not values:
        return "-"
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
    return f"{statistics.median(ordered) * 1000:.2f} / {p90 * 1000:.2f}"


def _config(build: BuildResult, maxconns: int, env: dict[str, str] | None = None) -> ServerConfig:
    args = server_options_for(
        build.binary, [(o.args, o.when_help_mentions) for o in build.recipe.server_options]
    )
    return ServerConfig(build.binary, 2, maxconns, tuple(args), env or {})


def _repeat(call, repeats: int) -> list[float]:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return times


def abba_runs(build: BuildResult, runs: int, repeats: int, work: Path) -> list[list[str]]:
    symbols = SymbolTable.load(build.binary)
    reached, to_hang, first, warm, gdb_s = 0, [], [], [], []
    for run in range(runs):
        with MemcachedServer(_config(build, 1024), work / f"abba-{run}.log") as server:
            warm_up(server.pid, symbols)
            started = time.monotonic()
            graph = None
            with Flood(FloodConfig(port=server.port, concurrency=200, duration_s=FLOOD_BOUND_S)):
                while time.monotonic() - started < FLOOD_BOUND_S:
                    time.sleep(0.25)
                    if probe_new_connection(HOST, server.port, 1.0, "socket").ok:
                        continue
                    graph = find_deadlock(server.pid, symbols)
                    if graph.cycle() is not None:
                        break
            if graph is None or graph.cycle() is None:
                continue
            reached += 1
            to_hang.append(time.monotonic() - started)
            first.append(graph.elapsed_s)
            warm += [find_deadlock(server.pid, symbols).elapsed_s for _ in range(repeats)]
            gdb_s += _repeat(lambda pid=server.pid: gdb.dump(pid, ("allow_new_conns",)), 1)
    return [
        ["ABBA fixture: deadlock proven", f"{reached} / {runs} runs (flood <= {FLOOD_BOUND_S} s)"],
        ["  flood until proven, s (median / max)",
         f"{statistics.median(to_hang):.1f} / {max(to_hang):.1f}" if to_hang else "-"],
        ["  first proof after the hang, ms (median / p90)", _ms(first)],
        [f"  proof on the hung server, ms (median / p90 of {len(warm)})", _ms(warm)],
        ["  gdb dump of all threads, ms (median / p90)", _ms(gdb_s)],
        ["  gdb / proof", f"{statistics.median(gdb_s) / statistics.median(warm):.0f}x"
         if warm and gdb_s else "-"],
    ]  # fmt: skip


def lost_wakeup_runs(
    build: BuildResult, runs: int, repeats: int, cache: CacheLayout, work: Path
) -> list[list[str]]:
    scenario = load_scenario("listener-lost-wakeup")
    plan = plan_amplifier("interpose", scenario, build.binary, cache.tools)
    symbols = SymbolTable.load(build.binary)
    reached, to_hang, cost = 0, [], []
    for run in range(runs):
        env = plan.env(build.binary, work / f"lw-{run}.status")
        config = _config(build, scenario.maxconns, env)
        with MemcachedServer(config, work / f"lw-{run}.log") as server:
            warm_up(server.pid, symbols)
            held = TelnetSession.open(HOST, server.port, 2.0, "socket")
            port = held.local_port()

            def stats(held: TelnetSession = held) -> dict[str, str] | None:
                try:
                    return held.stats(1.0)
                except ProbeTimeout:
                    return None

            started, proven = time.monotonic(), False
            flood = Flood(
                FloodConfig(
                    port=server.port,
                    concurrency=scenario.flood.concurrency,
                    duration_s=FLOOD_BOUND_S,
                    mix=scenario.flood.mix,
                    start_method="spawn",
                )
            )
            with flood:
                while time.monotonic() - started < FLOOD_BOUND_S and not proven:
                    proven = prove_lost_wakeup(server.pid, symbols, stats, port).proven
                    time.sleep(0.1)
            if proven:
                reached += 1
                to_hang.append(time.monotonic() - started)
                cost += [
                    prove_lost_wakeup(server.pid, symbols, stats, port).elapsed_s
                    for _ in range(max(1, repeats // 5))
                ]
            held.close()
    return [
        ["lost wake-up: proven from state", f"{reached} / {runs} runs"],
        ["  flood until proven, s (median / max)",
         f"{statistics.median(to_hang):.1f} / {max(to_hang):.1f}" if to_hang else "-"],
        [f"  state proof, ms (median / p90 of {len(cost)}; 25 ms gap, 2 stats)", _ms(cost)],
    ]  # fmt: skip


def c_fixture(repeats: int, work: Path) -> list[list[str]]:
    binary = work / "abba"
    subprocess.run(["cc", "-pthread", "-g", "-O2", "-o", str(binary), str(ABBA_C)], check=True)
    proc = subprocess.Popen([str(binary)], stdout=subprocess.DEVNULL)
    rows = []
    try:
        time.sleep(0.5)
        for label, root in (("libc debug file", DEBUG_ROOT), ("exported symbols only", None)):
            find_deadlock(proc.pid, debug_root=root)  # load the tables
            times = [find_deadlock(proc.pid, debug_root=root).elapsed_s for _ in range(repeats)]
            rows.append([f"abba.c proof, {label}, ms (median / p90)", _ms(times)])
    finally:
        proc.kill()
        proc.wait()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--cache-dir", type=Path, default=None)
    args = parser.parse_args()
    cache = CacheLayout(args.cache_dir or default_cache_dir())
    source = choose_source(None, "debian", cache)
    builder = Builder(cache.builds, cache.locks)
    ref = source.default_ref
    assert ref is not None
    abba = builder.build(BuildRequest(source, ref, (ABBA_PATCH,)))
    pristine = builder.build(BuildRequest(source, ref))
    rows: list[list[str]] = []
    with tempfile.TemporaryDirectory(prefix="proof-latency-") as tmp:
        work = Path(tmp)
        rows += c_fixture(args.repeats, work)
        rows += abba_runs(abba, args.runs, args.repeats, work)
        rows += lost_wakeup_runs(pristine, args.runs, args.repeats, cache, work)
    print(tabulate(rows, headers=["figure", "value"]))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
