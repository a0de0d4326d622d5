"""--amplify auto: discovery on real floods, the planner on recorded data, and an end-to-end
hunt on the 1.4.6 race fixture that must name allow_new_conns stored by the listener."""

from __future__ import annotations

import json
import math
import subprocess
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest

from verifier.amplify.auto import (
    AutoMemory,
    AutoPlanner,
    Discovery,
    Point,
    SelectionMode,
)
from verifier.amplify.auto.planner import (
    ATTRIBUTION_WINDOW_S,
    DELAYS_US,
    EXPLOIT_TRIES,
    Selection,
    attribute,
    weight,
)
from verifier.amplify.auto.sweep import Sweep
from verifier.amplify.auto.symbols import parse_nm, symbol_at, watch_span
from verifier.amplify.counters import AmplifierStatus, RuleStatus
from verifier.amplify.spec import InterposeRule, LockRule, WatchRule, encode_rules
from verifier.errors import BadInput
from verifier.evidence.gdb import stack_functions
from verifier.run.discovery import discover
from verifier.run.server import ServerConfig
from verifier.stress import FloodConfig
from verifier.vocabulary import HangClass, TrialOutcome

ROOT = Path(__file__).resolve().parent.parent
RECORDED = ROOT / "tests" / "fixtures" / "auto" / "discovery-1.6.18.json"
RACE_FIXTURE = ROOT / "tests" / "fixtures" / "patches" / "reintroduce-maxconns-race.diff"
MAIN_TID = 1000
SELF = HangClass.SELF_DEADLOCK.value
LOST = HangClass.LOST_WAKEUP.value
STORE_MAIN = "store:allow_new_conns@main"
ACCEPT_MAIN = "call:accept|accept4:EMFILE@main"


@pytest.fixture
def recorded() -> Discovery:
    return Discovery.load(RECORDED)


def status_for(rules: list[RuleStatus], bias: int = 0x5000_0000) -> AmplifierStatus:
    return AmplifierStatus(
        pid=MAIN_TID,
        main_tid=MAIN_TID,
        load_bias=bias,
        config_error=0,
        message="",
        crash_signal=0,
        rules=tuple(rules),
    )


def fired(
    triggers: int,
    last_ns: int,
    tid: int = MAIN_TID,
    main_last_ns: int | None = None,
    pc: int = 0x5000_1234,
) -> RuleStatus:
    """A rule's status after ``triggers`` stretches, the last at ``last_ns`` on ``tid``."""
    main_ns = last_ns if tid == MAIN_TID else (main_last_ns or 0)
    return RuleStatus(
        kind="watch",
        armed=1,
        arm_errno=0,
        events=triggers,
        matches=triggers,
        triggers=triggers,
        main_triggers=triggers if main_ns else 0,
        slept_ns=triggers * 1000,
        last_tid=tid,
        last_ns=last_ns,
        last_pc=pc,
        main_last_ns=main_ns,
        main_last_pc=pc if main_ns else 0,
        first_ns=last_ns,
    )


def idle() -> RuleStatus:
    return fired(0, 0)


# ---- symbols ----------------------------------------------------------------------------


NM_TEXT = """\
000000000003ab04 0000000000000001 d allow_new_conns\t/build/tree/memcached.c:155
000000000003b208 0000000000000008 b storage\t/build/tree/slabs.c:50
000000000004c960 0000000000000008 b storage\t/build/tree/crawler.c:60
000000000003ab00 0000000000000004 d use_accept4.3\t/build/tree/memcached.c:2900
000000000003ac48 0000000000000001 b completed.0
000000000003ac40 0000000000000008 B stderr@GLIBC_2.2.5
000000000003ac50 0000000000000008 B __dso_handle
0000000000030000 0000000000000010 R read_only_table\t/build/tree/memcached.c:10
000000000003b000 0000000000000000 b empty_thing
0000000000048a60 0000000000000028 B conn_lock\t/build/tree/thread.c:40
0000000000001000 0000000000000020 T main\t/build/tree/memcached.c:5000
"""


