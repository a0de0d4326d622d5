"""Sanitizer builds: real ASan/TSan builds of Debian's 1.6.18 under the flood, and the
report parser on reports real runs wrote (a live ASan report, a TSan report kept as a
fixture with its paths cut to base names, a UBSan report from a tiny program compiled here).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from verifier.bisect.commits import CommitRange
from verifier.bisect.session import BisectSettings, resume_key
from verifier.bisect.tester import observation_of
from verifier.build.builder import BuildRequest
from verifier.build.sanitizer import sanitizer_cflags
from verifier.errors import BadInput
from verifier.evidence.sanitizer import parse_report, read_reports
from verifier.matrix.cells import CellOptions
from verifier.matrix.spec import parse_matrix
from verifier.paths import CacheLayout
from verifier.records.trial import TrialResult
from verifier.scenario import load_scenario
from verifier.verdict.verdict import Expectation, decide
from verifier.verify import VerifyOptions
from verifier.vocabulary import ObservationKind, Sanitizer, TrialOutcome, VerdictKind

from conftest import FIXTURES, ROOT, run_cli

UAF = FIXTURES / "uaf-on-command.diff"
TSAN_REPORT = ROOT / "tests" / "fixtures" / "sanitizer" / "tsan-data-race.txt"


def _verify(cache: CacheLayout, run_dir: Path, *args: str) -> tuple[int, dict]:
    result = run_cli(
        "verify", "--source", "debian", "--scenario", "flood", "--trials", "1",
        "--run-dir", str(run_dir), *args, cache=cache,
    )  # fmt: skip
    assert (run_dir / "report.json").exists(), result.stderr[-2000:]
    return result.returncode, json.loads((run_dir / "report.json").read_text())


def test_sanitizer_flags_and_cache_key(builder, debian_source) -> None:  # type: ignore[no-untyped-def]
    """The sanitizer is in the flags (TSan at -O1), the cache key and the build's meta."""
    assert sanitizer_cflags("-O2 -g", Sanitizer.THREAD) == (
        "-O1 -g -fsanitize=thread -fno-omit-frame-pointer"
    )
    assert sanitizer_cflags("-O2 -g", None) == "-O2 -g"
    ref = debian_source.default_ref
    asan = builder.build(BuildRequest(debian_source, ref, sanitizer=Sanitizer.ADDRESS))
    plain = builder.build(BuildRequest(debian_source, ref))
    assert asan.key != plain.key
    assert asan.meta.sanitizer == "address" and plain.meta.sanitizer == ""
    assert "-fsanitize=address" in asan.meta.toolchain["cflags"]
    linked = subprocess.run(["ldd", str(asan.binary)], capture_output=True, text=True).stdout
    assert "libasan" in linked


