"""verifier matrix: the file's validation, the comparison sentences, the gate's decisions
(pure), and a real 2x2 matrix on Debian's memcached: JUnit read by junitparser (what the
"publish-unit-test-result" action uses), one picture per cell in the HTML, cell caching."""

from __future__ import annotations

import copy
import json
import math
import re
import time
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from junitparser import Error, Failure, JUnitXml, Skipped

from verifier.errors import BadInput, ExitStatus
from verifier.evidence.classify import Diagnosis
from verifier.matrix.cells import CellFailure, CellOptions, CellResult
from verifier.matrix.gate import CellState, GateReport, JudgedCell, judge
from verifier.matrix.plan import cell_key
from verifier.matrix.spec import parse_matrix
from verifier.paths import CacheLayout
from verifier.records.timeline import EventKind, Sample, Timeline
from verifier.records.trial import TrialResult
from verifier.report.html import render_html
from verifier.report.junit import MAX_OUTPUT_CHARS, junit_xml
from verifier.verdict.compare import ComparisonKind, SoakSummary, compare, summarize
from verifier.verdict.verdict import OtherBug, Verdict
from verifier.vocabulary import HangClass, HangProof, Liveness, TrialOutcome, VerdictKind

from conftest import LOST_WAKEUP_FIX, run_cli

# --- the matrix file ------------------------------------------------------------------------

GOOD = """
sources = ["debian"]
refs = ["debian/1.6.18-1"]
scenarios = ["maxconns-deadlock", "listener-lost-wakeup"]
trials = 2
soak = 5
[patch_sets]
as-shipped = []
with-fix = ["fix.diff"]
[expect]
"as-shipped/listener-lost-wakeup" = "hang:listener-lost-wakeup"
"*/maxconns-deadlock" = "pass"
"""


def _spec_dir(tmp_path: Path) -> Path:
    (tmp_path / "fix.diff").write_text(LOST_WAKEUP_FIX.read_text())
    return tmp_path / "gate.toml"


def test_matrix_file_parses_with_paths_relative_to_the_file(tmp_path: Path) -> None:
    spec = parse_matrix(_spec_dir(tmp_path), GOOD)
    assert [s.name for s in spec.patch_sets] == ["as-shipped", "with-fix"]
    assert spec.patch_sets[1].patches == ((tmp_path / "fix.diff").resolve(),)
    assert spec.reference == "as-shipped"
    assert spec.trials == 2 and spec.soak_s == 5.0
    assert spec.expectation("as-shipped", "listener-lost-wakeup") == "hang:listener-lost-wakeup"
    assert spec.expectation("with-fix", "listener-lost-wakeup") == "pass"
    assert spec.expectation("with-fix", "maxconns-deadlock") == "pass"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda t: "soaks = 3\n" + t, "unknown key 'soaks'"),
        (lambda t: t.replace('"listener-lost-wakeup"]', '"no-such"]'), "unknown scenario"),
        (lambda t: t.replace('["fix.diff"]', '["missing.diff"]'), "patch file not found"),
        (
            lambda t: t.replace('"hang:listener-lost-wakeup"', '"hang:no-such-class"'),
            "bad expectation",
        ),
        (lambda t: t.replace('"as-shipped/listener', '"shipped/listener'), "no patch set"),
        (lambda t: t.replace('"as-shipped/listener-lost-wakeup"', '"as-shipped"'), "PATCHSET/"),
        (lambda t: t.replace("trials = 2", "trials = 0"), "out of range"),
        (lambda t: t.replace("trials = 2", 'trials = 2\namplify = "watch"'), "defines only"),
        (lambda t: t.replace('sources = ["debian"]', "sources = []"), "sources is empty"),
        (lambda t: t.replace('sources = ["debian"]', 'sources = ["../nowhere"]'), "no such"),
        (lambda t: t + "\n[patch_sets\n", "not valid TOML"),
        (lambda t: 'tls = "yes"\n' + t, "tls must be true or false"),
    ],
)
def test_bad_matrix_files_fail_up_front_with_one_line(tmp_path: Path, change, message) -> None:
    with pytest.raises(BadInput) as caught:
        parse_matrix(_spec_dir(tmp_path), change(GOOD))
    text = caught.value.message
    assert message in text and "\n" not in text and text.startswith("matrix gate.toml: ")


