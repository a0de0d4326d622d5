"""Throughput of the embedded flood against a local memcached, and beside memaslap.

    .venv/bin/python benchmarks/stress_throughput.py --memcached /path/to/memcached [--seconds 5]
    .venv/bin/python benchmarks/stress_throughput.py --memcached PATH --vs-memaslap [--repeat 3]

The second form runs, side by side against the same server build, the verifier's workload
clients and libmemcached's memaslap (Debian: libmemcached-tools, binary ``memcaslap``) on a
get/set 9:1 mix of 64-byte values, then on a mix close to ``everything`` (gets, multi-gets
and sets of 64 to 4,000 bytes); its last line is ``flood/memcaslap ops ratio: R`` for the
get/set mix (our best setting over memaslap's best, the settings named in the table).

For each setting (worker processes 1/2, uvloop on/off, RST/FIN close) a fresh memcached is
started on a free loopback port, flooded for --seconds, and stopped. The table shows
connection cycles/s and ops/s (flooding time), errors, CPU used by the flood processes and by
memcached (in cores) over the run, the rest of the machine's busy CPU ("other": other
processes, unattributed kernel work; high means the numbers are disturbed), and cycles per
client CPU-second (less sensitive to other load). Client and server share the machine's cores.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from tabulate import tabulate

from verifier.stress import Flood, FloodConfig
from verifier.util.proc import die_with_parent

_TICKS = os.sysconf("SC_CLK_TCK")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cpu_s(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def _busy_cpu_s() -> float:
    """Busy time of all CPUs (everything but idle and iowait), in seconds."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / _TICKS


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _wait_ready(port: int, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0) as s:
                s.sendall(b"version\r\n")
                if s.recv(100).startswith(b"VERSION"):
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"memcached on port {port} did not come up")
        time.sleep(0.05)