def test_parse_nm_keeps_the_programs_data_objects_with_stable_keys() -> None:
    symbols = parse_nm(NM_TEXT)
    assert [(s.name, s.key) for s in symbols] == [
        ("use_accept4.3", "use_accept4"),  # the compiler's numbering is not a name
        ("allow_new_conns", "allow_new_conns"),
        ("storage", "slabs.c:storage"),  # ambiguous: qualified by its file
        ("conn_lock", "conn_lock"),
        ("storage", "crawler.c:storage"),
    ]
    conn_lock = symbols[3]
    assert symbol_at(symbols, 0x48A60 + 24) == conn_lock and symbol_at(symbols, 0x48A88) is None


def test_watch_span_fits_a_debug_register() -> None:
    assert watch_span(0x3AB04, 1) == (0x3AB04, 1)
    assert watch_span(0x3AB04, 4) == (0x3AB04, 4)
    assert watch_span(0x48A60, 40) == (0x48A60, 8)  # a struct: its first aligned word
    assert watch_span(0x48A64, 40) == (0x48A64, 4)
    assert watch_span(0x48A61, 3) == (0x48A61, 1)


# ---- recorded discovery -> points -------------------------------------------------------


def test_recorded_discovery_gives_the_known_points(recorded: Discovery) -> None:
    assert Discovery.from_json(json.loads(json.dumps(recorded.to_json()))) == recorded
    (flag,) = [v for v in recorded.variables if v.key == "allow_new_conns"]
    assert flag.shared and flag.main_writes > 0 and flag.other_writes > 0
    points = {p.key: p for p in recorded.points()}
    assert {STORE_MAIN, "store:allow_new_conns@any", ACCEPT_MAIN} <= set(points)
    # mutexes seen contended are lock points, not store points
    assert "lock:conn_lock@any" in points and "store:conn_lock@any" not in points
    # every point makes a valid rule; a trial of three encodes
    store, accept = points[STORE_MAIN], points[ACCEPT_MAIN]
    rule = store.rule(20_000)
    assert isinstance(rule, WatchRule)
    assert (rule.cond, rule.thread, rule.symoff, rule.length) == ("any", "main", flag.symoff, 1)
    call = accept.rule(50_000)
    assert isinstance(call, InterposeRule)
    assert (call.functions, call.ret, call.errno_name, call.thread) == (
        ("accept", "accept4"),
        -1,
        "EMFILE",
        "main",
    )
    lock = points["lock:conn_lock@any"].rule(5_000)
    assert isinstance(lock, LockRule) and lock.length == 40 and lock.site is None
    for p in points.values():
        encode_rules([p.rule(1000)])
    assert Point.from_json(store.to_json()) == store


def test_discovery_record_rejects_bad_input(tmp_path: Path) -> None:
    bad = tmp_path / "d.json"
    bad.write_text("{not json")
    with pytest.raises(BadInput, match="not JSON"):
        Discovery.load(bad)
    bad.write_text(json.dumps({"format": 99}))
    with pytest.raises(BadInput, match="format"):
        Discovery.load(bad)
    with pytest.raises(BadInput, match="not found"):
        Discovery.load(tmp_path / "missing.json")


# ---- selection --------------------------------------------------------------------------


def sequence(planner: AutoPlanner, trials: int) -> list[tuple[tuple[str, int], ...]]:
    out = []
    for t in range(trials):
        sel = planner.choose(t)
        out.append(tuple((p.key, d) for p, d in zip(sel.points, sel.delays_us, strict=True)))
        planner.record(sel, TrialOutcome.CLEAN, None, None, None)
    return out


def test_selection_is_random_but_seeded(recorded: Discovery) -> None:
    first = sequence(AutoPlanner(recorded, AutoMemory(), SELF, rng_seed=7), 40)
    again = sequence(AutoPlanner(recorded, AutoMemory(), SELF, rng_seed=7), 40)
    other = sequence(AutoPlanner(recorded, AutoMemory(), SELF, rng_seed=8), 40)
    assert first == again and first != other
    sizes = Counter(len(s) for s in first)
    assert set(sizes) == {1, 2, 3}  # d-1 points per trial, 1..max_points


