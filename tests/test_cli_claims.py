"""README claims about the command line, each checked on Debian's real memcached: exit codes,
the amplifier options, and `verifier demo` itself."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from verifier.amplify.counters import read_status
from verifier.errors import ExitStatus
from verifier.paths import CacheLayout

from conftest import LOST_WAKEUP_FIX, RACE_FIXTURE, ROOT, logged_so_far, run_cli, wait_logged

pytestmark = pytest.mark.timeout(300)


def verify(
    cache: CacheLayout, run_dir: Path, *args: str
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    result = run_cli("verify", "--source", "debian", "--run-dir", str(run_dir), *args, cache=cache)
    report = run_dir / "report.json"
    return result, json.loads(report.read_text()) if report.is_file() else {}


def _scenario(tmp_path: Path, text: str) -> str:
    path = tmp_path / "scenario.toml"
    path.write_text(text)
    return str(path)


def test_the_demo_gives_its_three_verdicts(cache_layout: CacheLayout) -> None:
    """The README's main job, with short soaks: the self-deadlock, the fix's bounded PASS,
    and the lost wake-up told apart from the first; exit 0; nothing left running (the
    autouse guard checks every process the demo started)."""
    result = run_cli("demo", "--soak", "5", "--trials", "2", cache=cache_layout)
    assert result.returncode == ExitStatus.SUCCESS, result.stdout[-3000:] + result.stderr
    verdicts = [line for line in result.stdout.splitlines() if line.startswith("verdict")]
    assert len(verdicts) == 3, result.stdout
    assert "HANG: self-deadlock" in verdicts[0]
    assert "PASS (bounded): 0 hangs in" in verdicts[1]
    assert "HANG: listener-lost-wakeup" in verdicts[2]
    assert "demo: as expected" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--scenario", "no-such-scenario"), "unknown scenario"),
        (("--expect", "hang:no-such-class"), "bad --expect"),
        (("--expect", "sometimes"), "bad --expect"),
    ],
)
def test_bad_input_exits_2_with_one_line(
    cache_layout: CacheLayout, tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    result, _ = verify(cache_layout, tmp_path, *args)
    assert result.returncode == ExitStatus.BAD_INPUT
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_shared_cache_without_a_cluster_is_one_line(cache_layout: CacheLayout) -> None:
    result = run_cli(
        "bisect", "--source", "debian", "--good", "HEAD~1", "--bad", "HEAD", "--shared-cache",
        cache=cache_layout,
    )  # fmt: skip
    assert result.returncode == ExitStatus.BAD_INPUT, result.stderr
    assert "--shared-cache is for --executor dask://" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_server_that_cannot_start_is_a_harness_error(
    cache_layout: CacheLayout, tmp_path: Path
) -> None:
    scenario = _scenario(
        tmp_path,
        'name = "bad-option"\nsummary = "s"\nrequires_symbols = []\n'
        '[server]\nargs = ["-o", "no_such_suboption_xyz"]\n[amplify]\ndefault = "none"\n',
    )
    result, report = verify(cache_layout, tmp_path / "run", "--scenario", scenario, "--soak", "3")
    assert result.returncode == ExitStatus.HARNESS_ERROR, result.stdout + result.stderr
    assert report["verdict"]["kind"] == "ERROR"
    assert "memcached did not start" in report["verdict"]["headline"]


def test_a_limit_never_reached_is_inconclusive(cache_layout: CacheLayout, tmp_path: Path) -> None:
    """-c far above the flood: no EMFILE episode, so a clean soak says nothing (exit 9)."""
    scenario = _scenario(
        tmp_path,
        'name = "roomy"\nsummary = "s"\nrequires_symbols = []\n'
        '[server]\nmaxconns = 4096\n[flood]\nconcurrency = 50\n[amplify]\ndefault = "none"\n',
    )
    result, report = verify(
        cache_layout, tmp_path / "run", "--scenario", scenario, "--soak", "3", "--trials", "1"
    )
    assert result.returncode == ExitStatus.INCONCLUSIVE, result.stdout + result.stderr
    assert report["verdict"]["kind"] == "INCONCLUSIVE"
    assert report["trials"][0]["emfile_episodes"] == 0


def test_a_pass_with_another_known_hang_exits_13(cache_layout: CacheLayout, tmp_path: Path) -> None:
    """Hunting the self-deadlock in pristine Debian while stretching the lost wake-up's
    window: every trial's hang is the other bug, listed; the verdict on the hunted one is a
    bounded PASS, and the exit status says another hang showed."""
    scenario = _scenario(
        tmp_path,
        'name = "hunt-deadlock-stretch-wakeup"\nsummary = "s"\nhang_class = "self-deadlock"\n'
        'requires_symbols = ["maxconns_handler"]\n[amplify]\ndefault = "interpose"\n'
        '[[amplify.interpose]]\nfunctions = ["accept", "accept4"]\nret = -1\nerrno = "EMFILE"\n'
        'delay_us = 50000\nthread = "main"\n',
    )
    result, report = verify(
        cache_layout, tmp_path / "run", "--scenario", scenario, "--soak", "10", "--trials", "2"
    )
    assert result.returncode == ExitStatus.OTHER_HANG, result.stdout + result.stderr
    verdict = report["verdict"]
    assert verdict["kind"] == "PASS"
    assert {b["class"] for b in verdict["other_bugs"]} == {"listener-lost-wakeup"}
    assert len(report["trials"]) == 2  # the other bug never stopped the run


def test_amplify_gdb_holds_the_listener_and_finds_the_hang(
    cache_layout: CacheLayout, tmp_path: Path
) -> None:
    result, report = verify(
        cache_layout,
        tmp_path,
        "--patch",
        str(RACE_FIXTURE),
        "--amplify",
        "gdb",
        "--soak",
        "30",
        "--trials",
        "2",
    )
    assert result.returncode == ExitStatus.BUG_SEEN, result.stdout + result.stderr
    assert report["verdict"]["hang_class"] == "self-deadlock"
    assert report["amplifier"].startswith("gdb: hold main thread at maxconns_handler")
    trial = report["trials"][-1]
    assert trial["amplifier_triggers"] >= 1
    assert (Path(trial["run_dir"]) / "gdb-amplifier.log").is_file()


def _gdb_counts(trial: dict[str, Any]) -> dict[str, int]:
    """The gdb amplifier's last COUNTS line: hits, holds, owned (skipped: the thread held
    the unless_held mutex), unknown."""
    log = (Path(trial["run_dir"]) / "gdb-amplifier.log").read_text(errors="replace")
    last = re.findall(r"COUNTS (\d+) (\d+) (\d+) (\d+)", log)[-1]
    return dict(zip(("hits", "holds", "owned", "unknown"), map(int, last), strict=True))


_HOLD_FILTER_SCENARIO = """
name = "hold-filter"
summary = "new keys set flat out: every set allocates (slabs_alloc takes slabs_lock)"
[server]
maxconns = 64
[workload]
name = "sets"
summary = "sets of new keys"
[[workload.group]]
name = "sets"
protocol = "ascii"
clients = 4
connection = "long"
keys = {{ count = 200000, prefix = "s:" }}
values = {{ size = 100 }}
commands = {{ set = 1 }}
[amplify]
default = "gdb"
[amplify.gdb]
location = "slabs_alloc"
hold_ms = 1
thread = "any"
unless_held = "slabs_lock"
{hold_at}
"""


def test_gdb_hold_unless_held_skips_the_lock_owner_and_hold_at_moves_the_hold(
    cache_layout: CacheLayout, tmp_path: Path
) -> None:
    """unless_held reads the mutex's owner: slabs_alloc() is entered without slabs_lock (held
    there), do_slabs_alloc() runs under it (hold_at: picked at slabs_alloc, never held, and
    the skips count as triggers, so the soak is a PASS, not "the amplifier never fired")."""

    def soak(name: str, hold_at: str) -> dict[str, Any]:
        scenario = _scenario(tmp_path, _HOLD_FILTER_SCENARIO.format(hold_at=hold_at))
        result, report = verify(
            cache_layout, tmp_path / name, "--scenario", scenario, "--soak", "5", "--trials", "1"
        )
        assert result.returncode == ExitStatus.SUCCESS, result.stdout + result.stderr
        return report

    report = soak("before", "")
    assert report["amplifier"].endswith("unless it holds slabs_lock")
    counts = _gdb_counts(report["trials"][-1])
    assert counts["holds"] > 0 and counts["owned"] == 0 and counts["unknown"] == 0, counts

    report = soak("inside", 'hold_at = "do_slabs_alloc"')
    assert report["amplifier"].startswith("gdb: hold any thread at do_slabs_alloc after slabs_")
    trial = report["trials"][-1]
    counts = _gdb_counts(trial)
    assert counts["holds"] == 0 and counts["owned"] > 0 and counts["unknown"] == 0, counts
    assert trial["amplifier_triggers"] == counts["owned"]


def test_amplify_interpose_given_explicitly(cache_layout: CacheLayout, tmp_path: Path) -> None:
    result, report = verify(
        cache_layout,
        tmp_path,
        "--scenario",
        "listener-lost-wakeup",
        "--amplify",
        "interpose",
        "--soak",
        "20",
    )
    assert result.returncode == ExitStatus.BUG_SEEN, result.stdout + result.stderr
    assert report["amplifier"].startswith("interpose: accept/accept4 ret=-1 errno=EMFILE")
    assert report["verdict"]["hang_class"] == "listener-lost-wakeup"


def test_delay_us_and_amplify_every_do_what_they_say(
    cache_layout: CacheLayout, tmp_path: Path
) -> None:
    """--delay-us sets each stretch (measured: slept time per trigger), --amplify-every N
    stretches exactly every Nth matching event (the library's own counters)."""
    result, report = verify(
        cache_layout,
        tmp_path,
        "--scenario",
        "listener-lost-wakeup",
        "--patch",
        str(LOST_WAKEUP_FIX),
        "--delay-us",
        "2000",
        "--amplify-every",
        "4",
        "--soak",
        "6",
        "--trials",
        "1",
    )
    assert result.returncode == ExitStatus.SUCCESS, result.stdout + result.stderr
    assert "sleep 2000 us" in report["amplifier"]
    status = read_status(Path(report["trials"][0]["run_dir"]) / "amplifier.status")
    rule = status.rules[0]
    counted = rule.matches - rule.paused_matches  # a failed probe pauses the stretches
    assert counted >= 8, rule
    assert rule.triggers == counted // 4, rule
    per_trigger_us = rule.slept_ns / rule.triggers / 1000
    assert 2000 <= per_trigger_us < 7000, per_trigger_us


def test_bisect_step_maps_everything_to_0_1_or_125(
    cache_layout: CacheLayout, tmp_path: Path, debian_source
) -> None:
    """125 for a commit that does not build, for a harness failure and for SIGTERM; never
    128 or more (git bisect run would abort the whole bisect)."""
    work = tmp_path / "work"
    subprocess.run(["git", "clone", "-q", str(debian_source.git.path), str(work)], check=True)
    subprocess.run(
        ["git", "-C", str(work), "checkout", "-q", debian_source.default_ref], check=True
    )
    env = {**os.environ, "VERIFIER_CACHE_DIR": str(cache_layout.root)}

    def step(*args: str, **kw: Any) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "verifier", "bisect-step", "--repo", str(work), *args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            **kw,
        )

    broken = step("--patch", str(ROOT / "tests/fixtures/patches/break-build.diff"), "--soak", "3")
    _, stderr = broken.communicate(timeout=300)
    assert broken.returncode == 125, stderr
    harness = tmp_path / "bad-option.toml"
    harness.write_text(
        'name = "bad-option"\nsummary = "s"\nrequires_symbols = []\n'
        '[server]\nargs = ["-o", "no_such_suboption_xyz"]\n[amplify]\ndefault = "none"\n'
    )
    failing = step("--scenario", str(harness), "--soak", "3")
    _, stderr = failing.communicate(timeout=300)
    assert failing.returncode == 125, stderr
    since = logged_so_far()
    long = step("--patch", str(LOST_WAKEUP_FIX), "--soak", "60")
    try:
        wait_logged("flood worker", since)
        long.send_signal(signal.SIGTERM)
        _, stderr = long.communicate(timeout=60)
    finally:
        if long.poll() is None:
            long.kill()
            long.communicate()
    assert long.returncode == 125, stderr