def test_recipe_without_the_sanitizer_refuses_before_building(
    cache_layout: CacheLayout, tmp_path: Path
) -> None:
    shutil.copytree(ROOT / "recipes", tmp_path / "recipes")
    for recipe in (tmp_path / "recipes" / "build").glob("*.toml"):
        text = recipe.read_text().replace('"thread", ', "")
        recipe.write_text(text)
    result = run_cli(
        "build", "--source", "debian", "--sanitize", "thread",
        cache=cache_layout, env={"VERIFIER_RECIPES_DIR": str(tmp_path / "recipes")},
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "--sanitize thread" in result.stderr and "known to work: address, undefined" in (
        result.stderr
    )
    assert "Traceback" not in result.stderr


def test_asan_use_after_free_under_the_flood_is_a_crash_with_its_stacks(
    cache_layout: CacheLayout, tmp_path: Path
) -> None:
    """The fixture frees a key copy before reading it on every 4096th get: ASan ends the
    server at the first, and the verdict names the class and shows both stacks."""
    status, report = _verify(
        cache_layout, tmp_path / "run", "--sanitize", "address", "--patch", str(UAF),
        "--soak", "15", "--expect", "sanitizer:use-after-free",
    )  # fmt: skip
    assert status == 0, report["verdict"]["headline"]  # the expectation is met
    verdict = report["verdict"]
    assert verdict["kind"] == str(VerdictKind.CRASH)
    assert "use-after-free" in verdict["headline"]
    found = verdict["sanitizer"]
    assert found["class"] == "use-after-free" and found["kind"] == "heap-use-after-free"
    assert found["signature"] == "heap-use-after-free:uaf_fixture_touch/uaf_fixture_touch"
    access, freed = found["stacks"][:2]
    assert access["title"].startswith("READ of size 1")
    assert [f[0] for f in access["frames"][:2]] == ["uaf_fixture_touch", "process_get_command"]
    assert freed["title"].startswith("freed by thread")
    assert freed["frames"][0][0] == "__interceptor_free"  # skipped by the signature
    # the parser on the live report file the server wrote
    live = read_reports([Path(found["report"])])
    assert [f.signature for f in live] == [found["signature"]]
    assert live[0].stacks[2].title.startswith("previously allocated by thread")
    # bisect: the signature is the bug key; another report is another bug
    trial = TrialResult.from_json(report["trials"][0])
    assert trial.outcome == TrialOutcome.CRASH and trial.fatal_finding is not None
    key = f"sanitizer:{found['signature']}"
    same = observation_of("a" * 40, trial, None, key, build_seconds=0, cached=True)
    other = observation_of("b" * 40, trial, None, "sanitizer:x:y/z", build_seconds=0, cached=True)
    assert (same.kind, same.bug_key) == (ObservationKind.HANG, key)
    assert other.kind == ObservationKind.OTHER_BUG and other.other_bug is not None


@pytest.mark.slow
def test_the_same_use_after_free_is_silent_without_a_sanitizer(
    cache_layout: CacheLayout, tmp_path: Path
) -> None:
    """The plain build of the fixture serves the same flood: the read after free() finds
    the bytes still there. Only the sanitizer build shows the bug."""
    status, report = _verify(cache_layout, tmp_path / "run", "--patch", str(UAF), "--soak", "8")
    trial = report["trials"][0]
    assert report["verdict"]["kind"] == str(VerdictKind.PASS), report["verdict"]["headline"]
    assert status == 0 and trial["sanitizer"] == []
    # the flood's mix is 80% gets: twice 4096 answered commands reach the fixture's path
    assert trial["flood"]["ops"] > 2 * 4096


def test_asan_build_of_pristine_gives_a_bounded_pass(
    cache_layout: CacheLayout, tmp_path: Path
) -> None:
    """The same flood on the unpatched ASan build: no report, a bounded PASS."""
    status, report = _verify(cache_layout, tmp_path / "run", "--sanitize", "address", "--soak", "8")
    assert report["verdict"]["kind"] == str(VerdictKind.PASS), report["verdict"]["headline"]
    assert status == 0
    assert report["trials"][0]["sanitizer"] == []
    assert report["verdict"]["sanitizer"] is None


@pytest.mark.slow
def test_tsan_report_hunted_by_kind_is_a_wrong_result(
    cache_layout: CacheLayout, tmp_path: Path
) -> None:
    """TSan reports races in pristine 1.6.18 and the server runs on: unhunted they are
    counted in the PASS line; hunted (``--expect sanitizer:data-race``) one is the verdict."""
    status, report = _verify(
        cache_layout, tmp_path / "run", "--sanitize", "thread", "--soak", "6",
        "--expect", "sanitizer:data-race",
    )  # fmt: skip
    findings = report["trials"][0]["sanitizer"]
    assert findings, "TSan saw no race in 6 s of flood"
    verdict = report["verdict"]
    assert verdict["kind"] == str(VerdictKind.WRONG) and status == 0
    assert verdict["sanitizer"]["signature"] == findings[0]["signature"]
    trial = TrialResult.from_json(report["trials"][0])
    unhunted = decide([trial], hunted=None)
    assert unhunted.kind != VerdictKind.WRONG
    assert f"thread sanitizer: {len(findings)} reports" in unhunted.headline


def test_parser_on_a_tsan_data_race() -> None:
    """A report from the run above (pristine 1.6.18, 20 s): the race on allow_new_conns."""
    (finding,) = parse_report(TSAN_REPORT.read_text(), str(TSAN_REPORT), 0)
    assert finding.tool is Sanitizer.THREAD and finding.kind == "data-race"
    assert finding.pid == 10198
    assert finding.signature == "data-race:conn_close/maxconns_handler"
    assert finding.stacks[0].frames[0].location == "memcached.c:954"
    assert finding.stacks[1].title.startswith("Previous read of size 1")
    assert finding.summary == "data race memcached.c:954 in conn_close"
    assert Expectation.parse("sanitizer:data-race:conn_close/maxconns_handler").report == (
        finding.signature
    )
    assert finding.matches("data-race") and not finding.matches("use-after-free")


def test_parser_on_a_ubsan_report(tmp_path: Path) -> None:
    """UBSan gave no report on 1.6.18 under the flood; a tiny program gives a real one."""
    if not shutil.which("gcc"):
        pytest.skip("no gcc")
    source = tmp_path / "overflow.c"
    source.write_text(
        "#include <limits.h>\n#include <stdlib.h>\n"
        "__attribute__((noinline)) int bump(int x) { return x + 1; }\n"
        "int main(int argc, char **argv) { return bump(INT_MAX - 1 + argc) > 0; }\n"
    )
    program = tmp_path / "overflow"
    subprocess.run(
        ["gcc", "-O0", "-g", "-fsanitize=undefined", str(source), "-o", str(program)], check=True
    )
    env = {"UBSAN_OPTIONS": f"print_stacktrace=1:log_path={tmp_path / 'sanitizer'}"}
    subprocess.run([str(program)], env=env, check=False)
    (finding,) = read_reports(sorted(tmp_path.glob("sanitizer.*")))
    assert finding.tool is Sanitizer.UNDEFINED and finding.kind == "signed-integer-overflow"
    assert finding.signature.startswith("signed-integer-overflow:bump")
    assert not finding.fatal


def test_matrix_file_takes_a_sanitizer(tmp_path: Path) -> None:
    """``sanitize = "address"`` in a matrix file builds every cell with it (and changes
    the cells' cache key); plain cells keep theirs; an unknown sanitizer is one line."""
    text = 'sources = ["debian"]\nscenarios = ["flood"]\n[patch_sets]\nas-shipped = []\n'
    plain = parse_matrix(tmp_path / "gate.toml", text)
    asan = parse_matrix(tmp_path / "gate.toml", 'sanitize = "address"\n' + text)
    assert (plain.sanitize, asan.sanitize) == (None, "address")
    assert "sanitize" not in CellOptions(1, 5.0).to_json()
    assert CellOptions.from_json(CellOptions(1, 5.0, sanitize="thread").to_json()).sanitize == (
        "thread"
    )
    with pytest.raises(BadInput, match="sanitize 'memory'"):
        parse_matrix(tmp_path / "gate.toml", 'sanitize = "memory"\n' + text)


def test_bisect_resume_key_covers_the_sanitizer_and_the_report_hunted() -> None:
    """A sanitized bisect never resumes a plain one's state, nor one hunting another report."""
    commits = CommitRange(("a" * 40, "b" * 40), False)
    request = BuildRequest(source=None, ref="a" * 40)  # type: ignore[arg-type]
    options = VerifyOptions(scenario=load_scenario("flood"))
    settings = BisectSettings()
    toolchain = {"cc": "gcc 12", "cflags": "-O2", "cpu": "x"}
    asan = replace(request, sanitizer=Sanitizer.ADDRESS)
    hunting = replace(options, hunt_report="data-race")
    keys = {
        resume_key("src", commits, request, options, settings, toolchain)[1],
        resume_key("src", commits, asan, options, settings, toolchain)[1],
        resume_key("src", commits, asan, hunting, settings, toolchain)[1],
    }
    assert len(keys) == 3


def _uaf_history(debian_repo: Path, base_ref: str, dest: Path) -> list[str]:
    """base -> 0..3 harmless -> 4 brings the use-after-free fixture -> 5..7 harmless."""
    subprocess.run(["git", "clone", "-q", str(debian_repo), str(dest)], check=True)
    env = {
        "GIT_AUTHOR_NAME": "Synthetic", "GIT_AUTHOR_EMAIL": "synthetic@example.invalid",
        "GIT_COMMITTER_NAME": "Synthetic", "GIT_COMMITTER_EMAIL": "synthetic@example.invalid",
        "PATH": "/usr/bin:/bin",
    }  # fmt: skip

    def git(*args: str, stamp: str = "") -> str:
        extra = {"GIT_AUTHOR_DATE": stamp, "GIT_COMMITTER_DATE": stamp} if stamp else {}
        return subprocess.run(
            ["git", "-C", str(dest), *args], check=True, capture_output=True, text=True,
            env={**env, **extra},
        ).stdout.strip()  # fmt: skip

    git("checkout", "-q", "-B", "uaf-history", base_ref)
    shas = []
    for index in range(8):
        if index == 4:
            subprocess.run(["patch", "-p1", "-s", "-i", str(UAF)], cwd=dest, check=True)
            subject = "Copy the key for the get path"
        else:
            with (dest / "doc" / "protocol.txt").open("a") as handle:
                handle.write(f"\nSynthetic note {index}: a harmless edit.\n")
            subject = f"Docs: harmless edit {index}"
        git("add", "-A")
        stamp = f"2024-02-{index + 1:02d}T12:00:00Z"
        git("commit", "-q", "--no-verify", "-m", subject, stamp=stamp)
        shas.append(git("rev-parse", "HEAD"))
    return shas


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_bisect_hunts_the_use_after_free_by_its_signature(
    cache_layout: CacheLayout, debian_source, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """ASan builds of each commit: the report's signature is the bug key, and the commit
    that brought the use-after-free is named (about 250 s on 2 shared cores: -m slow)."""
    assert debian_source.default_ref
    shas = _uaf_history(debian_source.git.path, debian_source.default_ref, tmp_path / "repo")
    result = run_cli(
        "bisect", "--repo", str(tmp_path / "repo"), "--good", shas[0], "--bad", shas[7],
        "--sanitize", "address", "--scenario", "flood", "--report", "use-after-free",
        "--max-soak", "10", "--endpoint-soak", "10", "--min-soak", "3", "--restart",
        cache=cache_layout, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    line = next(line for line in result.stdout.splitlines() if line.startswith("report: "))
    report = json.loads(Path(line.removeprefix("report: ")).read_text())
    assert report["answer"]["sha"] == shas[4]
    assert report["reference_bug_key"] == (
        "sanitizer:heap-use-after-free:uaf_fixture_touch/uaf_fixture_touch"
    )


def test_parser_on_a_tsan_lock_order_inversion() -> None:
    """From ``verify --sanitize thread --patch lock-order-inversion.diff --scenario flood``:
    TSan reported the inversion, then the two threads deadlocked (HANG proven by the cycle)."""
    text = (TSAN_REPORT.parent / "tsan-lock-order-inversion.txt").read_text()
    (finding,) = parse_report(text, "fixture", 0)
    assert finding.kind == "lock-order-inversion" and finding.finding_class == finding.kind
    assert len(finding.stacks) == 5  # 2 acquisitions, 2 held-since, 1 thread creation
    assert finding.signature == "lock-order-inversion:STATS_LOCK/conn_close"
    assert finding.stacks[1].title.startswith("Mutex M1317 previously acquired")


def test_tsan_names_the_inversion_the_deadlock_then_proves(
    cache_layout: CacheLayout, tmp_path: Path
) -> None:
    """The ABBA fixture on a TSan build: the hang is proven by the cycle, and TSan's report
    of the same inversion, hunted by its signature, is carried on the verdict."""
    wanted = "lock-order-inversion:STATS_LOCK/conn_close"
    status, report = _verify(
        cache_layout, tmp_path / "run", "--sanitize", "thread", "--soak", "15",
        "--patch", str(FIXTURES / "lock-order-inversion.diff"), "--expect", f"sanitizer:{wanted}",
    )  # fmt: skip
    verdict = report["verdict"]
    assert verdict["kind"] == str(VerdictKind.HANG) and verdict["hang_class"] == "deadlock"
    assert verdict["sanitizer"]["signature"] == wanted
    assert status == 0
