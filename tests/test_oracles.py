"""Oracles on Debian's real memcached, each with a small reintroduction patch written here:
a lost incr is WRONG RESULT lost-update with a two-operation witness (under incr-only), a
page move that never finishes is HANG stuck-progress, and the unpatched build under the same
workloads (incr-only, and incr-race with its sets and decrs) shows neither (no false
verdict: its long history is judged linearizable)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from verifier.paths import CacheLayout

from conftest import FIXTURES, run_cli

INCR_RACE = FIXTURES / "reintroduce-incr-race.diff"
MOVER_NEVER_FINISHES = FIXTURES / "mover-never-finishes.diff"


def _verify(cache: CacheLayout, *args: str) -> tuple[int, str, dict]:
    done = run_cli("verify", "--source", "debian", *args, cache=cache, timeout=600)
    line = next((x for x in done.stdout.splitlines() if x.startswith("report")), "")
    assert line, done.stdout + done.stderr
    return done.returncode, done.stdout + done.stderr, json.loads(Path(line.split()[1]).read_text())


@pytest.mark.slow
def test_a_lost_incr_is_wrong_result_with_a_two_operation_witness(
    cache_layout: CacheLayout, build_debian
) -> None:  # type: ignore[no-untyped-def]
    code, out, report = _verify(
        cache_layout, "--patch", str(INCR_RACE), "--scenario", "flood", "--workload",
        "incr-only", "--soak", "20", "--trials", "12", "--expect", "wrong:lost-update",
    )  # fmt: skip
    assert code == 0, out  # the expectation is met
    assert report["verdict"]["kind"] == "WRONG RESULT"
    assert report["verdict"]["wrong_class"] == "lost-update"
    wrong = next(t for t in report["trials"] if t["outcome"] == "wrong")
    witness = wrong["check"]["violations"][0]
    assert witness["class"] == "lost-update" and len(witness["ops"]) == 2
    first, second = witness["ops"]
    assert witness["key"].startswith("ctr:") and first["client"] != second["client"]
    # two increments answered the same number: one of them was lost
    assert first["kind"] in ("incr", "decr") and second["kind"] in ("incr", "decr")
    assert first["result"] == second["result"]
    assert "WRONG RESULT" in out and "lost" in out


@pytest.mark.parametrize("workload", ["incr-only", "incr-race"])
def test_the_unpatched_build_is_never_wrong_on_the_same_workload(
    cache_layout: CacheLayout, pristine, workload: str
) -> None:  # type: ignore[no-untyped-def]
    code, out, report = _verify(
        cache_layout, "--scenario", "flood", "--workload", workload, "--soak", "12",
        "--trials", "1",
    )  # fmt: skip
    assert code == 0, out
    check = report["trials"][0]["check"]
    assert check["verdict"] == "ok" and not check["violations"]
    assert check["ops"] >= 5_000 and check["keys"] == 4
    assert "no wrong answer in" in report["verdict"]["headline"]


@pytest.mark.slow
def test_a_page_move_that_never_finishes_is_stuck_progress_and_a_real_one_is_not(
    cache_layout: CacheLayout, build_debian
) -> None:  # type: ignore[no-untyped-def]
    code, out, report = _verify(
        cache_layout, "--patch", str(MOVER_NEVER_FINISHES), "--scenario", "page-mover",
        "--soak", "25", "--trials", "1",
    )  # fmt: skip
    assert code == 1, out
    assert report["verdict"]["hang_class"] == "stuck-progress"
    assert report["verdict"]["proof"] == "progress"
    diagnosis = report["trials"][0]["diagnosis"]
    assert diagnosis["details"]["work"] == "slab page move"
    assert (Path(report["trials"][0]["run_dir"]) / "evidence" / "backtraces.txt").is_file()
    code, out, report = _verify(
        cache_layout, "--scenario", "page-mover", "--soak", "25", "--trials", "1"
    )
    assert code == 0, out
    assert report["trials"][0]["server_counts"]["slabs_moved"] > 0  # moves happened, and ended


STALL_ONE_WORKER = FIXTURES / "stall-one-worker.diff"
STALL_SCENARIO = """
name = "stall"
summary = "kv traffic, and a rare get of a stall: key"
requires_symbols = []
[server]
maxconns = 128
[workload]
name = "stall"
[[workload.group]]
name = "kv"
clients = 4
rate = 400
keys = { count = 100, prefix = "kv:" }
commands = { get = 3, set = 1 }
[[workload.group]]
name = "staller"
clients = 1
rate = 0.5
keys = { count = 1, prefix = "stall:" }
commands = { get = 1 }
[exercise]
emfile = false
[amplify]
default = "none"
"""


def test_one_stalled_worker_is_part_hung_not_saturation(
    tmp_path: Path, cache_layout: CacheLayout, build_debian
) -> None:  # type: ignore[no-untyped-def]
    scenario = tmp_path / "stall.toml"
    scenario.write_text(STALL_SCENARIO)
    code, out, report = _verify(
        cache_layout, "--patch", str(STALL_ONE_WORKER), "--scenario", str(scenario),
        "--soak", "15", "--trials", "1", "--threads", "2",
    )  # fmt: skip
    assert code == 1, out
    assert report["verdict"]["hang_class"] == "part-hung", report["verdict"]["headline"]
    assert "1 of 2 worker threads never answered" in report["trials"][0]["diagnosis"]["summary"]
    assert report["trials"][0]["diagnosis"]["liveness"] == "server answering, one part stuck"
