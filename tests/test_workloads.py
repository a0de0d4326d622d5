"""Workloads on Debian's real memcached: every command family and protocol really sent and
really answered (counted from the server's own stats), slow readers really pin, events
really happen, the churn keeps its fast path, bad workload files are one line and exit 2."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest

from verifier.paths import CacheLayout
from verifier.run.server import MemcachedServer, ServerConfig
from verifier.scenario import FloodShape, load_scenario, with_workload
from verifier.stress import Flood, FloodConfig
from verifier.stress.workload_file import load_workload, parse_workload

from conftest import ROOT, run_cli

SHUTDOWN_FORGOTTEN = ROOT / "tests" / "fixtures" / "patches" / "forget-graceful-stop.diff"

# Every command of every protocol, each in a group where it can succeed: counters hold
# numbers, registers hold strings, admin commands run at a few per second.
ALL_COMMANDS = """
name = "all-commands"
summary = "every command family of every protocol"
[server]
options = ["slab_reassign", "lru_crawler", "lru_maintainer"]
[[group]]
name = "ascii"
clients = 3
pipeline = 2
keys = { count = 50, prefix = "a:" }
values = { min = 5, max = 2000 }
commands = { get = 5, gets = 3, mget = 2, mgets = 1, set = 5, add = 2, replace = 2, append = 1, prepend = 1, cas = 2, delete = 2, touch = 1, gat = 1, gats = 1 }
[[group]]
name = "counters"
clients = 2
keys = { count = 5, prefix = "c:" }
values = { numbers = [9, 99] }
commands = { incr = 5, decr = 2, set = 1 }
[[group]]
name = "admin"
clients = 1
rate = 30
commands = { stats = 3, flush_all = 1, verbosity = 1, slabs_reassign = 1, slabs_automove = 1, lru_crawler_crawl = 1, lru_crawler_metadump = 1, lru_crawler_enable = 1, lru_crawler_disable = 1, version = 1 }
arg = { flush_all = ["30"], slabs_automove = ["1"] }
[[group]]
name = "binary"
protocol = "binary"
clients = 2
pipeline = 2
keys = { count = 50, prefix = "b:" }
values = { numbers = [5, 77] }
commands = { bin_get = 4, bin_getk = 2, bin_getq = 1, bin_getkq = 1, bin_set = 4, bin_add = 1, bin_replace = 1, bin_setq = 1, bin_incr = 2, bin_decr = 1, bin_delete = 1, bin_noop = 1, bin_touch = 1, bin_gat = 1, bin_version = 1, bin_stats = 1 }
[[group]]
name = "meta"
protocol = "meta"
clients = 2
keys = { count = 50, prefix = "m:" }
values = { numbers = [3, 40] }
commands = { mg = 4, ms = 3, md = 1, ma = 2, mn = 1 }
[[group]]
name = "watchers"
kind = "watch"
clients = 2
watch = "fetchers mutations"
hold_s = [0.2, 0.5]
"""

SCENARIO = """
name = "{name}"
summary = "test scenario"
requires_symbols = []
workload = "{workload}"
[server]
maxconns = 256
[exercise]
emfile = false
[amplify]
default = "none"
"""


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _report(stdout: str) -> dict:
    line = next(x for x in stdout.splitlines() if x.startswith("report"))
    return json.loads(Path(line.split(None, 1)[1]).read_text())


def _verify(
    cache_layout: CacheLayout, *args: str, timeout: float = 300
) -> tuple[int, str, dict | None]:
    done = run_cli("verify", "--source", "debian", *args, cache=cache_layout, timeout=timeout)
    report = _report(done.stdout) if "report " in done.stdout else None
    return done.returncode, done.stdout + done.stderr, report


def test_every_command_family_is_sent_and_answered(
    tmp_path: Path, cache_layout: CacheLayout, pristine
) -> None:  # type: ignore[no-untyped-def]
    workload = _write(tmp_path, "all.toml", ALL_COMMANDS)
    code, out, report = _verify(
        cache_layout, "--scenario", str(_write(tmp_path, "s.toml", SCENARIO.format(
            name="all", workload=workload))), "--soak", "6", "--trials", "1",
    )  # fmt: skip
    assert code == 0, out
    assert report is not None
    trial = report["trials"][0]
    seen: dict[str, dict[str, int]] = {}
    for row in trial["clients"]["commands"]:
        seen.setdefault(row["command"], {}).update(row["counts"])
    wanted = {c for g in load_workload(str(workload)).groups for c in g.command_names}
    errors = ("error", "client-error", "server-error", "timeout", "closed", "protocol-error")
    for command in sorted(wanted):
        counts = seen.get(command, {})
        good = sum(n for k, n in counts.items() if k not in errors)
        assert good > 0, f"{command} was never answered without an error: {counts}"
    server = trial["server_counts"]

    def answered(*commands: str, statuses: tuple[str, ...]) -> int:
        return sum(seen.get(c, {}).get(s, 0) for c in commands for s in statuses)

    # Each answered request moved exactly one server counter; requests still in flight when
    # the flood stopped were done by the server but never answered to a client: at most one
    # pipeline per client (6 + 4 + 2 + 2 here).
    in_flight = 14
    incr = server["incr_hits"] + server["incr_misses"]
    counted = answered("incr", "ma", statuses=("number", "not-found"))
    # a binary incr with an initial value that creates its key moves no counter (proto_bin.c)
    binary = answered("bin_incr", statuses=("number", "not-found"))
    assert counted <= incr <= counted + binary + in_flight
    decr = server["decr_hits"] + server["decr_misses"]
    counted = answered("decr", statuses=("number", "not-found"))
    binary = answered("bin_decr", statuses=("number", "not-found"))
    assert counted <= decr <= counted + binary + in_flight
    deletes = server["delete_hits"] + server["delete_misses"]
    counted = answered("delete", "bin_delete", "md", statuses=("deleted", "not-found"))
    assert counted <= deletes <= counted + in_flight
    cas = server["cas_hits"] + server["cas_badval"] + server["cas_misses"]
    counted = answered("cas", statuses=("stored", "exists", "not-found"))
    assert counted <= cas <= counted + in_flight
    # at least: a multi-get or a quiet batch counts once per key on the server
    gets = ("get", "gets", "bin_get", "bin_getk", "mg", "gat", "gats", "bin_gat")
    assert server["cmd_get"] >= answered(*gets, statuses=("hit", "miss"))
    assert server["cmd_flush"] >= answered("flush_all", statuses=("ok",)) > 0
    assert seen["lru_crawler_crawl"].get("ok", 0) > 0  # a crawl was started (not only BUSY)


def test_slow_readers_really_pin_their_items(tmp_path: Path, pristine) -> None:  # type: ignore[no-untyped-def]
    """A client that asks for a big multi-get of one key and reads nothing for a while
    leaves the server writing: `stats conns` shows its connection in conn_mwrite."""
    workload = parse_workload(
        {
            "group": [
                {"name": "writer", "clients": 1, "rate": 5, "keys": {"count": 1, "prefix": "p:"},
                 "values": {"size": 200_000}, "commands": {"set": 1}},
                {"name": "slow", "clients": 2, "rate": 2, "keys": {"count": 1, "prefix": "p:"},
                 "commands": {"mget": 1}, "mget_keys": 100, "mget_repeat": True,
                 "read_delay_ms": 3000},
            ]
        },
        "pin",
        None,
    )  # fmt: skip
    config = ServerConfig(pristine.binary, threads=2, maxconns=64)
    with MemcachedServer(config, tmp_path / "server.log") as server:
        flood = FloodConfig(
            port=server.port, concurrency=0, processes=1, duration_s=10.0, groups=workload.groups,
            report_dir=str(tmp_path / "clients"), start_method="spawn",
        )  # fmt: skip
        states: list[str] = []
        with Flood(flood), socket.create_connection(("127.0.0.1", server.port), 2) as side:
            deadline = time.monotonic() + 6.0
            while time.monotonic() < deadline and "conn_mwrite" not in states:
                time.sleep(0.5)
                side.sendall(b"stats conns\r\n")
                text = b""
                while not text.endswith(b"END\r\n"):
                    text += side.recv(65536)
                states = [
                    line.split()[-1]
                    for line in text.decode().splitlines()
                    if line.endswith(("conn_mwrite", "conn_new_cmd", "conn_read", "conn_parse_cmd"))
                ]
    assert "conn_mwrite" in states, f"no connection left writing: {states}"


@pytest.mark.slow
def test_a_graceful_stop_exits_and_a_forgotten_one_is_a_stuck_shutdown(
    cache_layout: CacheLayout, build_debian
) -> None:  # type: ignore[no-untyped-def]
    code, out, report = _verify(cache_layout, "--scenario", "shutdown", "--soak", "10")
    assert code == 0, out
    assert report is not None
    trial = report["trials"][0]
    assert trial["events"] and trial["events"][0].startswith("SIGUSR1 at 3")
    assert any("exited in" in note for note in trial["notes"]), trial["notes"]
    log = (Path(trial["run_dir"]) / "server.log").read_text()
    assert "Gracefully stopping" in log  # the server itself saw the signal
    code, out, report = _verify(
        cache_layout, "--scenario", "shutdown", "--soak", "10", "--patch", str(SHUTDOWN_FORGOTTEN)
    )
    assert code == 1, out
    assert report is not None
    assert report["verdict"]["hang_class"] == "stuck-shutdown"
    assert report["verdict"]["proof"] == "exit"
    assert "did not exit" in report["verdict"]["headline"]


@pytest.mark.slow
def test_a_disconnect_storm_and_a_pause_happen(
    tmp_path: Path, cache_layout: CacheLayout, pristine
) -> None:  # type: ignore[no-untyped-def]
    workload = _write(tmp_path, "storm.toml", """