def test_every_point_and_delay_is_covered(recorded: Discovery) -> None:
    n = len(recorded.points())
    for seed in range(20):
        planner = AutoPlanner(recorded, AutoMemory(), SELF, rng_seed=seed)
        trials = sequence(planner, n * len(DELAYS_US))
        assert {k for s in trials[:n] for k, _ in s} == {p.key for p in recorded.points()}
        assert {pair for s in trials for pair in s} == {
            (p.key, d) for p in recorded.points() for d in DELAYS_US
        }
    cov = planner.coverage()
    assert cov["candidates"] == cov["selected"] == n and cov["trials"] == n * len(DELAYS_US)


def test_hot_points_come_first(recorded: Discovery) -> None:
    """The first card is point p with probability w_p / W (Efraimidis-Spirakis)."""
    points = recorded.points()
    total = sum(weight(p) for p in points)
    firsts = Counter(
        AutoPlanner(recorded, AutoMemory(), SELF, rng_seed=seed).choose(0).points[0].key
        for seed in range(3000)
    )
    hot = max(points, key=weight)
    cold = min(points, key=weight)
    assert weight(hot) > 3 * weight(cold)
    for p in (hot, cold):
        expected = 3000 * weight(p) / total
        assert abs(firsts[p.key] - expected) < 4 * math.sqrt(expected) + 5
    assert firsts[hot.key] > firsts[cold.key]


def test_no_points_means_nothing_to_stretch(recorded: Discovery) -> None:
    empty = replace(recorded, variables=(), calls=(), mutexes=())
    planner = AutoPlanner(empty, AutoMemory(), None, rng_seed=1)
    sel = planner.choose(0)
    assert sel.rules == [] and "nothing to stretch" in sel.describe()
    assert planner.coverage_text().startswith("auto: 0 of 0 candidate points")


# ---- attribution ------------------------------------------------------------------------


def single(planner: AutoPlanner, key: str, delay_us: int = 20_000) -> Selection:
    """A trial that stretches only ``key``."""
    (point,) = [p for p in planner.points if p.key == key]
    return Selection(0, (point,), (delay_us,), [point.rule(delay_us)], SelectionMode.DECK)


def test_attribution_names_the_last_trigger_before_the_hang(recorded: Discovery) -> None:
    points = {p.key: p for p in recorded.points()}
    a, b = points[STORE_MAIN], points[ACCEPT_MAIN]
    rules = [a.rule(20_000), b.rule(50_000)]
    sel = Selection(0, (a, b), (20_000, 50_000), rules, SelectionMode.DECK)
    s = 1_000_000_000
    status = status_for([fired(3, 100 * s), fired(5, 102 * s)])
    assert attribute(sel, status, 103 * s, None, None).point.key == ACCEPT_MAIN
    named = attribute(sel, status, 101 * s, None, None)  # b's last stretch came after the hang
    assert named.point.key == STORE_MAIN and named.before_hang_s == pytest.approx(1.0)
    assert named.main_thread and named.delay_us == 20_000 and named.triggers == 3
    # a worker's later trigger does not hide the listener's (the hung thread, by default)
    worker = status_for([fired(3, 100 * s), fired(9, 102 * s, tid=1001, main_last_ns=99 * s)])
    assert attribute(sel, worker, 103 * s, None, None).point.key == STORE_MAIN
    assert attribute(sel, worker, 103 * s, 1001, None).point.key == ACCEPT_MAIN
    # no stretch of the hung thread in the window: another thread's, marked as weaker
    late = status_for([fired(3, 90 * s), fired(9, 102 * s, tid=1001, main_last_ns=89 * s)])
    weak = attribute(sel, late, 103 * s, None, None)
    assert weak.point.key == ACCEPT_MAIN and not weak.on_hung_thread and weak.tid == 1001
    assert "not on the hung thread" in weak.describe()
    assert named.on_hung_thread
    # a stretch long before the hang, or before the last good probe, did not cause it
    assert attribute(sel, status, 103 * s + int(ATTRIBUTION_WINDOW_S * s), None, None) is None
    assert attribute(sel, status, 103 * s, None, None, last_good_ns=102 * s).point == b
    assert attribute(sel, status, 103 * s, None, None, last_good_ns=103 * s) is None
    assert attribute(sel, status_for([idle(), idle()]), 103 * s, None, None) is None


