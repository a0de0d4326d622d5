"""memcached's known concurrency bugs, each on its last bad and its first fixed release.

    .venv/bin/python benchmarks/known_bugs.py --repo PATH [--bug ID ...] [--runs 5]
        [--budget 600] [--told-soak 60] [--none-runs 1] [--no-bisect] [--cache-dir DIR]

PATH is a local clone of upstream memcached (with its tags). Per bug but the controls
(a bug that needs TLS is run on builds with --enable-tls), side by side:

  told     its own scenario and amplifier hints, ``--runs`` times; each run stops at the
           first HANG/CRASH/WRONG RESULT or after ``--budget`` seconds of soak (trials of
           ``--told-soak``)
  untold   ``--scenario everything --amplify auto`` (told nothing: all of memcached with the
           connection churn, hunting any class), from an empty memory, ``--runs`` times under
           the same budget; ``--untold flood`` uses the connection flood instead
  none     its scenario with no amplifier, ``--none-runs`` times, one trial of the budget
  fixed    the first fixed release under the told scenario, the same budget: a bounded PASS
           (any HANG/CRASH is a false verdict)
  bisect   ``verifier bisect --find-fix --bad LAST_BAD --good FIRST_FIXED``: the commit named,
           whether it is one of the bug's upstream fixes, and the wall time (not run when no
           told run exposed the bug: the bisect's first check would find no bad end)

Time to expose is wall seconds from verify's start (build cached; auto: discovery included)
to the verdict, median over the runs that exposed it. Figures taken on a shared machine are
skewed by its load: compare the columns of one run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tabulate import tabulate

from verifier.build.builder import Builder, BuildRequest
from verifier.build.versions import Version, parse_version
from verifier.knownbugs.spec import BugClass, KnownBug, load_known_bugs
from verifier.paths import CacheLayout, default_cache_dir
from verifier.scenario import load_scenario
from verifier.source.select import choose_source
from verifier.verdict.verdict import Verdict
from verifier.verify import VerifyCore, VerifyOptions, VerifyOutcome
from verifier.vocabulary import AmplifierKind, VerdictKind, WrongClass

ROOT = Path(__file__).resolve().parent.parent
AUTO_SOAK_S = 15.0  # per auto trial, as auto_figures.py
BISECT_TIMEOUT_S = 600.0  # a bisect that needs longer is reported as stopped


@dataclass(frozen=True)
class Run:
    seconds: float
    exposed: bool  # the bug's kind of verdict
    named: bool  # and its class
    headline: str


def release_before(tags: list[str], version: Version) -> str | None:
    """The last release tag (x.y.z, no -rc) older than ``version``."""
    releases = []
    for tag in tags:
        parsed = parse_version(tag)
        if parsed and tag == ".".join(map(str, parsed)) and parsed < version:
            releases.append((parsed, tag))
    return max(releases)[1] if releases else None


# A WRONG RESULT shows a wrong-answer bug when its witness is over the bug's own
# operations, whatever the class it was named (named too, if it has the bug's): on 1.4.5
# both the ascii incr race and the binary incr-with-initial double create are present,
# and only the witness's operations tell which one a run caught (the double create was
# named lost-update there: two creations answered alike).
WITNESS_OPS = {
    WrongClass.LOST_UPDATE: {"incr", "decr"},
    WrongClass.DOUBLE_CREATE: {"incr-init"},
    WrongClass.CAS_CHANGED: {"gets", "cas"},
}


def exposed_by(bug: KnownBug, outcome: VerifyOutcome) -> bool:
    """Does this run show this bug? Its kind of verdict (HANG, CRASH), and for a wrong
    answer a witness over this bug's operations. A bug with other shapes (``also_shows``:
    1.4.5's libevent corruption ends in a crash or a listener spinning in libevent) shows
    in a verdict of any of them, named by its class."""
    for shape in bug.also_shows:
        if outcome.verdict.kind == shape.kind and _names(shape, outcome.verdict):
            return True
    wanted = bug.bug_class
    if outcome.verdict.kind != wanted.kind:
        return False
    if wanted.kind != VerdictKind.WRONG or wanted.wrong_class not in WITNESS_OPS:
        return True
    own = WITNESS_OPS[wanted.wrong_class]
    return any(
        trial.witness is not None and {op.kind for op in trial.witness.ops} & own
        for trial in outcome.trials
    )


def _names(wanted: BugClass, verdict: Verdict) -> bool:
    if wanted.hang_class is not None:
        return verdict.hang_class == wanted.hang_class
    return wanted.wrong_class is None or verdict.wrong_class == wanted.wrong_class


def named_as(bug: KnownBug, verdict: Verdict) -> bool:
    """Does the verdict's class name this bug's (always, when the bug names none)?"""
    shapes = (bug.bug_class, *bug.also_shows)
    return any(verdict.kind == s.kind and _names(s, verdict) for s in shapes)


def verify_once(
    core: VerifyCore, request: BuildRequest, options: VerifyOptions, work: Path, bug: KnownBug
) -> Run:
    started = time.monotonic()
    outcome = core.verify(request, options, work)
    seconds = time.monotonic() - started
    verdict = outcome.verdict
    exposed = exposed_by(bug, outcome)
    named = exposed and named_as(bug, verdict)
    run = Run(seconds, exposed, named, verdict.headline)
    mode = options.amplify or "told"
    print(f"  {bug.id} {mode}: {verdict.headline[:70]} in {seconds:.1f} s", flush=True)
    return run


def summary(runs: list[Run]) -> str:
    if not runs:
        return "-"
    hit = [r.seconds for r in runs if r.exposed]
    if not hit:
        return f"0/{len(runs)}"
    named = sum(r.named for r in runs)
    also = "" if named == len(hit) else f" ({named} named by class)"
    return f"{len(hit)}/{len(runs)}, median {statistics.median(hit):.1f} s{also}"


def bisect_fix(
    repo: Path, bug: KnownBug, bad: str, good: str, cache: Path, tls: bool = False
) -> list[str]:
    assert bug.scenario is not None
    argv = [sys.executable, "-m", "verifier", "bisect", "--repo", str(repo), "--find-fix"]
    argv += ["--bad", bad, "--good", good, "--scenario", bug.scenario.name]
    argv += ["--cache-dir", str(cache)] + (["--tls"] if tls else [])
    argv += ["--amplify", bug.amplify] if bug.amplify else []  # told, as the other columns
    started = time.monotonic()
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, cwd=ROOT, timeout=BISECT_TIMEOUT_S
        )
    except subprocess.TimeoutExpired:  # run() kills the bisect (its servers die with it)
        return ["-", "-", f"> {BISECT_TIMEOUT_S:.0f} s (stopped)"]
    wall = time.monotonic() - started
    report = next(
        (
            line[len("report: ") :]
            for line in done.stdout.splitlines()
            if line.startswith("report:")
        ),
        None,
    )
    if report is None:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:]
        return ["-", "-", f"{wall:.0f} s (exit {done.returncode}: {' '.join(tail)[:60]})"]
    document = json.loads(Path(report).read_text())
    answer = document.get("answer") or {}
    sha = answer.get("sha", "")
    upstream = any(sha.startswith(fix) for fix in bug.fixed_by) if sha else False
    named = f"{sha[:9]} {answer.get('subject', '')[:40]}" if sha else "none"
    return [named, "yes" if upstream else "no", f"{wall:.0f} s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo", type=Path, required=True, help="a local clone of upstream")
    parser.add_argument("--bug", action="append", default=[], help="only this bug (repeatable)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--none-runs", type=int, default=1)
    parser.add_argument("--budget", type=float, default=600.0, help="seconds of soak per run")
    parser.add_argument("--told-soak", type=float, default=60.0, help="seconds per told trial")
    parser.add_argument("--no-bisect", action="store_true")
    parser.add_argument("--untold", default="everything", help="the untold column's scenario")
    parser.add_argument("--columns", default="told,untold,none,fixed", help="which to run")
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument(
        "--keep-runs", type=Path, default=None, help="keep every run's evidence here"
    )
    args = parser.parse_args()
    cache = CacheLayout((args.cache_dir or default_cache_dir()).expanduser().resolve())
    source = choose_source(str(args.repo.resolve()), None, cache)
    builder = Builder(cache.builds, cache.locks)
    tags = source.git.tags()
    generic = load_scenario(args.untold)
    columns = set(args.columns.split(","))
    rows, waiting = [], []
    with tempfile.TemporaryDirectory(prefix="known-bugs-") as tmp:
        # a verdict to look into later needs its evidence (a 1.6.23 leaked lock was seen
        # once here and never again by hand: its folder had gone with the temp dir)
        stamp = time.strftime("%Y%m%d-%H%M%S")  # a fresh folder: untold memories start empty
        root = args.keep_runs.resolve() / stamp if args.keep_runs else Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        for bug in load_known_bugs(only=tuple(args.bug)):
            work = root / bug.id  # each bug's runs apart (t0, u0 ... were shared before)
            if bug.control:
                continue
            if bug.scenario is None:
                waiting.append(f"{bug.id}: no scenario")
                continue
            tls = "tls" in bug.needs  # both releases built with --enable-tls
            if bug.first_fixed is not None:
                fixed = ".".join(map(str, bug.first_fixed))
                bad = release_before(tags, bug.first_fixed)
                fixed_request = BuildRequest(source, fixed, (), tls=tls)
            elif bug.candidate_fix is not None:  # not fixed upstream: newest release + the fix
                bad = release_before(tags, (99, 0, 0))
                fixed = f"{bad} + {bug.candidate_fix.name}"
                fixed_request = BuildRequest(source, bad or "", (bug.candidate_fix,), tls=tls)
            else:
                waiting.append(f"{bug.id}: no fix upstream and no candidate fix")
                continue
            if bad is None:
                waiting.append(f"{bug.id}: no release before {fixed}")
                continue
            bad_request = BuildRequest(source, bad, (), tls=tls)
            told_trials = max(1, int(args.budget // args.told_soak))
            # told: the bug's scenario carries its file's amplify hint as its default
            told = VerifyOptions(bug.scenario, trials=told_trials, soak_s=args.told_soak)
            untold = VerifyOptions(
                generic,
                amplify=AmplifierKind.AUTO,
                hunt=bug.bug_class.hang_class,
                trials=max(1, int(args.budget // AUTO_SOAK_S)),
                soak_s=AUTO_SOAK_S,
            )
            none = VerifyOptions(
                bug.scenario, amplify=AmplifierKind.NONE, trials=1, soak_s=args.budget
            )
            results: dict[str, list[Run]] = {"told": [], "untold": [], "none": []}
            for i in range(args.runs):
                if "told" in columns:
                    core = VerifyCore(builder, cache.tools)
                    told_run = verify_once(core, bad_request, told, work / f"t{i}", bug)
                    results["told"].append(told_run)
                if "untold" in columns:
                    fresh = VerifyCore(builder, cache.tools, auto_dir=work / f"auto-{bug.id}-{i}")
                    results["untold"].append(
                        verify_once(fresh, bad_request, untold, work / f"u{i}", bug)
                    )
            for i in range(args.none_runs if "none" in columns else 0):
                core = VerifyCore(builder, cache.tools)
                results["none"].append(verify_once(core, bad_request, none, work / f"n{i}", bug))
            fixed_headline = "not run"
            if "fixed" in columns:
                core = VerifyCore(builder, cache.tools)
                fixed_run = core.verify(fixed_request, told, work / "fixed")
                false = fixed_run.verdict.kind in (
                    VerdictKind.HANG,
                    VerdictKind.CRASH,
                    VerdictKind.WRONG,
                )
                fixed_headline = ("FALSE " if false else "") + fixed_run.verdict.headline[:48]
                print(f"  {bug.id} fixed: {fixed_run.verdict.headline[:70]}", flush=True)
            if args.no_bisect or bug.first_fixed is None:
                found = ["not run", "-", "-"]
            elif not any(r.exposed for r in results["told"]):
                found = ["not run: no told run exposed it", "-", "-"]
            else:
                found = bisect_fix(args.repo.resolve(), bug, bad, fixed, cache.root, tls)
            rows.append(
                [
                    bug.id,
                    f"{bad} / {fixed}",
                    bug.shapes,
                    summary(results["told"]),
                    summary(results["untold"]),
                    summary(results["none"]),
                    fixed_headline,
                    *found,
                ]
            )
    print(
        f"\nper bug: last bad / first fixed release; exposed runs and median wall seconds to the "
        f"verdict; {args.runs} told and untold runs, {args.none_runs} without amplifier, "
        f"budget {args.budget:.0f} s of soak each"
    )
    headers = ["bug", "releases", "class", "told", f"untold ({args.untold} + auto)", "none"]
    headers += ["fixed release"]
    headers += ["find-fix names", "upstream fix?", "bisect wall"]
    print(tabulate(rows, headers=headers))
    for line in waiting:
        print(f"not run: {line}")


if __name__ == "__main__":
    main()