def test_bad_matrix_file_on_the_command_line_is_one_line_exit_2(
    cache_layout: CacheLayout, tmp_path: Path
) -> None:
    path = _spec_dir(tmp_path)
    path.write_text(GOOD + "\n[wrong]\nx = 1\n")
    result = run_cli("matrix", str(path), cache=cache_layout)
    assert result.returncode == ExitStatus.BAD_INPUT
    assert (
        result.stderr.strip().splitlines() == [result.stderr.strip()]
        and "unknown key 'wrong'" in result.stderr
    )
    assert "Traceback" not in result.stderr


# --- comparison sentences (pure) -----------------------------------------------------------


def _soak(label: str, trials: int, times: tuple[float, ...], exposure: float) -> SoakSummary:
    return SoakSummary(label, trials, len(times), 0, times, exposure)


def test_fixed_is_said_as_a_comparison() -> None:
    shipped = _soak("as-shipped", 3, (1.0, 1.1, 1.3), 3.4)
    fixed = _soak("with-fix", 3, (), 60.0)
    result = compare(shipped, fixed)
    assert result.kind == ComparisonKind.FIXED
    assert result.sentence == (
        "as-shipped hung 3/3 at 1.1 s (median); with-fix: 0 hangs in 60 s, rate < 0.05/s at 95%"
    )
    # three hangs in 3.4 s: the pessimistic rate needs ~12 s of clean flood, 60 s is plenty
    assert 10 < result.required_soak_s < 15


def test_a_clean_soak_too_short_to_rule_out_the_reference_rate_is_not_called_fixed() -> None:
    result = compare(_soak("as-shipped", 1, (1.2,), 1.2), _soak("with-fix", 2, (), 10.0))
    assert result.kind == ComparisonKind.NOT_SHOWN
    assert result.sentence.startswith("as-shipped hung 1/1 at 1.2 s; with-fix: 0 hangs in 10 s")
    assert "not yet shown fixed" in result.sentence
    assert result.required_soak_s == pytest.approx(69.6, abs=1)  # 1 hang in 1.2 s, at 95%


def test_still_hangs_regression_neither_and_undecided() -> None:
    hung, other_hung = _soak("a", 1, (2.0,), 2.0), _soak("b", 2, (5.0,), 25.0)
    clean, other_clean = _soak("a", 1, (), 20.0), _soak("b", 1, (), 20.0)
    still = compare(hung, other_hung)
    assert still.kind == ComparisonKind.STILL_HANGS
    assert still.sentence == "a hung 1/1 at 2.0 s; b still hung 1/2 at 5.0 s"
    assert compare(clean, other_hung).kind == ComparisonKind.REGRESSION
    assert "(a regression)" in compare(clean, other_hung).sentence
    assert compare(clean, other_clean).kind == ComparisonKind.BOTH_CLEAN
    silent = SoakSummary("b", 1, 0, 0, (), 20.0, exercised=False)
    assert compare(hung, silent).kind == ComparisonKind.UNDECIDED


def test_summarize_sets_another_bugs_hang_aside() -> None:
    lost = Diagnosis(HangClass.LOST_WAKEUP, Liveness.WORKERS_ALIVE, "x")
    trials = [
        TrialResult(1, TrialOutcome.HANG, 20.0, "x", time_to_hang_s=3.0, diagnosis=lost),
        TrialResult(2, TrialOutcome.CLEAN, 20.0, "x"),
    ]
    summary = summarize("as-shipped", trials, HangClass.SELF_DEADLOCK)
    assert summary.hangs == 0 and summary.trials == 2
    assert summary.exposure_s == pytest.approx(23.0)  # clean up to the other bug's hang
    mine = summarize("as-shipped", trials, HangClass.LOST_WAKEUP)
    assert mine.hangs == 1 and mine.times_to_hang_s == (3.0,)