name = "storm"
[[group]]
name = "long"
clients = 20
rate = 400
commands = { get = 1 }
[[event]]
at_s = 2
action = "disconnect-storm"
[[event]]
at_s = 4
action = "pause"
duration_s = 1.5
""")  # fmt: skip
    scenario = _write(tmp_path, "s.toml", SCENARIO.format(name="storm", workload=workload))
    code, out, report = _verify(cache_layout, "--scenario", str(scenario), "--soak", "7")
    assert code == 0, out
    assert report is not None
    trial = report["trials"][0]
    assert [e.split(" at ")[0] for e in trial["events"]] == ["disconnect-storm", "pause"]
    # every long-lived client connected once, then again after the storm and the pause
    assert trial["server_counts"]["total_connections"] >= 3 * 20
    kinds = [e["kind"] for e in trial["timeline"]["events"]]
    assert kinds.count("event") == 2


def test_a_pause_keeps_what_was_in_flight_in_the_history(
    tmp_path: Path, cache_layout: CacheLayout, pristine
) -> None:  # type: ignore[no-untyped-def]
    """A pause (the harness pauses the flood to judge a failed probe, too) cancels the
    clients with requests in flight; the server may still do them, so they go into the
    history as indeterminate. Dropped, they made false WRONG RESULTs (upstream 1.5.19 to
    1.6.45 under --amplify auto: a value read that no recorded write wrote). Here every
    value read was written by a recorded operation, and the checker finds no violation."""
    workload = _write(tmp_path, "paused.toml", """
