"""bisect on a synthetic history made from Debian's memcached (see synthetic_history.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from verifier.bisect.commits import CommitRange, commit_range
from verifier.bisect.observation import Observation
from verifier.bisect.session import Bisection, BisectSettings, resume_key
from verifier.bisect.state import BisectState
from verifier.bisect.tester import CommitTester
from verifier.build.builder import BuildRequest
from verifier.errors import ExitStatus
from verifier.paths import CacheLayout
from verifier.scenario import load_scenario
from verifier.source.git_source import GitSource
from verifier.source.select import SourceChoice
from verifier.verdict.verdict import OtherBug
from verifier.verify import VerifyCore, VerifyOptions
from verifier.vocabulary import HangClass, ObservationKind, SkipCause, TrialOutcome

from conftest import ROOT, run_cli
from synthetic_history import (
    ARRIVAL_CULPRIT,
    ARRIVAL_LAST,
    INTRODUCE,
    History,
    make_arrival_history,
    make_history,
)

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
    assert report["reference_bug_key"].startswith("self-deadlock:conn_lock")
    kinds = {step["kind"] for step in report["steps"]}
    assert kinds <= {"hang", "clean", "skip", "other-bug"}


@pytest.mark.slow
@pytest.mark.parametrize("run", range(1, 6))
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
        VerifyCore(builder, cache_layout.tools),
        BuildRequest(source, history.good),
        VerifyOptions(scenario=load_scenario("maxconns-deadlock")),
        cache_layout.runs,
    )
    observation = tester.test(history.broken, 5.0, None)
    assert observation.kind == ObservationKind.SKIP
    assert observation.cause == SkipCause.DOES_NOT_BUILD


@pytest.mark.slow
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


def _bisect_process(cache: CacheLayout, history: History, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "VERIFIER_CACHE_DIR": str(cache.root)}
    return subprocess.Popen(
        [sys.executable, "-m", "verifier", "bisect", "--repo", str(history.path), *FAST, *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.parametrize(
    "signum", [pytest.param(sig, marks=pytest.mark.slow) for sig in (signal.SIGINT, signal.SIGTERM)]
)
def test_interrupted_bisect_resumes_and_replays(
    cache_layout, history: History, signum: int
) -> None:
    """Interrupted after 3 steps (Ctrl-C, or SIGTERM from a CI runner), the same command
    resumes: the steps taken before are kept exactly, their evidence is not overwritten,
    and an identical bisect started meanwhile is refused instead of sharing the state."""
    args = ["--good", history.good, "--bad", history.regression_bad]
    proc = _bisect_process(cache_layout, history, *args, "--restart")
    started = time.time()
    state_path: Path | None = None
    snapshot: dict[str, Any] = {}
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None and not snapshot:
        time.sleep(0.5)
        for path in cache_layout.bisects.glob("*/state.json"):
            if path.stat().st_mtime < started:
                continue  # an earlier test's bisect
            state = json.loads(path.read_text())
            if state["params"]["bad"] == history.regression_bad and len(state["steps"]) >= 3:
                state_path, snapshot = path, state
    assert snapshot, "the bisect never got 3 steps in"
    twin = run_cli("bisect", "--repo", str(history.path), *FAST, *args, cache=cache_layout)
    assert twin.returncode == ExitStatus.BAD_INPUT and "another bisect" in twin.stderr
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=60)
    expected = ExitStatus.INTERRUPTED if signum == signal.SIGINT else ExitStatus.TERMINATED
    assert proc.returncode == expected, stderr
    assert state_path is not None
    before = json.loads(state_path.read_text())  # what the interrupted run saved
    done_before = len(before["steps"])
    assert before["steps"][: len(snapshot["steps"])] == snapshot["steps"]
    evidence = {
        row["run_dir"]: (Path(row["run_dir"]) / "trial.json").read_text()
        for row in before["steps"]
        if row["run_dir"]
    }
    resumed = run_cli("bisect", "--repo", str(history.path), *FAST, *args, cache=cache_layout)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"resuming: {done_before} step(s) done" in resumed.stderr
    report = _report(resumed)
    assert report["answer"]["sha"] == history.introduce
    assert [s["role"] for s in report["steps"]].count("bad end") >= 1
    assert report["steps"][:done_before] == before["steps"]
    for run_dir, trial in evidence.items():  # resumed steps wrote new folders
        assert (Path(run_dir) / "trial.json").read_text() == trial
    assert len({s["run_dir"] for s in report["steps"] if s["run_dir"]}) == len(
        [s for s in report["steps"] if s["run_dir"]]
    )
    replay = run_cli(
        "bisect", "--repo", str(history.path), "--replay", str(state_path), cache=cache_layout
    )
    assert replay.returncode == 0 and f"introduced by {history.introduce[:12]}" in replay.stdout


def test_the_resume_key_covers_everything_that_changes_a_soak() -> None:
    """Resuming under another load must never mix evidence: each input has its own key."""
    commits = CommitRange(("a" * 40, "b" * 40), False)
    request = BuildRequest(source=None, ref="a" * 40)  # type: ignore[arg-type]
    options = VerifyOptions(scenario=load_scenario("maxconns-deadlock"))
    settings = BisectSettings()
    toolchain = {"cc": "gcc 12", "cflags": "-O2", "cpu": "x"}
    _, base = resume_key("src", commits, request, options, settings, toolchain)
    variants = [
        resume_key("src", commits, replace(request, cflags="-O0"), options, settings, toolchain),
        resume_key("src", commits, request, replace(options, threads=8), settings, toolchain),
        resume_key("src", commits, request, replace(options, concurrency=9), settings, toolchain),
        resume_key(
            "src", commits, request, replace(options, probe_client="socket"), settings, toolchain
        ),
        resume_key(
            "src", commits, request, replace(options, flood_processes=3), settings, toolchain
        ),
        resume_key(
            "src", commits, request, options, replace(settings, endpoint_soak_s=9), toolchain
        ),
        resume_key("src", commits, request, options, settings, {**toolchain, "cc": "gcc 13"}),
    ]
    keys = [key for _, key in variants]
    assert base not in keys and len(set(keys)) == len(keys)
    assert resume_key("src", commits, request, options, settings, toolchain)[1] == base


def test_a_patch_that_stops_applying_mid_range_is_a_skip(
    cache_layout, history: History, builder, tmp_path: Path
) -> None:
    """A --patch that applies to newer commits only: the older ones are skipped, not an
    abort of the whole bisect."""
    patch = tmp_path / "needs-note-3.diff"
    readme_at_3 = subprocess.run(
        ["git", "-C", str(history.path), "show", f"{history.shas[3]}:README.md"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    tail = readme_at_3[-3:]
    patch.write_text(
        "--- a/README.md\n+++ b/README.md\n"
        f"@@ -{len(readme_at_3) - 2},3 +{len(readme_at_3) - 2},4 @@\n"
        + "".join(f" {line}\n" for line in tail)
        + "+A line that needs note 3.\n"
    )
    git = GitSource(str(history.path), cache_layout.mirrors)
    tester = CommitTester(
        VerifyCore(builder, cache_layout.tools),
        BuildRequest(SourceChoice(git, None, str(history.path)), history.good, (patch,)),
        VerifyOptions(scenario=load_scenario("maxconns-deadlock")),
        tmp_path / "runs",
    )
    observation = tester.test(history.shas[1], 3.0, None)
    assert observation.kind == ObservationKind.SKIP
    assert observation.cause == SkipCause.PATCH_DOES_NOT_APPLY


def _measured_soak(cache: CacheLayout, repo: Path, ref: str, tmp_path: Path) -> str:
    """A bisect-step soak the bad end's measured time to hang justifies: 10 x the slowest
    of three hangs (a bad commit then stays clean with probability < e^-10)."""
    times = []
    for i in range(3):
        run_dir = tmp_path / f"measure-{i}"
        run_cli(
            "verify", "--repo", str(repo), "--ref", ref, "--trials", "1", "--soak", "20",
            "--run-dir", str(run_dir), cache=cache,
        )  # fmt: skip
        report = json.loads((run_dir / "report.json").read_text())
        times += [t["time_to_hang_s"] for t in report["trials"] if t["outcome"] == "hang"]
    assert len(times) == 3, f"the bad end did not hang every time: {times}"
    return f"{max(3.0, 10 * max(times)):.1f}"


def _git_bisect(work: Path, cache: CacheLayout, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", "-C", str(work), "bisect", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "VERIFIER_CACHE_DIR": str(cache.root)},
        timeout=800,
    )


@pytest.mark.slow
def test_git_bisect_run_agrees(cache_layout, history: History, tmp_path: Path) -> None:
    work = tmp_path / "work"
    subprocess.run(["git", "clone", "-q", str(history.path), str(work)], check=True)
    soak = _measured_soak(cache_layout, history.path, history.regression_bad, tmp_path)
    step = [sys.executable, "-m", "verifier", "bisect-step", "--soak", soak]
    _git_bisect(work, cache_layout, "start", history.regression_bad, history.good)
    run = _git_bisect(work, cache_layout, "run", *step)
    assert f"{history.introduce} is the first bad commit" in run.stdout, run.stdout + run.stderr
    _git_bisect(work, cache_layout, "reset")
    # finding the fix with old/new terms: a hang is "old", no hang is "new"
    _git_bisect(
        work,
        cache_layout,
        "start",
        "--term-old=hangs",
        "--term-new=fixed",
        history.last,
        history.introduce,
    )
    run = _git_bisect(work, cache_layout, "run", *step, "--find-fix")
    assert f"{history.fix} is the first fixed commit" in run.stdout, run.stdout + run.stderr


def test_git_bisect_run_when_the_culprit_brings_the_code(
    cache_layout, debian_source: SourceChoice, tmp_path: Path
) -> None:
    """Older commits lack maxconns_handler: bisect-step calls them good (they cannot have
    this bug) instead of skipping them, so git converges on the commit that brought it."""
    assert debian_source.default_ref
    arrival = make_arrival_history(
        debian_source.git.path, debian_source.default_ref, tmp_path / "arrival"
    )
    work = tmp_path / "work"
    subprocess.run(["git", "clone", "-q", str(arrival.path), str(work)], check=True)
    soak = _measured_soak(cache_layout, arrival.path, arrival.shas[ARRIVAL_LAST], tmp_path)
    _git_bisect(work, cache_layout, "start", arrival.shas[ARRIVAL_LAST], arrival.shas[0])
    run = _git_bisect(
        work, cache_layout, "run", sys.executable, "-m", "verifier", "bisect-step", "--soak", soak
    )
    culprit = arrival.shas[ARRIVAL_CULPRIT]
    assert f"{culprit} is the first bad commit" in run.stdout, run.stdout + run.stderr
    assert "only skipped commits left" not in run.stdout


def test_a_good_end_that_hangs_stops_with_exit_10(cache_layout, history: History) -> None:
    result = run_cli(
        "bisect",
        "--repo",
        str(history.path),
        *FAST,
        "--good",
        history.introduce,
        "--bad",
        history.regression_bad,
        "--restart",
        cache=cache_layout,
    )
    assert result.returncode == ExitStatus.BAD_RANGE, result.stdout + result.stderr
    assert "hangs too, with the same bug (self-deadlock)" in result.stderr


def test_another_bugs_hang_is_another_bug_on_a_real_commit(
    cache_layout, debian_source: SourceChoice, builder, tmp_path: Path
) -> None:
    """Bisecting the self-deadlock, a commit that hangs by the lost wake-up (pristine
    Debian, which has it) is another bug: observed, listed with its evidence, and not
    evidence for the search."""
    assert debian_source.default_ref
    tester = CommitTester(
        VerifyCore(builder, cache_layout.tools),
        BuildRequest(debian_source, debian_source.default_ref),
        VerifyOptions(scenario=load_scenario("listener-lost-wakeup")),
        tmp_path / "runs",
    )
    reference = "self-deadlock:conn_lock:accept_new_conns>maxconns_handler>accept_new_conns"
    sha = debian_source.git.resolve(debian_source.default_ref)
    observation = tester.test(sha, 20.0, f"{reference}|listener dead, workers alive")
    assert observation.kind == ObservationKind.OTHER_BUG and not observation.evidence
    assert observation.other_bug is not None
    assert observation.other_bug.hang_class == HangClass.LOST_WAKEUP
    assert (Path(observation.other_bug.evidence) / "evidence" / "backtraces.txt").is_file()


class ScriptedTester:
    """Answers as a history whose culprit is index 10 would, with another bug at 12."""

    def __init__(self, commits: CommitRange) -> None:
        self.commits = commits
        self.scenario = load_scenario("maxconns-deadlock")
        self.asked: list[int] = []

    def is_built(self, sha: str) -> bool:
        return True

    def test(self, sha: str, soak_s: float, reference: str | None) -> Observation:
        index = self.commits.shas.index(sha)
        self.asked.append(index)
        if index == 12:
            bug = OtherBug(TrialOutcome.HANG, HangClass.LOST_WAKEUP, "lw", 1.0, "/x", sha=sha)
            return Observation(sha, ObservationKind.OTHER_BUG, 1.0, "other", other_bug=bug)
        if index >= INTRODUCE:
            return Observation(sha, ObservationKind.HANG, 1.0, bug_key="sd")
        return Observation(sha, ObservationKind.CLEAN, soak_s)


def test_the_session_lists_another_bug_and_never_uses_it(history: History, tmp_path: Path) -> None:
    git = GitSource(str(history.path), tmp_path / "mirrors")
    commits = commit_range(git, history.good, history.regression_bad, False)
    tester = ScriptedTester(commits)
    state = BisectState(params={}, shas=list(commits.shas), find_fix=False)
    bisection = Bisection(
        git, commits, tester, BisectSettings(max_soak_s=10), state, tmp_path / "state.json"
    )  # type: ignore[arg-type]
    conclusion = bisection.run()
    assert conclusion.answer == history.introduce
    assert [b.sha for b in conclusion.other_bugs] == [commits.shas[12]] * tester.asked.count(12)
    soaked = {e["index"] for e in bisection.bisector.events if e["kind"] != "skip"}
    assert 12 not in soaked