# --- the gate's decisions (pure) ------------------------------------------------------------


def _result(kind: VerdictKind, **verdict: Any) -> CellResult:
    return CellResult(
        key="k",
        row="debian@debian/1.6.18-1",
        patch_set="as-shipped",
        scenario="maxconns-deadlock",
        commit="0" * 40,
        host="h",
        run_dir="/r",
        started=0.0,
        seconds=1.0,
        verdict=Verdict(kind, f"{kind}: ...", **verdict),
    )


def test_judging_cells() -> None:
    other = [OtherBug(TrialOutcome.HANG, HangClass.LOST_WAKEUP, "lw", 2.0, "e", trial=1)]
    pass_with_other_bug = _result(VerdictKind.PASS, other_bugs=other)
    assert judge(pass_with_other_bug, "pass") == CellState.MET  # verify exits 13, the gate is met
    assert judge(pass_with_other_bug, "hang:listener-lost-wakeup") == CellState.MET
    hang = _result(VerdictKind.HANG, hang_class=HangClass.LOST_WAKEUP)
    assert judge(hang, "pass") == CellState.MISSED
    assert judge(hang, "hang:self-deadlock") == CellState.MISSED
    assert judge(_result(VerdictKind.NOT_APPLICABLE), "pass") == CellState.SKIPPED
    assert judge(_result(VerdictKind.NOT_APPLICABLE), "n/a") == CellState.MET
    assert judge(_result(VerdictKind.PASS), "n/a") == CellState.MISSED
    assert judge(_result(VerdictKind.INCONCLUSIVE), "pass") == CellState.MISSED
    assert judge(_result(VerdictKind.ERROR), "pass") == CellState.ERROR
    no_verdict = _result(VerdictKind.PASS)
    harness = CellResult(**{**vars(no_verdict), "verdict": None, "failure": CellFailure(8, "x")})
    build = CellResult(**{**vars(no_verdict), "verdict": None, "failure": CellFailure(5, "x")})
    assert judge(harness, "pass") == CellState.ERROR
    assert judge(build, "pass") == CellState.MISSED


def _report(states: list[CellState]) -> GateReport:
    cells = [JudgedCell(_result(VerdictKind.PASS), "pass", s) for s in states]
    return GateReport("g", "m.toml", "local", "as-shipped", cells)


def test_the_exit_status_is_decided_in_one_place() -> None:
    assert _report([CellState.MET, CellState.SKIPPED]).status == ExitStatus.SUCCESS
    assert _report([CellState.MET, CellState.ERROR]).status == ExitStatus.HARNESS_ERROR
    assert _report([CellState.MISSED, CellState.ERROR]).status == ExitStatus.GATE_FAILED


def test_cell_key_changes_with_each_input_and_only_then() -> None:
    options = CellOptions(2, 5.0)
    base = ("debian:1.6.18-1", "a" * 40, ["patch"], "scenario", options, {"cc": "gcc 12"})
    key = cell_key(*base)
    assert key == cell_key(*copy.deepcopy(base))
    for index, changed in enumerate(
        ["debian:1.6.18-2", "b" * 40, ["patch "], "scenario\n", CellOptions(2, 6.0), {"cc": "13"}]
    ):
        varied = list(base)
        varied[index] = changed
        assert cell_key(*varied) != key, index
    tls = list(base)
    tls[4] = CellOptions(2, 5.0, tls=True)  # a TLS build is another binary
    assert cell_key(*tls) != key


# --- reports from synthetic cells (pure) -----------------------------------------------------