name = "paused"
[[group]]
name = "registers"
clients = 8
pipeline = 8
check = true
keys = { count = 4, prefix = "reg:" }
values = { size = 16 }
commands = { set = 1, get = 1 }
[[event]]
every_s = 0.5
action = "pause"
duration_s = 0.2
""")  # fmt: skip
    scenario = _write(tmp_path, "s.toml", SCENARIO.format(name="paused", workload=workload))
    run = tmp_path / "run"
    code, out, report = _verify(
        cache_layout,
        "--scenario",
        str(scenario),
        "--soak",
        "5",
        "--trials",
        "1",
        "--run-dir",
        str(run),
    )
    assert code == 0, out
    assert report is not None and report["verdict"]["kind"] == "PASS", out
    ops = [
        json.loads(line)
        for path in run.rglob("history-*.jsonl")
        for line in path.read_text().splitlines()
    ]
    written = {op["value"] for op in ops if op["kind"] == "set"}
    read = {op["value"] for op in ops if op["kind"] == "get" and op["result"] == "hit"}
    assert len(read) > 100 and read <= written, sorted(read - written)[:5]
    assert any(op["result"] == "unknown" for op in ops)  # the pauses caught some in flight


def test_the_churn_workload_is_the_flood_and_keeps_its_fast_path() -> None:
    flood = load_scenario("flood")
    churned = with_workload(flood, load_workload("churn"))
    assert churned.workload is None  # nothing left for the slower group clients
    assert churned.flood == FloodShape(400, (("get", 8.0), ("set", 1.0), ("stats", 1.0)))
    assert churned.exercise.emfile
    everything = load_scenario("everything")
    assert everything.flood.concurrency == 200
    assert everything.workload is not None and len(everything.workload.groups) == 11


BAD_WORKLOADS = {
    "unknown command": '[[group]]\nname = "g"\ncommands = { gte = 1 }\n',
    "command of another protocol": '[[group]]\nname = "g"\ncommands = { mg = 1 }\n',
    "unknown protocol": '[[group]]\nname = "g"\nprotocol = "udp"\n',
    "unknown key": '[[group]]\nname = "g"\nclinets = 3\n',
    "unknown distribution": '[[group]]\nname = "g"\nkeys = { popularity = "pareto" }\n',
    "rate out of range": '[[group]]\nname = "g"\nrate = -5\n',
    "key too long": f'[[group]]\nname = "g"\nkeys = {{ prefix = "{"k" * 260}" }}\n',
    "key with a space": '[[group]]\nname = "g"\nkeys = { prefix = "a b" }\n',
    "value above the item size": '[[group]]\nname = "g"\nvalues = { size = 2000000 }\n',
    "binary-only server": '[server]\nprotocol = "binary"\n[[group]]\nname = "g"\n',
    "option naming a file": '[server]\noptions = ["ext_path=/tmp/x:64m"]\n[[group]]\nname = "g"\n',
    "option smuggling an argument": '[server]\nitem_size_max = "1m -l 0.0.0.0"\n[[group]]\nname = "g"\n',
    "a signal that fakes a hang": '[[group]]\nname = "g"\n[[event]]\nat_s = 1\naction = "signal"\nsignal = "SIGSTOP"\n',
    "unjudgeable check": '[[group]]\nname = "g"\ncheck = true\ncommands = { stats = 1 }\n',
    "not toml": "[[group\n",
    "tls not a boolean": '[[group]]\nname = "g"\ntls = "yes"\n',
    "abandon with no delay": '[[group]]\nname = "g"\nabandon = true\n',
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(BAD_WORKLOADS))
def test_bad_workload_files_are_one_line_and_exit_2_before_any_build(
    case: str, tmp_path: Path
) -> None:
    path = _write(tmp_path, "bad.toml", 'name = "bad"\n' + BAD_WORKLOADS[case])
    cache = CacheLayout(tmp_path / "cache")
    done = run_cli("verify", "--source", "debian", "--workload", str(path), cache=cache)
    assert done.returncode == 2, done.stdout + done.stderr
    lines = [x for x in done.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and "bad.toml" in lines[0], done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "cache" / "builds").exists() or not any(
        (tmp_path / "cache" / "builds").iterdir()
    )


def test_what_the_build_lacks_is_left_out_and_listed_never_sent(
    tmp_path: Path, cache_layout: CacheLayout, pristine
) -> None:  # type: ignore[no-untyped-def]
    """Debian's 1.6.18 has no debugtime (a MEMCACHED_DEBUG build's command) and no -o
    made_up_option: both are left out and listed; with nothing else the scenario is NOT
    APPLICABLE (exit 7); beside a group it has, the soak runs without them."""
    only_missing = _write(tmp_path, "missing.toml", """
