"""`--amplify auto` through verify and bisect, on Debian's real memcached: the generic
flood scenario, no knowledge of the bug, and the race found, proven and named."""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from verifier.amplify.auto import AutoMemory, Discovery
from verifier.amplify.auto.planner import EXPLOIT_TRIES
from verifier.build.builder import Builder, BuildRequest
from verifier.errors import ExitStatus
from verifier.paths import CacheLayout
from verifier.records.trial import TrialResult
from verifier.run.auto_plan import AutoPlan
from verifier.scenario import load_scenario
from verifier.source.select import SourceChoice
from verifier.verify import SoakPlan, VerifyCore, VerifyOptions
from verifier.vocabulary import AmplifierKind, TrialOutcome

from conftest import LOST_WAKEUP_FIX, MAXCONNS_FIX, RACE_FIXTURE, run_cli
from synthetic_history import History, make_history

pytestmark = pytest.mark.timeout(900)
RECORDED_DISCOVERY = Path(__file__).parent / "fixtures" / "auto" / "discovery-1.6.18.json"
STORE_MAIN = "store:allow_new_conns@main"
ACCEPT_MAIN = "call:accept|accept4:EMFILE@main"
# the listener's EMFILE path (both hangs start there): the last of these stretched is named
RACE_PATH = {
    STORE_MAIN: "store to allow_new_conns by the main thread",
    ACCEPT_MAIN: "accept/accept4 failing with EMFILE on the main thread",
}