TWO_FUNCTIONS_C = r"""
volatile int flag, other;
__attribute__((noinline)) void set_flag_under_the_lock(void) { flag = 1; flag = 2; }
__attribute__((noinline)) void bump_elsewhere(void) { other = 1; other = 2; }
int main(void) { set_flag_under_the_lock(); bump_elsewhere(); return 0; }
"""


def test_the_attribution_says_whether_its_stretch_is_in_the_hung_frames(
    recorded: Discovery, tmp_path: Path
) -> None:
    """The last stretch is named; with a deadlocked thread's frames known, the
    attribution says whether its code is in them (a hint, not a choice: a tail call
    drops frames). Without them (no gdb evidence, or not a deadlock), it says nothing."""
    src = tmp_path / "two.c"
    src.write_text(TWO_FUNCTIONS_C)
    prog = tmp_path / "two"
    subprocess.run(["cc", "-O0", "-g", "-no-pie", "-o", str(prog), str(src)], check=True)
    nm = subprocess.run(["nm", str(prog)], capture_output=True, text=True, check=True).stdout
    symbols = [line.split() for line in nm.splitlines() if " T " in line]
    address = {name: int(value, 16) for value, _, name in symbols}
    points = {p.key: p for p in recorded.points()}
    a, b = points[STORE_MAIN], points[ACCEPT_MAIN]
    rules = [a.rule(20_000), b.rule(50_000)]
    sel = Selection(0, (a, b), (20_000, 50_000), rules, SelectionMode.DECK)
    s = 1_000_000_000
    status = status_for(
        [
            fired(3, 100 * s, pc=address["set_flag_under_the_lock"] + 6),
            fired(5, 102 * s, pc=address["bump_elsewhere"] + 6),
        ],
        bias=0,
    )
    in_frames = frozenset({"bump_elsewhere", "main"})
    named = attribute(sel, status, 103 * s, None, prog, hung_functions=in_frames)
    assert named is not None and named.point.key == ACCEPT_MAIN and named.on_hung_stack
    assert named.location is not None and named.location.function == "bump_elsewhere"
    unframed = attribute(sel, status, 103 * s, None, prog)
    assert unframed is not None and unframed.point.key == ACCEPT_MAIN
    assert unframed.on_hung_stack is None
    elsewhere = frozenset({"set_flag_under_the_lock", "main"})
    outside = attribute(sel, status, 103 * s, None, prog, hung_functions=elsewhere)
    assert outside is not None and outside.point.key == ACCEPT_MAIN  # still the last one
    assert outside.on_hung_stack is False and "not on the hung stack" in outside.describe()


def test_frames_of_a_gdb_backtrace_are_read_as_function_names() -> None:
    stack = (
        '    Thread 1 (Thread 0x7f (LWP 2377) "memcached"):\n'
        "    #0  futex_wait (private=0, expected=2) at ../futex-internal.h:146\n"
        "    #3  ___pthread_mutex_lock (mutex=0x55 <conn_lock>) at pthread_mutex_lock.c:93\n"
        "    #4  0x000055983a58e0a7 in accept_new_conns (do_accept=true) at thread.c:398\n"
        "    #7  0x00007f93ca3dc4a2 in ?? () from /lib/libevent-2.1.so.7\n"
    )
    assert stack_functions(stack) == {"futex_wait", "___pthread_mutex_lock", "accept_new_conns"}