@contextlib.contextmanager
def memcached(binary: str, conns: int, threads: int) -> Iterator[tuple[int, int]]:
    """(port, pid) of a fresh memcached; its process group is killed afterwards."""
    port = _free_port()
    argv = [binary, "-l", "127.0.0.1", "-p", str(port), "-U", "0", "-t", str(threads)]
    proc = subprocess.Popen(
        [*argv, "-c", str(conns), "-u", "nobody"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        preexec_fn=die_with_parent,
    )
    try:
        _wait_ready(port)
        yield port, proc.pid
    finally:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            try:
                proc.wait(timeout=3)
                break
            except subprocess.TimeoutExpired:
                continue


def run_one(args: argparse.Namespace, processes: int, uvloop: bool, linger: bool) -> list[object]:
    with memcached(args.memcached, args.server_conns, args.server_threads) as (port, pid):
        config = FloodConfig(
            port=port,
            concurrency=args.concurrency,
            processes=processes,
            duration_s=args.seconds,
            use_uvloop=uvloop,
            linger_rst=linger,
        )
        client_cpu, server_cpu, busy = _children_cpu_s(), _cpu_s(pid), _busy_cpu_s()
        with Flood(config) as flood:
            flood.wait(timeout_s=args.seconds + 30)
            stats = flood.stop()
        client_cpu = _children_cpu_s() - client_cpu  # the flood processes are reaped by now
        server_cpu = _cpu_s(pid) - server_cpu
        other_cpu = _busy_cpu_s() - busy - client_cpu - server_cpu
    span = stats.active_s or 1.0
    errors = ", ".join(f"{k.value} {n}" for k, n in stats.errors.nonzero().items()) or "-"
    return [
        processes,
        "uvloop" if stats.uvloop else "asyncio",
        "RST" if linger else "FIN",
        round(stats.mean_cycles_per_s),
        round(stats.mean_ops_per_s),
        errors,
        round(client_cpu / span, 2),
        round(server_cpu / span, 2),
        round(max(0.0, other_cpu) / span, 2),
        round(stats.cycles / client_cpu) if client_cpu else 0,
    ]


MEMASLAP_MIXES = {
    # name: (memaslap -F config text, memaslap extra args, our workload as TOML data)
    "get/set 9:1": (
        "key\n64 64 1\nvalue\n64 64 1\ncmd\n0 0.1\n1 0.9\n",
        [],
        {"keys": {"count": 100_000, "prefix": "bench:"}, "values": {"size": 64},
         "commands": {"get": 9, "set": 1}},
    ),
    "everything-like": (
        "key\n32 64 1\nvalue\n64 4000 1\ncmd\n0 0.3\n1 0.7\n",
        ["-d", "10"],
        {"keys": {"count": 100_000, "prefix": "bench:", "popularity": "zipf"},
         "values": {"min": 64, "max": 4000},
         "commands": {"get": 50, "mget": 20, "set": 30}, "mget_keys": 10},
    ),
}  # fmt: skip


def run_memaslap(args: argparse.Namespace, mix: str, concurrency: int) -> list[object]:
    config, extra, _ = MEMASLAP_MIXES[mix]
    with memcached(args.memcached, args.server_conns, args.server_threads) as (port, pid):
        cfg = Path(args.scratch) / "memaslap.cfg"
        cfg.write_text(config)
        server_cpu = _cpu_s(pid)
        started = time.monotonic()
        done = subprocess.run(
            ["memcaslap", "-s", f"127.0.0.1:{port}", "-F", str(cfg), "-T", "2",
             "-c", str(concurrency), "-t", f"{int(args.seconds)}s", *extra],
            capture_output=True, text=True, timeout=args.seconds + 60,
        )  # fmt: skip
        span = time.monotonic() - started
        server_cpu = _cpu_s(pid) - server_cpu
    tps = 0
    for line in done.stdout.splitlines():
        if line.startswith("Run time:") and "TPS:" in line:
            tps = int(line.split("TPS:")[1].split()[0])
    return [mix, "memaslap", f"-T 2 -c {concurrency}", tps, "-", round(server_cpu / span, 2)]


def run_workload(
    args: argparse.Namespace, mix: str, processes: int, clients: int, pipeline: int
) -> list[object]:
    from verifier.stress.workload_file import parse_workload

    group = {"name": "bench", "clients": clients, "pipeline": pipeline, **MEMASLAP_MIXES[mix][2]}
    workload = parse_workload({"group": [group]}, "bench", None)
    with memcached(args.memcached, args.server_conns, args.server_threads) as (port, pid):
        config = FloodConfig(
            port=port, concurrency=0, processes=processes, duration_s=args.seconds,
            groups=workload.groups, report_dir=str(Path(args.scratch) / "clients"),
        )  # fmt: skip
        server_cpu = _cpu_s(pid)
        with Flood(config) as flood:
            flood.wait(timeout_s=args.seconds + 30)
            stats = flood.stop()
        server_cpu = _cpu_s(pid) - server_cpu
        report = flood.client_report()
    span = stats.active_s or 1.0
    errors = sum(sum(c.errors.values()) for c in report.commands) if report else 0
    setting = f"{processes} proc x {clients} conns, pipeline {pipeline}"
    return [mix, "verifier", setting, round(stats.mean_ops_per_s), errors,
            round(server_cpu / span, 2)]  # fmt: skip


def vs_memaslap(args: argparse.Namespace) -> int:
    import tempfile

    args.scratch = tempfile.mkdtemp(prefix="vs-memaslap-")
    rows: list[list[object]] = []
    best: dict[tuple[str, str], int] = {}
    for mix in MEMASLAP_MIXES:
        trials = [("memaslap", c, 0, 0) for c in (32, 128)]
        trials += [
            ("verifier", c, p, pipe) for p in (1, 2) for c, pipe in ((32, 1), (32, 8), (32, 32))
        ]
        for tool, clients, processes, pipeline in trials:
            for _ in range(args.repeat):
                row = (
                    run_memaslap(args, mix, clients)
                    if tool == "memaslap"
                    else run_workload(args, mix, processes, clients, pipeline)
                )
                print("  ".join(str(c) for c in row), file=sys.stderr, flush=True)
                rows.append(row)
                best[(mix, tool)] = max(best.get((mix, tool), 0), int(row[3]))  # type: ignore[call-overload]
    headers = ["mix", "client", "setting", "ops/s", "errors", "server CPU"]
    print(tabulate(rows, headers=headers, intfmt=","))
    for mix in MEMASLAP_MIXES:
        ours, theirs = best.get((mix, "verifier"), 0), best.get((mix, "memaslap"), 0)
        print(f"{mix}: best verifier {ours:,} ops/s, best memaslap {theirs:,} ops/s")
    mix = "get/set 9:1"
    ratio = best.get((mix, "verifier"), 0) / max(1, best.get((mix, "memaslap"), 0))
    print(f"flood/memcaslap ops ratio: {ratio:.2f}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--memcached", default=os.environ.get("VERIFIER_TEST_MEMCACHED"))
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=400)
    parser.add_argument("--server-conns", type=int, default=8192)
    parser.add_argument("--server-threads", type=int, default=2)
    parser.add_argument("--processes", default="1,2", help="comma-separated, e.g. 1,2")
    parser.add_argument("--quick", action="store_true", help="uvloop + RST only")
    parser.add_argument("--repeat", type=int, default=1, help="runs per setting; the best shown")
    parser.add_argument("--vs-memaslap", action="store_true", help="beside memaslap (above)")
    args = parser.parse_args()
    if not args.memcached:
        parser.error("give --memcached PATH or set VERIFIER_TEST_MEMCACHED")
    if args.vs_memaslap:
        return vs_memaslap(args)
    process_counts = [int(p) for p in args.processes.split(",")]
    loops, lingers = ((True,), (True,)) if args.quick else ((True, False), (True, False))
    print(
        f"cpus {os.cpu_count()}, load average {os.getloadavg()[0]:.2f}, "
        f"{args.concurrency} coroutines, {args.seconds:g} s per run, "
        f"memcached -t {args.server_threads} -c {args.server_conns}",
        flush=True,
    )
    rows = []
    for processes, uvloop, linger in itertools.product(process_counts, loops, lingers):
        runs = []
        for _ in range(args.repeat):
            runs.append(run_one(args, processes, uvloop, linger))
            print("  ".join(str(cell) for cell in runs[-1]), file=sys.stderr, flush=True)
        rows.append(max(runs, key=lambda row: row[3]))  # best cycles/s: others share the CPUs
    headers = [
        "procs", "loop", "close", "cycles/s", "ops/s", "errors",
        "client CPU", "server CPU", "other CPU", "cycles/client-CPU-s",
    ]  # fmt: skip
    print(tabulate(rows, headers=headers, intfmt=",", floatfmt=".2f"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