def _timeline(hang_at: float | None, seconds: int) -> dict[str, Any]:
    timeline = Timeline()
    for t in range(seconds):
        ok = hang_at is None or t < hang_at
        timeline.sample(Sample(t + 0.5, 3000.0 if ok else 0.0, ok, 0.002, t * 3, t * 3))
    timeline.mark(2.2, EventKind.SATURATED)
    if hang_at is not None:
        timeline.mark(hang_at, EventKind.HANG_SUSPECTED)
        timeline.mark(hang_at + 3.1, EventKind.HANG_PROVEN, "state")
    return timeline.to_json()


def _synthetic_cells() -> list[JudgedCell]:
    hang = TrialResult(
        1,
        TrialOutcome.HANG,
        6.0,
        "/runs/t1",
        time_to_hang_s=2.5,
        verdict_at_s=5.6,
        diagnosis=Diagnosis(
            HangClass.LOST_WAKEUP,
            Liveness.WORKERS_ALIVE,
            "listener polls its 10 ms maxconns timer forever <&> \x1b[0m",
            proof=HangProof.STATE,
        ),
        timeline=Timeline.from_json(_timeline(2.5, 6)),
    )
    clean = TrialResult(
        2, TrialOutcome.CLEAN, 6.0, "/runs/t2", timeline=Timeline.from_json(_timeline(None, 6))
    )
    old = TrialResult(3, TrialOutcome.CLEAN, 6.0, "/runs/t3")  # recorded before timelines
    hung = CellResult(
        **{
            **vars(_result(VerdictKind.HANG, hang_class=HangClass.LOST_WAKEUP)),
            "trials": (hang,),
            "scenario": "listener-lost-wakeup",
        }
    )
    passed = CellResult(**{**vars(_result(VerdictKind.PASS)), "trials": (clean, old)})
    na = CellResult(**{**vars(_result(VerdictKind.NOT_APPLICABLE)), "patch_set": "old"})
    broken = CellResult(
        **{
            **vars(_result(VerdictKind.PASS)),
            "verdict": None,
            "patch_set": "broken",
            "failure": CellFailure(int(ExitStatus.PATCH_DOES_NOT_APPLY), "does not apply"),
        }
    )
    lost = CellResult(
        **{
            **vars(_result(VerdictKind.PASS)),
            "verdict": None,
            "patch_set": "lost",
            "failure": CellFailure(int(ExitStatus.HARNESS_ERROR), "worker lost"),
        }
    )
    return [
        JudgedCell(hung, "pass", CellState.MISSED),
        JudgedCell(passed, "pass", CellState.MET),
        JudgedCell(na, "pass", CellState.SKIPPED),
        JudgedCell(broken, "pass", CellState.MISSED),
        JudgedCell(lost, "pass", CellState.ERROR),
    ]


def test_junit_of_synthetic_cells_is_read_right_by_junitparser(tmp_path: Path) -> None:
    report = GateReport("gate", "m.toml", "local", "as-shipped", _synthetic_cells())
    path = tmp_path / "junit.xml"
    path.write_text(junit_xml(report))
    suite = next(iter(JUnitXml.fromfile(str(path))))
    declared = (suite.tests, suite.failures, suite.errors, suite.skipped)
    assert declared == (5, 2, 1, 1)
    suite.update_statistics()  # junitparser recounts from the testcases
    assert (suite.tests, suite.failures, suite.errors, suite.skipped) == declared
    cases = {(c.classname, c.name): c for c in suite}
    hung = cases[("debian@debian/1.6.18-1.as-shipped", "listener-lost-wakeup")]
    (failure,) = hung.result
    assert isinstance(failure, Failure) and failure.type == "HANG:listener-lost-wakeup"
    assert failure.message == "HANG: ..." and "listener polls" in failure.text
    assert "\x1b" not in failure.text  # control characters would make the XML invalid
    assert isinstance(cases[("debian@debian/1.6.18-1.old", "maxconns-deadlock")].result[0], Skipped)
    broken = cases[("debian@debian/1.6.18-1.broken", "maxconns-deadlock")].result[0]
    assert isinstance(broken, Failure) and broken.type == "patch-does-not-apply"
    assert isinstance(cases[("debian@debian/1.6.18-1.lost", "maxconns-deadlock")].result[0], Error)
    assert "evidence: h:/runs/t1" in hung.system_out