def test_any_thread_stretch_on_the_listener_is_named_by_its_main_sibling(
    recorded: Discovery,
) -> None:
    planner = AutoPlanner(recorded, AutoMemory(), SELF, 1)
    sel = single(planner, "store:allow_new_conns@any")
    s = 1_000_000_000
    status = status_for([fired(40, 100 * s, tid=1001, main_last_ns=99 * s)])
    named = planner.record(sel, TrialOutcome.HANG, SELF, status, 101 * s)
    assert named is not None and named.point.key == STORE_MAIN and named.tid == MAIN_TID
    assert "store to allow_new_conns by the main thread" in named.describe()


# ---- learning ---------------------------------------------------------------------------


def test_a_credited_point_is_chosen_first_and_survives_save_load(
    recorded: Discovery, tmp_path: Path
) -> None:
    path = tmp_path / "memory" / "auto.json"
    memory = AutoMemory.load(path)  # no file yet: empty
    planner = AutoPlanner(recorded, memory, SELF, 3)
    sel = single(planner, STORE_MAIN, 5_000)
    s = 1_000_000_000
    named = planner.record(sel, TrialOutcome.HANG, SELF, status_for([fired(2, 50 * s)]), 51 * s)
    assert named is not None and named.point.key == STORE_MAIN
    memory.save()
    assert [p.name for p in path.parent.iterdir()] == ["auto.json"]  # atomic: no temp file
    loaded = AutoMemory.load(path)
    assert loaded == AutoMemory(path, memory.points)
    assert loaded.credits(STORE_MAIN, SELF) == 1 and loaded.credits(STORE_MAIN, LOST) == 0
    # another run (another seed, another commit's discovery with the same names)
    moved = replace(
        recorded,
        variables=tuple(replace(v, symoff=v.symoff + 0x40) for v in recorded.variables),
    )
    for seed in (1, 2, 3):
        nxt = AutoPlanner(moved, loaded, SELF, seed).choose(0)
        assert nxt.mode is SelectionMode.CREDITED
        assert [p.key for p in nxt.points] == [STORE_MAIN] and nxt.delays_us == (5_000,)
        (rule,) = nxt.rules
        assert isinstance(rule, WatchRule) and rule.symoff == sel.points[0].symoff + 0x40


def test_a_hang_of_another_class_is_not_credited_for_this_hunt(recorded: Discovery) -> None:
    memory = AutoMemory()
    planner = AutoPlanner(recorded, memory, SELF, 3)
    sel = single(planner, ACCEPT_MAIN)
    s = 1_000_000_000
    named = planner.record(sel, TrialOutcome.HANG, LOST, status_for([fired(4, 10 * s)]), 11 * s)
    assert named is not None and named.point.key == ACCEPT_MAIN  # named, but...
    assert memory.credits(ACCEPT_MAIN, SELF) == 0 and memory.credits(ACCEPT_MAIN, LOST) == 1
    assert AutoPlanner(recorded, memory, SELF, 3).choose(0).mode is SelectionMode.DECK
    for hunted in (LOST, None):  # hunting that class, or any hang: credited
        assert [p.key for p in AutoPlanner(recorded, memory, hunted, 3).choose(0).points] == [
            ACCEPT_MAIN
        ]


def test_a_stretch_on_another_thread_is_named_but_not_credited(recorded: Discovery) -> None:
    """Seen on the race fixture: a worker's store to slabs_lock came last before the
    listener's self-deadlock; named weakly, never credited (it would lead the next hunt)."""
    memory = AutoMemory()
    planner = AutoPlanner(recorded, memory, SELF, 3)
    sel = single(planner, "store:allow_new_conns@any")
    s = 1_000_000_000
    worker = status_for([fired(4, 10 * s, tid=1001)])
    named = planner.record(sel, TrialOutcome.HANG, SELF, worker, 11 * s)
    assert named is not None and not named.on_hung_thread
    assert memory.credits("store:allow_new_conns@any", SELF) == 0
    listener = status_for([fired(4, 10 * s)])
    named = planner.record(sel, TrialOutcome.HANG, SELF, listener, 11 * s)
    assert named is not None and named.on_hung_thread and memory.credits(named.point.key, SELF) == 1