def verify(
    cache: CacheLayout, run_dir: Path, *args: str
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    result = run_cli(
        "verify", "--source", "debian", "--scenario", "flood", "--amplify", "auto",
        "--run-dir", str(run_dir), *args, cache=cache,
    )  # fmt: skip
    report = run_dir / "report.json"
    assert report.is_file(), result.stdout + result.stderr
    return result, json.loads(report.read_text())


def _hang_trial(report: dict[str, Any]) -> dict[str, Any]:
    return next(t for t in report["trials"] if t["outcome"] == "hang" and not _other(report, t))


def _other(report: dict[str, Any], trial: dict[str, Any]) -> bool:
    return any(b["trial"] == trial["index"] for b in report["verdict"]["other_bugs"])


@pytest.mark.slow
def test_auto_finds_names_and_remembers_the_1_4_6_self_deadlock(
    cache_layout: CacheLayout, tmp_path: Path
) -> None:
    """With no knowledge of the bug, hunting the self-deadlock in pristine Debian with the
    race put back (its lost wake-ups are other bugs, set aside): the self-deadlock,
    proven by the lock cycle, and the point stretched last on the hung listener thread
    named, with its source line; the memory credits it, and a second verify with the same
    memory stretches that point first.

    Naming is by time, not by cause: on a quiet machine the watchpoints' own traps widen
    this fixture's window enough for the race to strike within seconds whatever is
    stretched (seen here: 3 hunts named stats_lock@main in do_accept_new_conns,
    bump_buf_lock on an LRU thread, and the store to allow_new_conns; in CI, 4 hunts in a
    row struck in the unstretched warm-up). So a hunt that names nothing, or names a point
    off the hung thread (the report says "not on the hung thread"), is run again, up to 8
    times, each with a fresh memory; the race-path points, when named, must carry their
    own source function."""
    hang: dict[str, Any] = {}
    for attempt in range(1, 9):
        memory = tmp_path / f"memory-{attempt}.json"
        hunt = ("--expect", "hang:self-deadlock", "--auto-memory", str(memory))
        result, report = verify(
            cache_layout, tmp_path / f"first-{attempt}", "--patch", str(RACE_FIXTURE), *hunt,
            "--soak", "10", "--trials", "15",
        )  # fmt: skip
        assert result.returncode == ExitStatus.SUCCESS, result.stdout + result.stderr
        assert report["verdict"]["hang_class"] == "self-deadlock"
        assert report["amplifier"].startswith("auto: ")
        hang = _hang_trial(report)
        assert hang["proof"] == "cycle"
        attribution = hang["stretched"].get("attribution")
        if attribution is None:  # struck unstretched: nothing may be named or credited
            assert "stretched last before the hang" not in result.stdout
            points = json.loads(memory.read_text()).get("points", {}) if memory.is_file() else {}
            assert not any(p.get("hangs") for p in points.values()), points
            continue
        if attribution["on_hung_thread"]:
            break
        assert "(not on the hung thread)" in result.stdout
    else:
        pytest.fail(f"8 hunts, none named a point on the hung thread: {hang['stretched']}")
    named = hang["stretched"]["attribution"]
    assert named["main_thread"]  # the listener is the main thread
    assert re.fullmatch(r"\w+\.c:\d+ \(.+\)", named["location"]), named  # file:line (function)
    if named["point"] in RACE_PATH:
        where = {STORE_MAIN: "do_accept_new_conns", ACCEPT_MAIN: "drive_machine"}[named["point"]]
        assert where in named["location"]
        assert RACE_PATH[named["point"]] in result.stdout
    assert named["location"] in result.stdout
    credits = json.loads(memory.read_text())["points"][named["point"]]["hangs"]
    assert credits.get("self-deadlock", 0) >= 1
    again, replay = verify(
        cache_layout, tmp_path / "again", "--patch", str(RACE_FIXTURE), *hunt,
        "--soak", "10", "--trials", "3",
    )  # fmt: skip
    assert again.returncode == ExitStatus.SUCCESS, again.stdout + again.stderr
    first = replay["trials"][0]["stretched"]["selection"]
    assert first["mode"] == "credited" and [p["key"] for p in first["points"]] == [named["point"]]


@pytest.mark.slow
def test_auto_on_a_fixed_build_is_a_bounded_pass_that_says_what_it_covered(
    cache_layout: CacheLayout, tmp_path: Path
) -> None:
    """No false hang on a fixed build (race fixture + the -42 fix, over the lost wake-up
    fix); the PASS says how many candidate points were stretched, and how often."""
    result, report = verify(
        cache_layout, tmp_path, "--patch", str(LOST_WAKEUP_FIX), "--patch", str(RACE_FIXTURE),
        "--patch", str(MAXCONNS_FIX), "--auto-memory", str(tmp_path / "memory.json"),
        "--soak", "8", "--trials", "3",
    )  # fmt: skip
    assert result.returncode == ExitStatus.SUCCESS, result.stdout + result.stderr
    headline = report["verdict"]["headline"]
    assert headline.startswith("PASS (bounded)") and "candidate points stretched" in headline
    assert all(t["stretched"]["selection"]["points"] for t in report["trials"])


@pytest.mark.slow
def test_auto_finds_the_lost_wakeup_in_pristine_debian(
    cache_layout: CacheLayout, tmp_path: Path
) -> None:
    """From scratch (an empty memory), the lost wake-up: proven from the state, and the
    point stretched last on the hung listener named (seen: its failed accept(), its store
    to allow_new_conns, and conn_lock, which the listener takes on that path). A stall the
    stretches make themselves (stores to allow_new_conns stretched on every thread, under
    conn_lock: a lock convoy that starved the listener past the 3 s window and was once
    taken for an `unknown` hang) drains while the failed probe is judged, as the stretches
    pause. Naming is by time (see the test above): a hunt that names nothing on the hung
    thread is run again, up to 4 times, each with a fresh memory."""
    hang: dict[str, Any] = {}
    for attempt in range(1, 5):
        result, report = verify(
            cache_layout, tmp_path / f"hunt-{attempt}",
            "--auto-memory", str(tmp_path / f"memory-{attempt}.json"),
            "--expect", "hang:listener-lost-wakeup", "--soak", "15", "--trials", "20",
        )  # fmt: skip
        assert result.returncode == ExitStatus.SUCCESS, result.stdout + result.stderr
        hang = _hang_trial(report)
        assert hang["proof"] == "state"
        named = hang["stretched"].get("attribution")
        if named is not None and named["on_hung_thread"]:
            break
    else:
        pytest.fail(f"4 hunts, none named a point on the hung thread: {hang['stretched']}")
    assert named["main_thread"], named  # the listener is the main thread
    if named["point"] in RACE_PATH:
        where = {STORE_MAIN: "do_accept_new_conns", ACCEPT_MAIN: "drive_machine"}[named["point"]]
        assert where in named["location"], named


@pytest.mark.slow
def test_auto_hunts_the_class_asked_for_past_another_bug(
    cache_layout: CacheLayout, tmp_path: Path
) -> None:
    """Hunting the self-deadlock in a build that also has the lost wake-up: a memory that
    (wrongly) credits the failed accept() makes the first trials stretch it; their lost
    wake-ups are other bugs, listed, never credited to the hunt; the deck takes over and
    the self-deadlock is found."""
    memory = tmp_path / "memory.json"
    memory.write_text(
        json.dumps(
            {
                "format": 1,
                "points": {
                    ACCEPT_MAIN: {
                        "trials": 1, "triggers": 1, "hangs": {"self-deadlock": 1},
                        "hang_delay_us": 50000,
                    }
                },
            }
        )
    )  # fmt: skip
    result, report = verify(
        cache_layout, tmp_path / "run", "--patch", str(RACE_FIXTURE),
        "--auto-memory", str(memory), "--expect", "hang:self-deadlock",
        "--soak", "10", "--trials", "20",
    )  # fmt: skip
    assert result.returncode == ExitStatus.SUCCESS, result.stdout + result.stderr
    verdict = report["verdict"]
    assert verdict["kind"] == "HANG" and verdict["hang_class"] == "self-deadlock"
    others = verdict["other_bugs"]
    assert others and {b["class"] for b in others} == {"listener-lost-wakeup"}
    points = json.loads(memory.read_text())["points"]
    assert points[ACCEPT_MAIN]["hangs"]["self-deadlock"] == 1  # the seed: no lost wake-up added
    # each lost wake-up is credited under its own class, to the point its trial named (a
    # deck trial may name another point, or none when nothing was stretched just before it)
    named: dict[str, int] = {}
    for bug in others:
        trial = next(t for t in report["trials"] if t["index"] == bug["trial"])
        attribution = (trial.get("stretched") or {}).get("attribution")
        if attribution is not None:
            named[attribution["point"]] = named.get(attribution["point"], 0) + 1
    credited = {
        key: rec["hangs"]["listener-lost-wakeup"]
        for key, rec in points.items()
        if rec["hangs"].get("listener-lost-wakeup")
    }
    assert credited == named


@pytest.fixture(scope="module")
def history(debian_source, tmp_path_factory: pytest.TempPathFactory) -> History:  # type: ignore[no-untyped-def]
    assert debian_source.default_ref
    return make_history(
        debian_source.git.path,
        debian_source.default_ref,
        tmp_path_factory.mktemp("history") / "repo",
    )


@pytest.mark.slow
def test_bisect_with_auto_finds_the_culprit(
    cache_layout: CacheLayout, history: History, tmp_path: Path
) -> None:
    """The generic scenario and the auto amplifier, bisecting: a verify of the bad end
    learns where to stretch, and the bisect that follows stretches it first on every
    commit (placed by its name in each build, with no discovery)."""
    memory = tmp_path / "memory.json"
    learned = run_cli(
        "verify", "--repo", str(history.path), "--ref", history.regression_bad,
        "--scenario", "flood", "--amplify", "auto", "--auto-memory", str(memory),
        "--soak", "10", "--trials", "15", "--run-dir", str(tmp_path / "learn"),
        cache=cache_layout,
    )  # fmt: skip
    assert learned.returncode == ExitStatus.BUG_SEEN, learned.stdout + learned.stderr
    result = run_cli(
        "bisect", "--repo", str(history.path), "--scenario", "flood", "--amplify", "auto",
        "--auto-memory", str(memory), "--good", history.good,
        "--bad", history.regression_bad, "--max-soak", "10", "--endpoint-soak", "30",
        "--min-soak", "3", "--restart", cache=cache_layout,
    )  # fmt: skip
    assert result.returncode == ExitStatus.SUCCESS, result.stdout + result.stderr
    assert f"introduced by {history.introduce[:12]}" in result.stdout
    report = json.loads(
        Path(
            next(x for x in result.stdout.splitlines() if x.startswith("report: "))[8:]
        ).read_text()
    )
    bad_end = next(s for s in report["steps"] if s["role"] == "bad end")
    assert bad_end["kind"] == "hang"  # the first try: the learned point was stretched first
    assert bad_end["stretched"]  # and the step says what it stretched


def test_one_core_keeps_one_auto_plan_per_build_and_writes_what_it_stretched(
    builder: Builder, debian_source: SourceChoice, cache_layout: CacheLayout, tmp_path: Path
) -> None:
    """Seen on upstream 1.4.6: bisect prepares its bad end once per try, and each try made a
    fresh auto plan, so all 12 tries stretched the same credited point (one that had
    missed); each trial.json also had an empty ``stretched`` (written before auto learned).
    Through one core, the misses count across prepares: after ``EXPLOIT_TRIES`` misses the
    next credited point is stretched; a real trial's trial.json says what it stretched."""
    recorded = Discovery.load(RECORDED_DISCOVERY)  # Debian's 1.6.18: the same names
    memory = AutoMemory(tmp_path / "memory.json")
    first, second = STORE_MAIN, "lock:stats_lock@any"
    for key, seconds in ((first, 1.0), (second, 200.0)):
        memory.note_trial(key, 1, seconds)
        point = next(p for p in recorded.points() if p.key == key)
        memory.note_hang(key, "self-deadlock", 1_000, point.to_json())
    memory.save()
    core = VerifyCore(builder, cache_layout.tools, auto_dir=tmp_path / "auto")
    options = VerifyOptions(
        load_scenario("flood"), amplify=AmplifierKind.AUTO, auto_memory=memory.path
    )
    assert debian_source.default_ref
    request = BuildRequest(debian_source, debian_source.default_ref)
    stretched = []
    for attempt in range(EXPLOIT_TRIES + 1):
        with core.prepare(request, options) as prepared:
            plan = prepared.amplifier
            assert isinstance(plan, AutoPlan)
            plan.for_trial(1)
            stretched.append([p.key for p in plan.selections[1][0].points])
            run_dir = tmp_path / f"try-{attempt}"
            plan.observe(TrialResult(1, TrialOutcome.CLEAN, 20.0, str(run_dir)))
    assert stretched == [[first]] * EXPLOIT_TRIES + [[second]]
    # another build's plan (the next commit of a bisect) learns into the same memory
    # object: a plan kept since an earlier step must not save over what it learned
    with core.prepare(replace(request, patches=(RACE_FIXTURE,)), options) as other:
        assert isinstance(other.amplifier, AutoPlan) and other.amplifier is not plan
        assert other.amplifier.memory is plan.memory
    with core.prepare(request, options) as prepared:
        (trial,) = core.soak(prepared, tmp_path / "real", SoakPlan(1, 2.0))
    saved = json.loads((Path(trial.run_dir) / "trial.json").read_text())
    assert saved["stretched"]["selection"]["points"][0]["key"] == second
    assert saved["stretched"]["selection"]["mode"] == "credited"