def test_junit_system_out_is_truncated() -> None:
    cell = _synthetic_cells()[1]
    many = tuple(
        TrialResult(i, TrialOutcome.CLEAN, 1.0, "/runs/" + "x" * 200) for i in range(1, 300)
    )
    big = JudgedCell(CellResult(**{**vars(cell.result), "trials": many}), "pass", CellState.MET)
    text = junit_xml(GateReport("gate", "m", "local", "as-shipped", [big]))
    out = re.search(r"<system-out>(.*)</system-out>", text, re.S)
    assert out is not None and MAX_OUTPUT_CHARS < len(out.group(1)) < MAX_OUTPUT_CHARS + 200
    assert "more characters; see the JSON report" in out.group(1)


class _Tags(HTMLParser):
    """Counts start tags and collects <figure> classes (a real HTML parser, not a regex)."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: dict[str, int] = {}
        self.scripts_or_links = 0
        self.polylines = 0
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.counts[tag] = self.counts.get(tag, 0) + 1
        if tag in ("script", "link", "img", "iframe") or any(
            k in ("src", "href") and v and "://" in v for k, v in attrs
        ):
            self.scripts_or_links += 1

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _parse_html(text: str) -> _Tags:
    parser = _Tags()
    parser.feed(text)
    parser.close()
    return parser


def test_html_has_one_self_contained_picture_per_cell() -> None:
    cells = _synthetic_cells()
    page = render_html(GateReport("gate", "m.toml", "local", "as-shipped", cells))
    tags = _parse_html(page)
    assert tags.counts["figure"] == len(cells) and tags.counts["svg"] == len(cells)
    assert tags.scripts_or_links == 0
    text = " ".join(tags.text)
    assert "HANG proven by state at 5.6 s" in text  # the hang marker, with how it was proven
    assert "no per-second samples recorded" in text  # the trial recorded before timelines
    for label in ("flood: connection cycles/s", "probe latency (ms)", "failed probe"):
        assert label in text  # the legend
    assert "seconds of flood" in text  # the x axis
    # the three series of a trial with a timeline: rate, EMFILE, triggers
    hung_svg = re.search(r'id="cell-[^"]*listener-lost-wakeup".*?</svg>', page, re.S)
    assert hung_svg is not None and hung_svg.group(0).count("<polyline") == 3
    assert hung_svg.group(0).count('class="probe-failed"') == 3  # t = 3.5, 4.5, 5.5


def test_html_renders_plain_trial_results_too() -> None:
    """The lead's verify can hand its outcome in: TrialResult with a Timeline object."""
    trial = TrialResult(
        1,
        TrialOutcome.HANG,
        6.0,
        "/r/t1",
        time_to_hang_s=2.0,
        verdict_at_s=5.0,
        diagnosis=Diagnosis(HangClass.SELF_DEADLOCK, Liveness.WORKERS_ALIVE, "x"),
        timeline=Timeline.from_json(_timeline(2.0, 6)),
    )

    class Build:
        describe, commit = "debian/1.6.18-1", "ec181d1973a1" + "0" * 28

    class Scenario:
        name = "maxconns-deadlock"

    class Verdict:
        kind, headline = "HANG", "HANG: self-deadlock"

    class Outcome:
        build, scenario, verdict, trials, run_dir = Build, Scenario, Verdict, [trial], "/r"

    tags = _parse_html(render_html([Outcome()], title="verify"))
    assert tags.counts["svg"] == 1 and "HANG: self-deadlock" in " ".join(tags.text)