def test_a_credited_point_that_keeps_missing_yields_to_the_deck(recorded: Discovery) -> None:
    memory = AutoMemory()
    memory.note_hang(STORE_MAIN, SELF, 20_000)
    planner = AutoPlanner(recorded, memory, SELF, 5)
    modes = []
    for t in range(EXPLOIT_TRIES + 2):
        sel = planner.choose(t)
        modes.append(sel.mode)
        planner.record(sel, TrialOutcome.CLEAN, None, status_for([fired(3, 1)] * 3), None)
    assert modes == [SelectionMode.CREDITED] * EXPLOIT_TRIES + [SelectionMode.DECK] * 2
    assert memory.points[STORE_MAIN].trials >= EXPLOIT_TRIES
    assert memory.points[STORE_MAIN].triggers >= 3 * EXPLOIT_TRIES
    text = planner.coverage_text()
    assert text.startswith("auto: ") and STORE_MAIN in text


def test_credited_points_are_ranked_by_hazard_not_by_count_and_name(
    recorded: Discovery, tmp_path: Path
) -> None:
    """Seen on upstream 1.4.6: a verify credited stats_lock for a lost wake-up after 60 s
    stretched and allow_new_conns for the self-deadlock after 1 s. Ranked by count (a
    tie) and then by name, a bisect hunting any hang stretched stats_lock first, every
    try; by hangs per second stretched, the point that hangs at once comes first."""
    slow, fast = "lock:stats_lock@any", STORE_MAIN
    assert slow < fast  # the old tie-break picks the slow one
    memory = AutoMemory(tmp_path / "auto.json")
    for key, cls, seconds in ((slow, LOST, 60.0), (fast, SELF, 1.0)):
        memory.note_trial(key, 3, seconds)
        point = next(p for p in recorded.points() if p.key == key)
        memory.note_hang(key, cls, 1_000, point.to_json())
    memory.save()
    loaded = AutoMemory.load(memory.path)  # type: ignore[arg-type]
    assert loaded.points[slow].stretched_s == 60.0
    assert [p["name"] for p in loaded.credited_points(None)] == ["allow_new_conns", "stats_lock"]
    for seed in (1, 2, 3):
        sel = AutoPlanner(recorded, loaded, None, seed).choose(0)
        assert sel.mode is SelectionMode.CREDITED and [p.key for p in sel.points] == [fast]
    # a credited point that keeps missing sinks below the other (its seconds count)
    planner = AutoPlanner(recorded, loaded, None, 1)
    sel = planner.choose(0)
    planner.record(sel, TrialOutcome.CLEAN, None, status_for([fired(2, 1)]), None, seconds=90.0)
    assert loaded.hazard(fast, None) < loaded.hazard(slow, None)
    assert [p.key for p in AutoPlanner(recorded, loaded, None, 2).choose(0).points] == [slow]


def test_memory_rejects_a_bad_file(tmp_path: Path) -> None:
    path = tmp_path / "auto.json"
    path.write_text("[1, 2]")
    with pytest.raises(BadInput, match="not a format-1"):
        AutoMemory.load(path)
    with pytest.raises(BadInput, match="no file"):
        AutoMemory().save()


# ---- real floods ------------------------------------------------------------------------


def recipe_args(build) -> tuple[str, ...]:  # type: ignore[no-untyped-def]
    from verifier.run.server import server_options_for

    options = [(o.args, o.when_help_mentions) for o in build.recipe.server_options]
    return tuple(server_options_for(build.binary, options))


def run_discovery(build, cache_layout, out_dir: Path) -> Discovery:  # type: ignore[no-untyped-def]
    args = recipe_args(build)
    assert args == ("-o", "no_maxconns_fast")  # otherwise 1.6 never reaches EMFILE
    config = ServerConfig(binary=build.binary, threads=2, maxconns=64, extra_args=args)
    flood = FloodConfig(
        concurrency=400, mix=(("get", 0.8), ("set", 0.1), ("stats", 0.1)), start_method="spawn"
    )
    return discover(build.binary, config, flood, cache_layout.root / "tools", out_dir)


