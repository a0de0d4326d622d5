"""verify on Debian's real memcached: real floods, real hangs, real evidence."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from verifier.build.builder import Builder, BuildRequest
from verifier.errors import ExitStatus
from verifier.paths import CacheLayout
from verifier.run import trial as trial_module
from verifier.scenario import load_scenario
from verifier.source.select import choose_source
from verifier.util import pidlog
from verifier.verify import SoakPlan, VerifyCore, VerifyOptions

from conftest import (
    CRASH_FIXTURE,
    FIXTURES,
    LOCK_ORDER_INVERSION,
    LOST_WAKEUP_FIX,
    MAXCONNS_FIX,
    RACE_FIXTURE,
    ROOT,
    _children_named,
    logged_so_far,
    run_cli,
    wait_logged,
)

pytestmark = pytest.mark.timeout(300)


def verify(
    cache: CacheLayout, run_dir: Path, *args: str, env: dict[str, str] | None = None
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    result = run_cli(
        "verify", "--source", "debian", "--run-dir", str(run_dir), *args, cache=cache, env=env
    )
    report_path = run_dir / "report.json"
    assert report_path.is_file(), result.stderr
    return result, json.loads(report_path.read_text())


@pytest.fixture(scope="module")
def race_hang(cache_layout: CacheLayout, tmp_path_factory) -> tuple[Any, dict[str, Any]]:
    run_dir = tmp_path_factory.mktemp("race-hang")
    return verify(
        cache_layout,
        run_dir,
        "--patch",
        str(RACE_FIXTURE),
        "--amplify",
        "watch",
        "--soak",
        "20",
        "--trials",
        "2",
    )


def test_reintroduced_race_hangs_with_the_self_deadlock_signature(race_hang) -> None:
    result, report = race_hang
    assert result.returncode == ExitStatus.BUG_SEEN, result.stderr
    verdict = report["verdict"]
    assert verdict["kind"] == "HANG" and verdict["hang_class"] == "self-deadlock"
    trial = report["trials"][-1]
    assert trial["proof"] == "cycle" and verdict["proof"] == "cycle"  # proven, not timed out
    assert trial["time_to_hang_s"] <= trial["verdict_at_s"]
    details = trial["diagnosis"]["details"]
    assert details["lock"] == "conn_lock" and details["locks"] == ["conn_lock"]
    assert details["chain"] == ["accept_new_conns", "maxconns_handler", "accept_new_conns"]
    assert details["tids"] == [details["lwp"]]  # the graph's thread is gdb's blocked thread
    assert trial["liveness"] == "listener dead, workers alive"
    assert trial["amplifier_triggers"] >= 1 and trial["emfile_episodes"] >= 1
    evidence = Path(trial["run_dir"]) / "evidence"
    backtraces = (evidence / "backtraces.txt").read_text()
    assert "accept_new_conns (do_accept=do_accept@entry=true)" in backtraces
    assert (
        json.loads((evidence / "held-connection-stats.json").read_text())["accepting_conns"] == "0"
    )
    assert "hung thread:" in result.stdout and "pthread_mutex_lock" in result.stdout


# 1.6.18 also has the lost wake-up, and a plain flood sometimes finds it (a true HANG of
# another class). Tests that expect the maxconns-deadlock scenario to PASS therefore build
# over the lost-wake-up fix, so that only the race under test is in play.
OVER_LOST_WAKEUP_FIX = ("--patch", str(LOST_WAKEUP_FIX))


def test_race_plus_fix_is_a_bounded_pass(cache_layout: CacheLayout, tmp_path: Path) -> None:
    result, report = verify(
        cache_layout,
        tmp_path,
        *OVER_LOST_WAKEUP_FIX,
        "--patch",
        str(RACE_FIXTURE),
        "--patch",
        str(MAXCONNS_FIX),
        "--soak",
        "12",
        "--trials",
        "1",
    )
    assert result.returncode == ExitStatus.SUCCESS, result.stdout + result.stderr
    verdict = report["verdict"]
    assert verdict["kind"] == "PASS"
    assert "0 hangs in 12.0 s" in verdict["headline"] and "at 95%" in verdict["headline"]
    assert verdict["rate_upper_bound_per_s"] == pytest.approx(2.9957 / 12, rel=0.01)
    trial = report["trials"][0]
    assert trial["amplifier_triggers"] >= 1  # the window was stretched, and still no hang
    assert trial["emfile_episodes"] >= 1


@pytest.mark.slow
def test_pristine_debian_is_a_bounded_pass(cache_layout: CacheLayout, tmp_path: Path) -> None:
    """No self-deadlock in Debian's 1.6.18. Its lost wake-up may show in this flood too; if
    it does, it is listed as another bug and does not decide this verdict."""
    result, report = verify(
        cache_layout, tmp_path, "--soak", "8", "--trials", "2", "--expect", "pass"
    )
    assert result.returncode == ExitStatus.SUCCESS, result.stdout + result.stderr
    verdict = report["verdict"]
    assert verdict["kind"] == "PASS" and "0 hangs in" in verdict["headline"]
    assert {b["class"] for b in verdict["other_bugs"]} <= {"listener-lost-wakeup"}
    # a natural lost wake-up may end a trial early: the flood is judged over all of them
    assert sum(t["flood"]["cycles"] for t in report["trials"]) > 1000


@pytest.mark.slow
def test_lost_wakeup_fix_still_passes_maxconns_deadlock(
    cache_layout: CacheLayout, tmp_path: Path
) -> None:
    result, report = verify(
        cache_layout,
        tmp_path,
        *OVER_LOST_WAKEUP_FIX,
        "--soak",
        "10",
        "--trials",
        "1",
        "--expect",
        "pass",
    )
    assert result.returncode == ExitStatus.SUCCESS, result.stdout + result.stderr
    assert report["verdict"]["kind"] == "PASS"
    assert report["trials"][0]["flood"]["cycles"] > 1000


def _crashed_under_load(
    cache_layout: CacheLayout, tmp_path: Path, fixture: Path
) -> tuple[dict[str, Any], dict[str, Any]]:
    """One 15 s trial of a crash fixture, no amplifier: the report and its trial."""
    result, report = verify(
        cache_layout, tmp_path, "--patch", str(fixture), "--amplify", "none",
        "--soak", "15", "--trials", "1",
    )  # fmt: skip
    assert result.returncode == ExitStatus.BUG_SEEN, result.stdout + result.stderr
    return report, report["trials"][0]


def test_abort_under_load_is_a_crash(cache_layout: CacheLayout, tmp_path: Path) -> None:
    report, trial = _crashed_under_load(cache_layout, tmp_path, CRASH_FIXTURE)
    assert report["verdict"]["kind"] == "CRASH"
    assert trial["crash_signal"] == "SIGABRT"
    assert "do_accept_new_conns" in trial["crash_backtrace"]


@pytest.mark.slow
def test_an_exit_under_load_is_a_crash_that_quotes_the_server(
    cache_layout: CacheLayout, tmp_path: Path
) -> None:
    """A server that exits on its own (libevent's event_errx, as upstream 1.4.5 did under
    auto) has no signal and no backtrace: its last fatal line is the diagnosis."""
    report, trial = _crashed_under_load(cache_layout, tmp_path, FIXTURES / "exit-under-load.diff")
    said = "[err] event_queue_remove_active: test fixture, not on queue 8"
    assert trial["crash_signal"] == "exit status 1"
    assert trial["crash_message"] == said
    assert f'died by exit status 1 ("{said}")' in report["verdict"]["headline"]


@pytest.mark.slow
def test_saturation_is_never_a_hang(cache_layout: CacheLayout, tmp_path: Path) -> None:
    """A tiny connection limit and a huge flood make new-connection probes fail; the drain
    shows the server alive each time, so the verdict must not be HANG. The lost-wakeup fix
    is applied: pristine 1.6.18 really does lose its listener under this flood, sometimes."""
    scenario = tmp_path / "saturate.toml"
    scenario.write_text(
        'name = "saturate"\nsummary = "flood only"\n'
        "requires_symbols = []\n[server]\nmaxconns = 24\n[flood]\nconcurrency = 3000\n"
        'mix = { get = 1.0 }\n[amplify]\ndefault = "none"\n'
    )
    result, report = verify(
        cache_layout,
        tmp_path / "run",
        "--scenario",
        str(scenario),
        *OVER_LOST_WAKEUP_FIX,
        "--soak",
        "10",
        "--trials",
        "2",
        "--probe-client",
        "socket",
    )
    assert report["verdict"]["kind"] != "HANG", result.stdout
    trials = report["trials"]
    assert [t["outcome"] for t in trials] == ["clean", "clean"]
    saturated = sum(t["saturation_episodes"] for t in trials)
    assert saturated >= 1, "the flood never saturated: the test proves nothing"


def test_lost_wakeup_hangs_pristine_debian(cache_layout: CacheLayout, tmp_path: Path) -> None:
    result, report = verify(
        cache_layout,
        tmp_path,
        "--scenario",
        "listener-lost-wakeup",
        "--soak",
        "20",
        "--expect",
        "hang:listener-lost-wakeup",
    )
    assert result.returncode == ExitStatus.SUCCESS, result.stdout + result.stderr
    trial = report["trials"][-1]
    assert trial["hang_class"] == "listener-lost-wakeup"
    assert trial["proof"] == "state"  # proven from the process state, not timed out
    details = trial["diagnosis"]["details"]
    assert details["allow_new_conns"] == "0" and details["client_sockets"] == 0
    assert details["state_proof"]["proven"] is True
    threads = json.loads((Path(trial["run_dir"]) / "evidence" / "threads.json").read_text())
    assert threads[0]["syscall"] in ("epoll_wait", "epoll_pwait")


def test_lost_wakeup_fix_is_a_bounded_pass(cache_layout: CacheLayout, tmp_path: Path) -> None:
    result, report = verify(
        cache_layout,
        tmp_path,
        "--scenario",
        "listener-lost-wakeup",
        "--patch",
        str(LOST_WAKEUP_FIX),
        "--soak",
        "12",
        "--trials",
        "1",
    )
    assert result.returncode == ExitStatus.SUCCESS, result.stdout + result.stderr
    assert report["verdict"]["kind"] == "PASS"
    assert report["trials"][0]["amplifier_triggers"] >= 10  # EMFILE hit again and again


def test_scenario_with_missing_symbols_is_not_applicable(
    cache_layout: CacheLayout, tmp_path: Path
) -> None:
    scenario = tmp_path / "future.toml"
    scenario.write_text(
        'name = "future"\nsummary = "needs code memcached does not have"\n'
        'requires_symbols = ["maxconns_handler", "no_such_function_xyz"]\n'
        '[amplify]\ndefault = "none"\n'
    )
    result, report = verify(cache_layout, tmp_path / "run", "--scenario", str(scenario))
    assert result.returncode == ExitStatus.NOT_APPLICABLE
    assert report["verdict"]["kind"] == "NOT APPLICABLE"
    assert report["not_applicable_missing_symbols"] == ["no_such_function_xyz"]
    assert report["trials"] == []


def test_expect_mismatch_has_its_own_exit_code(race_hang, cache_layout, tmp_path) -> None:
    result, _ = verify(
        cache_layout,
        tmp_path,
        "--patch",
        str(RACE_FIXTURE),
        "--soak",
        "20",
        "--expect",
        "hang:listener-lost-wakeup",
    )
    assert result.returncode == ExitStatus.EXPECTATION_FAILED


def test_killed_verifier_leaves_no_server_behind(
    cache_layout: CacheLayout, tmp_path: Path, pristine
) -> None:
    """SIGKILL the verifier mid-soak: the parent-death signal (re-armed after memcached's
    setuid to nobody) takes the server down, and the flood workers with it."""
    env = {**os.environ, "VERIFIER_CACHE_DIR": str(cache_layout.root)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "verifier",
            "verify",
            "--source",
            "debian",
            "--soak",
            "60",
            "--trials",
            "1",
            "--run-dir",
            str(tmp_path),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        servers: list[int] = []
        while time.monotonic() < deadline and not servers:
            time.sleep(0.2)
            servers = _children_named("memcached")
        assert servers, "the verifier never started memcached"
        time.sleep(2.0)  # flooding now
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        deadline = time.monotonic() + 10
        alive = servers
        while alive and time.monotonic() < deadline:
            time.sleep(0.1)
            alive = [
                pid
                for pid in servers
                if Path(f"/proc/{pid}").exists()
                and "Z" not in Path(f"/proc/{pid}/stat").read_text().split(")")[-1][:3]
            ]
        assert not alive, f"memcached outlived the verifier: {alive}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_baseline_sizes_the_soak_from_the_unfixed_rate(
    cache_layout: CacheLayout, tmp_path: Path
) -> None:
    """--baseline: the race fixture alone hangs fast, so the fixed build must soak long
    enough that, were it still hanging at that rate, a hang would show at 95%."""
    result, report = verify(
        cache_layout,
        tmp_path,
        *OVER_LOST_WAKEUP_FIX,
        "--patch",
        str(RACE_FIXTURE),
        "--patch",
        str(MAXCONNS_FIX),
        "--baseline",
        "--soak",
        "6",
    )
    baseline = report["baseline"]
    assert baseline["hangs"] == 3 and len(baseline["times_to_hang_s"]) == 3
    required = baseline["required_soak_s"]
    assert 0 < required < 120
    assert report["verdict"]["kind"] == "PASS", result.stdout
    assert report["verdict"]["total_soak_s"] >= required - 0.5
    # the same wording as a matrix's patch-set comparison
    comparison = report["comparison"]
    assert comparison["kind"] == "fixed", comparison
    assert comparison["sentence"].startswith("unpatched hung 3/3 at ")
    assert "patched: 0 hangs in" in comparison["sentence"] and "compared" in result.stdout


def _start_verify(cache: CacheLayout, run_dir: Path, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "VERIFIER_CACHE_DIR": str(cache.root)}
    command = [sys.executable, "-m", "verifier", "verify", "--source", "debian"]
    return subprocess.Popen(
        [*command, "--run-dir", str(run_dir), *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.parametrize(
    ("signum", "status"),
    [
        (signal.SIGTERM, ExitStatus.TERMINATED),
        (signal.SIGHUP, ExitStatus.HUNG_UP),
        (signal.SIGINT, ExitStatus.INTERRUPTED),
    ],
)
def test_signals_end_a_verify_cleanly(
    cache_layout: CacheLayout, tmp_path: Path, signum: int, status: ExitStatus
) -> None:
    """SIGTERM and SIGHUP end a run as cleanly as Ctrl-C: the server and the flood are
    stopped by the verifier itself (not left to the parent-death signal), and the exit
    status says which signal it was."""
    since = logged_so_far()
    proc = _start_verify(cache_layout, tmp_path, *OVER_LOST_WAKEUP_FIX, "--soak", "60")
    try:
        server = wait_logged("memcached", since)
        worker = wait_logged("flood worker", since)
        time.sleep(1.0)
        proc.send_signal(signum)
        _, stderr = proc.communicate(timeout=30)
        assert proc.returncode == status, stderr
        assert "Traceback" not in stderr
        assert not server.alive() and not worker.alive()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_a_dead_flood_ends_the_trial_and_only_loaded_seconds_count(
    cache_layout: CacheLayout, tmp_path: Path
) -> None:
    """Exposure is only the seconds the flood ran at full strength: a flood process that
    dies ends the trial (and the report says so), instead of counting the rest of --soak."""
    since = logged_so_far()
    started = time.monotonic()
    proc = _start_verify(
        cache_layout, tmp_path, *OVER_LOST_WAKEUP_FIX, "--soak", "40", "--trials", "1"
    )
    try:
        worker = wait_logged("flood worker", since)
        time.sleep(5.0)  # spawned workers start and the flood saturates at least once
        os.kill(worker.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert time.monotonic() - started < 40, "the trial ran on without its flood"
    report = json.loads((tmp_path / "report.json").read_text())
    trial = report["trials"][0]
    assert "died" in trial["flood"]["ended_early"], stdout + stderr
    assert 1.0 < trial["soak_s"] < 10.0
    assert report["verdict"]["total_soak_s"] == pytest.approx(trial["soak_s"])
    assert "ended early" in report["verdict"]["headline"]


def test_a_lock_order_inversion_is_proven_and_both_locks_named(
    cache_layout: CacheLayout, tmp_path: Path
) -> None:
    """A two-thread ABBA of our own making (tests/fixtures/patches/lock-order-inversion.diff),
    hunted with the generic flood scenario: a `deadlock` proven by the wait-for graph's
    cycle, with both locks and both threads named."""
    result, report = verify(
        cache_layout,
        tmp_path,
        "--scenario",
        "flood",
        "--patch",
        str(LOCK_ORDER_INVERSION),
        "--soak",
        "30",
        "--trials",
        "2",
    )
    assert result.returncode == ExitStatus.BUG_SEEN, result.stdout + result.stderr
    verdict = report["verdict"]
    assert verdict["kind"] == "HANG" and verdict["hang_class"] == "deadlock"
    trial = report["trials"][-1]
    assert trial["proof"] == "cycle"
    details = trial["diagnosis"]["details"]
    assert details["locks"] == ["conn_lock", "stats_lock"]
    cycle = details["cycle"]
    assert "holds conn_lock, waits stats_lock" in cycle
    assert "holds stats_lock, waits conn_lock" in cycle
    assert len(details["tids"]) == 2
    assert "pthread_mutex_lock" in trial["diagnosis"]["hung_stack"]


def test_cache_clean_while_a_verify_runs_leaves_its_build(
    cache_layout: CacheLayout, tmp_path: Path, build_debian
) -> None:
    """Measured before: `cache clean --all` during a verify deleted the build in use and
    the verify ended with exit 8. The build is pinned while used: clean skips it, says so,
    and the verify gives its verdict."""
    build = build_debian(LOST_WAKEUP_FIX)
    cache = CacheLayout(tmp_path / "cache")  # a copy: never clean the session's cache
    shutil.copytree(cache_layout.debian, cache.debian, symlinks=True)
    shutil.copytree(build.entry.path, cache.builds / build.key, symlinks=True)
    since = logged_so_far()
    proc = _start_verify(
        cache, tmp_path / "run", "--patch", str(LOST_WAKEUP_FIX), "--soak", "8", "--trials", "1"
    )
    try:
        wait_logged("flood worker", since)
        cleaned = run_cli("cache", "clean", "--all", cache=cache)
        stdout, stderr = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert cleaned.returncode == 0, cleaned.stderr
    assert f"skipped 1 build in use: {build.key[:12]}" in cleaned.stdout
    assert proc.returncode in (ExitStatus.SUCCESS, ExitStatus.OTHER_HANG), stdout + stderr
    assert json.loads((tmp_path / "run" / "report.json").read_text())["verdict"]["kind"] == "PASS"


@pytest.mark.parametrize("failing", ["_summarise_flood", "_count_triggers"])
def test_a_failure_while_cleaning_up_still_stops_everything(
    cache_layout: CacheLayout, build_debian, tmp_path: Path, monkeypatch, failing: str
) -> None:
    """One ExitStack releases a trial's resources: an exception from the flood summary or
    the amplifier's counters still stops the server and the flood, by pid."""

    def boom(*_args: object) -> None:
        raise RuntimeError("cleanup step failed")

    build_debian(LOST_WAKEUP_FIX)
    monkeypatch.setattr(trial_module, failing, boom)
    source = choose_source(None, "debian", cache_layout)
    assert source.default_ref
    request = BuildRequest(source, source.default_ref, (LOST_WAKEUP_FIX,))
    core = VerifyCore(Builder(cache_layout.builds, cache_layout.locks), cache_layout.tools)
    since = logged_so_far()
    options = VerifyOptions(scenario=load_scenario("flood"))
    with (
        core.prepare(request, options) as prepared,
        pytest.raises(RuntimeError, match="cleanup step failed"),
    ):
        core.soak(prepared, tmp_path, SoakPlan(1, 3.0))
    started = pidlog.read(Path(os.environ[pidlog.PID_LOG_ENV]))[since:]
    assert {p.role for p in started} >= {"memcached", "flood worker"}
    assert not [p for p in started if p.alive()], started
