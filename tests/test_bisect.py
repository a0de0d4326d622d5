"""bisect on a synthetic history made from Debian's memcached (see synthetic_history.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from verifier.bisect.tester import SKIP, CommitTester
from verifier.build.builder import BuildRequest
from verifier.errors import ExitStatus
from verifier.paths import CacheLayout
from verifier.scenario import load_scenario
from verifier.source.git_source import GitSource
from verifier.source.select import SourceChoice
from verifier.verify import VerifyOptions

from conftest import ROOT, run_cli
from synthetic_history import INTRODUCE, History, make_history

pytestmark = pytest.mark.timeout(900)
FAST = ["--max-soak", "10", "--endpoint-soak", "10", "--min-soak", "3"]


@pytest.fixture(scope="module")
def history(debian_source: SourceChoice, tmp_path_factory: pytest.TempPathFactory) -> History:
    assert debian_source.default_ref
    return make_history(
        debian_source.git.path,
        debian_source.default_ref,
        tmp_path_factory.mktemp("history") / "repo",
    )


def _report(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    line = next(line for line in result.stdout.splitlines() if line.startswith("report: "))
    return json.loads(Path(line.removeprefix("report: ")).read_text())


def bisect(cache: CacheLayout, history: History, *args: str) -> tuple[Any, dict[str, Any]]:
    result = run_cli("bisect", "--repo", str(history.path), *FAST, *args, cache=cache)
    assert result.returncode == ExitStatus.SUCCESS, result.stdout + result.stderr
    return result, _report(result)


def test_history_has_what_the_issue_asks(history: History) -> None:
    subjects = subprocess.run(
        ["git", "-C", str(history.path), "log", "--format=%s", f"{history.good}..{history.last}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert sum(s.startswith("Docs: harmless") for s in subjects) >= 16
    assert len(history.shas) == 24


@pytest.mark.parametrize(
    "run", [pytest.param(i, marks=pytest.mark.slow) if i > 1 else i for i in range(1, 6)]
)
def test_bisect_names_the_introducing_commit(cache_layout, history: History, run: int) -> None:
    """Run 1 here; the resume test is a second full run; runs 2-5 with -m slow."""
    result, report = bisect(
        cache_layout, history, "--good", history.good, "--bad", history.regression_bad, "--restart"
    )
    assert report["answer"]["sha"] == history.introduce
    assert report["posterior"] >= 0.95 and report["confident"]
    assert f"introduced by {history.introduce[:12]}" in result.stdout
    assert report["reference_signature"].startswith("self-deadlock:conn_lock")
    kinds = {step["kind"] for step in report["steps"]}
    assert kinds <= {"hang", "clean", "skip", "other-bug"}


@pytest.mark.parametrize(
    "run", [pytest.param(i, marks=pytest.mark.slow) if i > 2 else i for i in range(1, 6)]
)
def test_bisect_find_fix_names_the_fixing_commit(cache_layout, history: History, run: int) -> None:
    result, report = bisect(
        cache_layout,
        history,
        "--bad",
        history.introduce,
        "--good",
        history.last,
        "--find-fix",
        "--restart",
    )
    assert report["answer"]["sha"] == history.fix
    assert f"fixed by {history.fix[:12]}" in result.stdout


def test_unbuildable_commit_is_a_skip(cache_layout, history: History, builder) -> None:
    git = GitSource(str(history.path), cache_layout.mirrors)
    source = SourceChoice(git, None, str(history.path))
    tester = CommitTester(
        builder,
        BuildRequest(source, history.good),
        VerifyOptions(scenario=load_scenario("maxconns-deadlock")),
        cache_layout.tools,
        cache_layout.runs,
    )
    observation = tester.test(history.broken, 5.0, None)
    assert observation.kind == SKIP and observation.reason == "does not build"


def test_endpoints_are_checked_first(cache_layout, history: History) -> None:
    """A 'bad' end without the race does not hang: say so and stop, before any search."""
    result = run_cli(
        "bisect",
        "--repo",
        str(history.path),
        "--good",
        history.good,
        "--bad",
        history.shas[INTRODUCE - 1],
        "--endpoint-soak",
        "4",
        "--restart",
        cache=cache_layout,
    )
    assert result.returncode == ExitStatus.BAD_RANGE
    assert "did not hang" in result.stderr and "Traceback" not in result.stderr


def test_interrupted_bisect_resumes_and_replays(cache_layout, history: History) -> None:
    args = ["--good", history.good, "--bad", history.regression_bad]
    env = {**os.environ, "VERIFIER_CACHE_DIR": str(cache_layout.root)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "verifier",
            "bisect",
            "--repo",
            str(history.path),
            *FAST,
            *args,
            "--restart",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    started = time.time()
    states: list[Path] = []
    deadline = time.monotonic() + 300
    done_before = 0
    while time.monotonic() < deadline and proc.poll() is None and not done_before:
        time.sleep(0.5)
        for path in cache_layout.bisects.glob("*/state.json"):
            if path.stat().st_mtime < started:
                continue  # an earlier test's bisect
            state = json.loads(path.read_text())
            if state["params"]["bad"] == history.regression_bad and len(state["steps"]) >= 3:
                done_before, states = len(state["steps"]), [path]
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert done_before, "the bisect never got 3 steps in"
    assert proc.returncode == ExitStatus.INTERRUPTED, stderr
    resumed = run_cli("bisect", "--repo", str(history.path), *FAST, *args, cache=cache_layout)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"resuming: {done_before} step(s) done" in resumed.stderr
    report = _report(resumed)
    assert report["answer"]["sha"] == history.introduce
    assert [s["role"] for s in report["steps"]].count("bad end") >= 1
    assert report["steps"][:done_before] == json.loads(states[0].read_text())["steps"][:done_before]
    replay = run_cli(
        "bisect", "--repo", str(history.path), "--replay", str(states[0]), cache=cache_layout
    )
    assert replay.returncode == 0 and f"introduced by {history.introduce[:12]}" in replay.stdout


def test_git_bisect_run_agrees(cache_layout, history: History, tmp_path: Path) -> None:
    work = tmp_path / "work"
    subprocess.run(["git", "clone", "-q", str(history.path), str(work)], check=True)

    def git(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["git", "-C", str(work), *args],
            capture_output=True,
            text=True,
            env={**os.environ, "VERIFIER_CACHE_DIR": str(cache_layout.root)},
            timeout=800,
        )

    git("bisect", "start", history.regression_bad, history.good)
    run = git("bisect", "run", sys.executable, "-m", "verifier", "bisect-step", "--soak", "6")
    assert f"{history.introduce} is the first bad commit" in run.stdout, run.stdout + run.stderr
    git("bisect", "reset")
    # finding the fix with old/new terms: a hang is "old", no hang is "new"
    git("bisect", "start", "--term-old=hangs", "--term-new=fixed", history.last, history.introduce)
    run = git(
        "bisect",
        "run",
        sys.executable,
        "-m",
        "verifier",
        "bisect-step",
        "--find-fix",
        "--soak",
        "6",
    )
    assert f"{history.fix} is the first fixed commit" in run.stdout, run.stdout + run.stderr