def test_discovery_on_a_pristine_flood(pristine, cache_layout, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    found = run_discovery(pristine, cache_layout, tmp_path)
    (flag,) = [v for v in found.variables if v.key == "allow_new_conns"]
    assert flag.shared and flag.main_writes > 0 and flag.other_writes > 0, flag
    assert {t.name for t in flag.threads if not t.main} == {"mc-worker"}
    accept = [c for c in found.calls if c.functions == ("accept", "accept4")]
    assert accept and accept[0].errno_name == "EMFILE" and accept[0].main > 0
    assert accept[0].other == 0 and "memcached.c" in accept[0].where
    assert "lock:conn_lock@any" in {p.key for p in found.points()}
    assert found.scanned > 100 and found.threads >= 4
    assert Discovery.load(tmp_path / "discovery.json") == found


# ---- the sweep: seconds per hypothesis in one server --------------------------------------


def test_a_sweep_measures_the_unstretched_rate_then_switches_hypotheses() -> None:
    """Warm-up all muted; then each hand in turn: one that never fires is left after
    ``idle_s``, one that drops the flood below the floor is a stall (dropped, and its
    seconds count at the rate achieved), one that stretches and flows gets ``dwell_s``
    and, in the next round, another turn."""
    sweep = Sweep([(0,), (1,), (2,)], 3, dwell_s=3.0, idle_s=1.0, warmup_s=1.0, floor=0.25)
    assert sweep.all_muted() == [0, 1, 2]
    assert sweep.tick(0.0, 0, [0, 0, 0]) is None  # warm-up begins
    assert sweep.tick(1.0, 10_000, [0, 0, 0]) == [False, True, True]  # 10,000/s; hand 0
    assert sweep.tick(2.0, 20_000, [0, 0, 0]) == [True, False, True]  # hand 0 idle
    assert sweep.tick(3.0, 21_000, [0, 5, 0]) == [True, True, False]  # hand 1: 1,000/s stall
    assert sweep.tick(4.0, 30_000, [0, 5, 9]) is None  # hand 2 fires and flows
    assert sweep.tick(6.0, 48_000, [0, 5, 20]) == [True, True, False]  # dwell over: round 2
    sweep.finish(7.0, 57_000)
    assert sweep.baseline_rate == 10_000
    assert [s.ended for s in sweep.segments] == ["dwell", "idle", "stall", "dwell", "open"]
    assert sweep.reached() == {0, 1, 2}
    assert sweep.seconds_by_hypothesis() == {0: 1.0, 1: 1.0, 2: 4.0}
    # 7 s of flood: warm-up 1 + idle hand 1 + the stall's second as 0.1 + hand 2's 4 s
    # at 9,000/s as 3.6: 5.7 s of exposure
    assert math.isclose(sweep.weighted_fraction() * 7.0, 5.7)


def test_a_sweep_trial_fits_the_library_and_still_deals_every_point(
    recorded: Discovery,
) -> None:
    planner = AutoPlanner(recorded, AutoMemory(), SELF, 11)
    dealt: Counter[str] = Counter()
    for t in range(6):
        sel = planner.choose_sweep(t)
        assert sel.mode is SelectionMode.SWEEP and sel.hypotheses
        assert len(sel.rules) <= 16 and sum(isinstance(r, WatchRule) for r in sel.rules) <= 4
        assert sorted(i for hand in sel.hypotheses for i in hand) == list(range(len(sel.points)))
        reached = set(range(len(sel.hypotheses) // 2))  # the trial reached half the hands
        for hand in reached:
            dealt.update(sel.points[i].key for i in sel.hypotheses[hand])
        planner.unreached(sel, reached)
    assert set(dealt) == {p.key for p in recorded.points()}  # unreached hands come back
    # a credited point is still stretched alone first
    memory = AutoMemory()
    memory.note_hang(STORE_MAIN, SELF, 1_000)
    sel = AutoPlanner(recorded, memory, SELF, 11).choose_sweep(0)
    assert sel.mode is SelectionMode.CREDITED and [p.key for p in sel.points] == [STORE_MAIN]