name = "missing"
[server]
options = ["made_up_option=3"]
[[group]]
name = "debug"
rate = 5
commands = { debugtime = 1 }
""")  # fmt: skip
    scenario = _write(tmp_path, "s1.toml", SCENARIO.format(name="m1", workload=only_missing))
    code, out, _ = _verify(cache_layout, "--scenario", str(scenario), "--soak", "3")
    assert code == 7, out
    assert "debugtime" in out and "NOT APPLICABLE" in out
    both = _write(tmp_path, "both.toml", only_missing.read_text() + """
[[group]]
name = "plain"
rate = 200
commands = { get = 1, set = 1 }
""")  # fmt: skip
    scenario = _write(tmp_path, "s2.toml", SCENARIO.format(name="m2", workload=both))
    code, out, report = _verify(cache_layout, "--scenario", str(scenario), "--soak", "3")
    assert code == 0, out
    assert report is not None
    trial = report["trials"][0]
    left_out = " ".join(trial["clients"]["left_out"])
    assert "debugtime" in left_out and "made_up_option" in left_out
    sent = {row["command"] for row in trial["clients"]["commands"]}
    assert "debugtime" not in sent and {"get", "set"} <= sent


def test_the_matrix_takes_a_workload_for_every_cell(
    tmp_path: Path, cache_layout: CacheLayout, pristine
) -> None:  # type: ignore[no-untyped-def]
    """`matrix --workload` replaces every scenario's clients (and is part of the cells'
    key: the same cell under another workload is soaked, not taken from the cache)."""
    matrix = _write(tmp_path, "gate.toml", """