# --- a real matrix on Debian's memcached ----------------------------------------------------

MATRIX = """
name = "memcached 1.6.18 test gate"
sources = ["debian"]
refs = ["debian/1.6.18-1"]
scenarios = ["maxconns-deadlock", "listener-lost-wakeup"]
trials = 2
soak = 5
[patch_sets]
as-shipped = []
with-fix = ["patches/listener-lost-wakeup-fix.diff"]
"""
EXPECT = '[expect]\n"as-shipped/listener-lost-wakeup" = "hang:listener-lost-wakeup"\n'
HUNG_CELL = ("debian@debian/1.6.18-1.as-shipped", "listener-lost-wakeup")


def _matrix(cache: CacheLayout, path: Path, *args: str) -> tuple[Any, dict[str, Any]]:
    out = path.parent / f"{path.stem}-{time.monotonic_ns()}"
    result = run_cli(
        "matrix",
        str(path),
        "--json",
        f"{out}.json",
        "--junit",
        f"{out}.xml",
        "--html",
        f"{out}.html",
        *args,
        cache=cache,
    )
    assert Path(f"{out}.json").is_file(), result.stdout + result.stderr
    document = json.loads(Path(f"{out}.json").read_text())
    document["_out"] = str(out)
    return result, document


@pytest.fixture(scope="module")
def gate_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("gate")
    (root / "patches").mkdir()
    (root / "patches" / "listener-lost-wakeup-fix.diff").write_text(LOST_WAKEUP_FIX.read_text())
    (root / "gate.toml").write_text(MATRIX + EXPECT)
    (root / "no-expect.toml").write_text(MATRIX)
    return root


@pytest.fixture(scope="module")
def first_run(cache_layout: CacheLayout, gate_dir: Path) -> tuple[Any, dict[str, Any]]:
    """The 2x2 matrix soaked afresh (--no-cache), with every report written."""
    return _matrix(cache_layout, gate_dir / "gate.toml", "--no-cache")


@pytest.mark.timeout(600)
def test_2x2_matrix_meets_its_expectations(first_run) -> None:
    result, document = first_run
    assert result.returncode == ExitStatus.SUCCESS, result.stdout + result.stderr
    cells = {(c["patch_set"], c["scenario"]): c for c in document["cells"]}
    assert len(cells) == 4 and not any(c["cached"] for c in cells.values())
    hung = cells[("as-shipped", "listener-lost-wakeup")]
    assert hung["verdict"]["kind"] == "HANG"
    assert hung["verdict"]["hang_class"] == "listener-lost-wakeup"
    assert hung["state"] == "met" and hung["expectation"] == "hang:listener-lost-wakeup"
    host, _, path = hung["evidence"].partition(":")
    assert host and (Path(path) / "evidence" / "backtraces.txt").is_file()
    for place in [("with-fix", "listener-lost-wakeup"), ("with-fix", "maxconns-deadlock")]:
        assert cells[place]["verdict"]["kind"] == "PASS", cells[place]["verdict"]["headline"]
    # pristine 1.6.18 may lose its listener under the self-deadlock flood too: another bug,
    # listed, and the cell still meets "pass"
    shipped = cells[("as-shipped", "maxconns-deadlock")]["verdict"]
    assert shipped["kind"] == "PASS"
    assert {b["class"] for b in shipped["other_bugs"]} <= {"listener-lost-wakeup"}
    (comparison,) = [c for c in document["comparisons"] if c["scenario"] == "listener-lost-wakeup"]
    assert comparison["kind"] in ("fixed", "not shown")
    assert comparison["sentence"].startswith("as-shipped hung 1/")
    assert "with-fix: 0 hangs in 10 s" in comparison["sentence"]
    assert "HANG listener-lost-wakeup at" in result.stdout and "PASS <" in result.stdout


def test_junit_of_the_real_matrix(first_run) -> None:
    _, document = first_run
    xml = JUnitXml.fromfile(document["_out"] + ".xml")
    (suite,) = list(xml)
    assert (suite.tests, suite.failures, suite.errors, suite.skipped) == (4, 0, 0, 0)
    cases = {(c.classname, c.name): c for c in suite}
    assert set(cases) == {
        (f"debian@debian/1.6.18-1.{p}", s)
        for p in ("as-shipped", "with-fix")
        for s in ("maxconns-deadlock", "listener-lost-wakeup")
    }
    assert all(c.is_passed and c.time > 0 for c in cases.values())
    assert "evidence: " in cases[HUNG_CELL].system_out
    assert "HANG: listener-lost-wakeup" in cases[HUNG_CELL].system_out


def test_html_of_the_real_matrix_has_a_picture_per_cell(first_run) -> None:
    _, document = first_run
    page = Path(document["_out"] + ".html").read_text()
    tags = _parse_html(page)
    assert tags.counts["svg"] == 4 and tags.counts["figure"] == 4
    assert tags.scripts_or_links == 0
    assert "HANG proven" in " ".join(tags.text)


def test_without_the_expectation_the_hang_fails_the_gate(
    first_run, cache_layout: CacheLayout, gate_dir: Path
) -> None:
    """Expectations are not in the cell key: the same cells, judged again, from the cache."""
    result, document = _matrix(cache_layout, gate_dir / "no-expect.toml")
    assert result.returncode == ExitStatus.GATE_FAILED, result.stdout + result.stderr
    assert all(c["cached"] for c in document["cells"])
    (suite,) = list(JUnitXml.fromfile(document["_out"] + ".xml"))
    assert (suite.tests, suite.failures, suite.errors) == (4, 1, 0)
    (failed,) = [c for c in suite if not c.is_passed]
    assert (failed.classname, failed.name) == HUNG_CELL
    (failure,) = failed.result
    assert failure.type == "HANG:listener-lost-wakeup"
    assert failure.message.startswith("HANG: listener-lost-wakeup")
    assert "diagnosis: listener polls" in failure.text
    assert "MISSED (expected pass)" in result.stdout


@pytest.mark.slow
def test_rerun_is_all_cached_and_an_edited_patch_resoaks_only_its_cells(
    first_run, cache_layout: CacheLayout, gate_dir: Path
) -> None:
    again, document = _matrix(cache_layout, gate_dir / "gate.toml")
    assert again.returncode == ExitStatus.SUCCESS, again.stdout + again.stderr
    assert all(c["cached"] for c in document["cells"])
    assert "0 soaked, 4 cached" in again.stdout
    before = {(c["patch_set"], c["scenario"]): c for c in first_run[1]["cells"]}
    assert {(c["patch_set"], c["scenario"]): c["key"] for c in document["cells"]} == {
        place: cell["key"] for place, cell in before.items()
    }
    # a new DEP-3 line changes the patch (and its cells' keys), not the code: ccache makes
    # the rebuild cheap, and only the with-fix cells soak again
    patch = gate_dir / "patches" / "listener-lost-wakeup-fix.diff"
    patch.write_text(f"Reviewed-by: test {time.time_ns()}\n" + patch.read_text())
    edited, document = _matrix(cache_layout, gate_dir / "gate.toml")
    assert edited.returncode == ExitStatus.SUCCESS, edited.stdout + edited.stderr
    cached = {(c["patch_set"], c["scenario"]): c["cached"] for c in document["cells"]}
    assert cached == {
        ("as-shipped", "maxconns-deadlock"): True,
        ("as-shipped", "listener-lost-wakeup"): True,
        ("with-fix", "maxconns-deadlock"): False,
        ("with-fix", "listener-lost-wakeup"): False,
    }
    assert "2 soaked, 2 cached" in edited.stdout
    assert math.isfinite(document["seconds"])