sources = ["debian"]
scenarios = ["flood"]
trials = 1
soak = 4
[patch_sets]
as-shipped = []
""")  # fmt: skip
    out = tmp_path / "out.json"
    done = run_cli("matrix", str(matrix), "--workload", "incr-race", "--json", str(out),
                   cache=cache_layout)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    cell = json.loads(out.read_text())["cells"][0]
    first_key = cell["key"]
    trial = cell["trials"][0]
    commands = {row["command"] for row in trial["clients"]["commands"]}
    assert {"incr", "decr", "set", "get"} <= commands
    assert trial["check"]["verdict"] == "ok"
    done = run_cli("matrix", str(matrix), "--workload", "kv-mix", "--json", str(out),
                   cache=cache_layout)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    cell = json.loads(out.read_text())["cells"][0]
    assert cell["key"] != first_key, "another workload is another cell (never its cache)"
    assert "mget" in {r["command"] for r in cell["trials"][0]["clients"]["commands"]}


def _items_stat(port: int, name: str) -> int:
    """The sum over slab classes of ``stats items`` counter ``name``."""
    with socket.create_connection(("127.0.0.1", port), 2) as side:
        side.sendall(b"stats items\r\n")
        text = b""
        while not text.endswith(b"END\r\n"):
            text += side.recv(65536)
    return sum(
        int(line.split()[2])
        for line in text.decode().splitlines()
        if line.startswith("STAT items:") and line.split()[1].endswith(f":{name}")
    )


@pytest.mark.parametrize("read_delay_ms", [3000, 0])
def test_pinned_items_block_evictions_in_stats_items(  # type: ignore[no-untyped-def]
    tmp_path: Path, pristine, read_delay_ms: int
) -> None:
    """Slow readers' multi-gets hold references to the items they asked for: in a full
    cache, the evictor meets them at the LRU tail and must skip them, which the server
    counts in `stats items` as lrutail_reflocked. The same readers reading at once pin
    (almost) nothing."""
    workload = parse_workload(
        {
            "group": [
                {"name": "writer", "clients": 1, "rate": 100, "keys": {"count": 2000, "prefix": "p:"},
                 "values": {"size": 100_000}, "commands": {"set": 1}},
                {"name": "seeder", "clients": 1, "rate": 2, "keys": {"count": 16, "prefix": "q:"},
                 "values": {"size": 100_000}, "commands": {"set": 1}},
                {"name": "slow", "clients": 16, "rate": 16, "keys": {"count": 16, "prefix": "q:"},
                 "commands": {"mget": 1}, "mget_keys": 200, "mget_repeat": True,
                 "read_delay_ms": read_delay_ms},
            ]
        },
        "pin",
        None,
    )  # fmt: skip
    # the classic LRU (no maintainer moving fetched items to a warm queue): the pinned
    # items stay where the evictor walks; 4 MB replies outgrow the loopback buffers
    extra = ("-m", "16", "-o", "no_lru_maintainer")
    config = ServerConfig(pristine.binary, threads=2, maxconns=64, extra_args=extra)
    with MemcachedServer(config, tmp_path / "server.log") as server:
        flood = FloodConfig(
            port=server.port, concurrency=0, processes=1, duration_s=10.0, groups=workload.groups,
            report_dir=str(tmp_path / "clients"), start_method="spawn",
        )  # fmt: skip
        with Flood(flood):
            time.sleep(10.5)
        reflocked = _items_stat(server.port, "lrutail_reflocked")
        evicted = _items_stat(server.port, "evicted")
    assert evicted > 100, evicted  # the cache was full: the evictor ran at the tail
    print(f"read_delay_ms={read_delay_ms}: lrutail_reflocked {reflocked}, evicted {evicted}")
    if read_delay_ms:
        assert reflocked >= 3, f"{reflocked} evictions met a pinned item"
    else:
        assert reflocked <= 1, f"{reflocked} evictions met a pinned item"


def test_a_rate_limited_client_sends_at_once_and_a_sound_crawler_ends_its_crawl(
    cache_layout: CacheLayout, pristine
) -> None:  # type: ignore[no-untyped-def]
    """lru-crawler-idle sends one `lru_crawler crawl all` every 20 s: the first goes at the
    start (it went after one interval before, and a 4 s soak then sent none), and 1.6.18's
    crawler, woken by it, ends the crawl: no stuck-progress on a sound build."""
    code, out, report = _verify(
        cache_layout, "--scenario", "lru-crawler-idle", "--soak", "4", "--trials", "1"
    )
    assert code == 0, out
    assert report is not None and report["verdict"]["kind"] == "PASS", out
    (row,) = report["trials"][0]["clients"]["commands"]
    # one crawl sent and answered: OK, or BUSY if the LRU maintainer's own crawl ran then
    assert row["command"] == "lru_crawler_crawl" and sum(row["counts"].values()) == 1, row
    assert set(row["counts"]) <= {"ok", "busy"}, row
