"""Compare bisect methods on the synthetic history (tests/synthetic_history.py), for real.

    .venv/bin/python benchmarks/bisect_compare.py [--repeats 10] [--modes amplified,rare]
        [--bayesect PATH/TO/git-bayesect] [--cache-dir DIR]

Methods, each repeated --repeats times on the same 16-commit regression range
(good = index 0, bad = index 15, culprit = index 10):
  verifier    `verifier bisect` (flake-aware, soak lengths chosen by the planner)
  git-bisect  `git bisect run verifier bisect-step --soak T` (one fixed soak per commit)
  bayesect    `git bayesect run verifier bisect-step --soak T` (git-bayesect, if given)
Modes:
  amplified   the watch amplifier on every EMFILE episode (deterministic hangs)
  rare        the amplifier on every 40th episode only (--amplify-every), a flaky race with a
              mean time-to-hang of several seconds, and short soaks: where flakiness bites
  natural     no amplifier at all, short soaks (what a plain flood does)
git-bayesect has no skip: bisect-step's 125 (the unbuildable commit) counts as a failure
there; runs longer than --bayesect-timeout are called off.
Builds come from a shared warm cache; "commits" is how many distinct commits each method
had to build (its cold-cache build cost).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tabulate import tabulate

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from verifier.paths import CacheLayout, default_cache_dir  # noqa: E402
from verifier.source.select import choose_source  # noqa: E402

from synthetic_history import REGRESSION_BAD, History, make_history  # noqa: E402

MODES = {
    "amplified": {"flags": [], "soak": 8.0},
    "rare": {"flags": ["--amplify-every", "40"], "soak": 6.0},
    "natural": {"flags": ["--amplify", "none"], "soak": 6.0},
}


@dataclass
class Run:
    method: str
    mode: str
    correct: bool
    answer: str
    wall_s: float
    commits: int
    soaks: int
    soak_s: float


def _verifier(*args: str) -> list[str]:
    return [sys.executable, "-m", "verifier", *args]


def run_verifier(history: History, mode: str, env: dict[str, str]) -> Run:
    spec = MODES[mode]
    soak = str(spec["soak"])
    started = time.monotonic()
    result = subprocess.run(
        _verifier(
            "bisect",
            "--repo",
            str(history.path),
            "--good",
            history.good,
            "--bad",
            history.regression_bad,
            "--restart",
            "--max-soak",
            str(4 * spec["soak"]),
            "--endpoint-soak",
            str(4 * spec["soak"]),
            *spec["flags"],
        ),
        capture_output=True,
        text=True,
        env=env,
    )
    wall = time.monotonic() - started
    match = re.search(r"^report: (.+)$", result.stdout, re.MULTILINE)
    if not match:
        reason = (result.stderr.strip().splitlines() or ["?"])[-1][:60]
        return Run("verifier", mode, False, f"no answer ({reason})", wall, 0, 0, 0.0)
    report = json.loads(Path(match[1]).read_text())
    answer = (report.get("answer") or {}).get("sha", "")
    tested = {s["sha"] for s in report["steps"] if s["kind"] != "skip" or s["build_seconds"]}
    del soak
    return Run(
        "verifier",
        mode,
        answer == history.introduce,
        answer[:12] or "ambiguous",
        wall,
        len(tested),
        report["soaks"],
        report["soak_seconds"],
    )


def _clone(history: History, where: Path) -> Path:
    work = where / "work"
    shutil.rmtree(work, ignore_errors=True)
    subprocess.run(["git", "clone", "-q", str(history.path), str(work)], check=True)
    return work


def _step_stats(output: str) -> tuple[int, int, float]:
    steps = re.findall(r"bisect-step ([0-9a-f]{12}): (\w+)", output)
    hung = re.findall(r"after ([\d.]+) s of flood", output)
    clean = re.findall(r"0 hangs in ([\d.]+) s", output)
    seconds = sum(map(float, hung)) + sum(map(float, clean))
    return len({sha for sha, _ in steps}), len(steps), seconds


def run_git_bisect(history: History, mode: str, env: dict[str, str], where: Path) -> Run:
    spec = MODES[mode]
    work = _clone(history, where)
    started = time.monotonic()
    subprocess.run(
        ["git", "-C", str(work), "bisect", "start", history.regression_bad, history.good],
        check=True,
        capture_output=True,
    )
    result = subprocess.run(
        [
            "git",
            "-C",
            str(work),
            "bisect",
            "run",
            *_verifier("bisect-step", "--soak", str(spec["soak"]), *spec["flags"]),
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    wall = time.monotonic() - started
    match = re.search(r"^([0-9a-f]{40}) is the first bad commit", result.stdout, re.MULTILINE)
    answer = match[1] if match else ""
    commits, soaks, seconds = _step_stats(result.stdout + result.stderr)
    if not answer:  # e.g. "only 'skip'ped commits left": say why in the table
        last = [line for line in result.stdout.splitlines() if line.strip()][-1:] or ["?"]
        answer = f"none ({last[0][:50]})"
    return Run(
        "git-bisect",
        mode,
        answer == history.introduce,
        answer if not match else answer[:12],
        wall,
        commits,
        soaks,
        seconds,
    )


def _text(data: bytes | str | None) -> str:
    return data.decode(errors="replace") if isinstance(data, bytes) else (data or "")


def run_bayesect(
    history: History, mode: str, env: dict[str, str], where: Path, bayesect: str, timeout_s: float
) -> Run:
    spec = MODES[mode]
    work = _clone(history, where)
    started = time.monotonic()
    subprocess.run(
        [bayesect, "start", "--old", history.good, "--new", history.regression_bad],
        cwd=work,
        check=True,
        capture_output=True,
    )
    try:
        result = subprocess.run(
            [
                bayesect,
                "run",
                "--confidence",
                "0.95",
                *_verifier("bisect-step", "--soak", str(spec["soak"]), *spec["flags"]),
            ],
            cwd=work,
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout_s,
        )
        output = result.stdout + result.stderr
    except subprocess.TimeoutExpired as expired:
        output = _text(expired.stdout) + _text(expired.stderr) + "\n(timed out)"
    wall = time.monotonic() - started
    match = re.search(r"converged to ([0-9a-f]{7,40})", output)
    answer = match[1] if match else ("timeout" if "(timed out)" in output else "")
    commits, soaks, seconds = _step_stats(output)
    correct = answer not in ("", "timeout") and history.introduce.startswith(answer)
    return Run("bayesect", mode, correct, answer[:12] or "none", wall, commits, soaks, seconds)


def summarise(runs: list[Run]) -> list[list[str]]:
    rows = []
    for key in sorted({(r.mode, r.method) for r in runs}):
        group = [r for r in runs if (r.mode, r.method) == key]
        rows.append(
            [
                key[0],
                key[1],
                str(len(group)),
                f"{sum(r.correct for r in group)}/{len(group)}",
                f"{statistics.median(r.wall_s for r in group):.0f}",
                f"{statistics.mean(r.commits for r in group):.1f}",
                f"{statistics.mean(r.soaks for r in group):.1f}",
                f"{statistics.mean(r.soak_s for r in group):.0f}",
                ", ".join(sorted({r.answer for r in group if not r.correct}))[:40] or "-",
            ]
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--modes", default="amplified,natural")
    parser.add_argument(
        "--bayesect-timeout",
        type=float,
        default=300.0,
        help="seconds before a git-bayesect run is called off (no answer)",
    )
    parser.add_argument("--methods", default="verifier,git-bisect,bayesect")
    parser.add_argument("--bayesect", default=shutil.which("git-bayesect"))
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument("--json", type=Path, help="also write every run here")
    args = parser.parse_args()
    cache = CacheLayout(args.cache_dir or default_cache_dir())
    env = {**os.environ, "VERIFIER_CACHE_DIR": str(cache.root)}
    source = choose_source(None, "debian", cache)
    assert source.default_ref
    runs: list[Run] = []
    methods = args.methods.split(",")
    with tempfile.TemporaryDirectory(prefix="bisect-compare-") as tmp:
        where = Path(tmp)
        history = make_history(source.git.path, source.default_ref, where / "history")
        print(
            f"history {history.path}: culprit {history.introduce[:12]} (index 10), "
            f"bad end index {REGRESSION_BAD}",
            file=sys.stderr,
        )
        for mode in args.modes.split(","):
            for repeat in range(args.repeats):
                for method in methods:
                    if method == "verifier":
                        run = run_verifier(history, mode, env)
                    elif method == "git-bisect":
                        run = run_git_bisect(history, mode, env, where)
                    elif method == "bayesect" and args.bayesect:
                        run = run_bayesect(
                            history, mode, env, where, args.bayesect, args.bayesect_timeout
                        )
                    else:
                        continue
                    runs.append(run)
                    print(
                        f"{mode} #{repeat + 1} {method}: {'ok' if run.correct else 'WRONG'} "
                        f"{run.answer} in {run.wall_s:.0f} s",
                        file=sys.stderr,
                    )
                    if args.json:
                        args.json.write_text(json.dumps([vars(r) for r in runs], indent=1))
    print(
        tabulate(
            summarise(runs),
            headers=[
                "mode",
                "method",
                "runs",
                "correct",
                "median wall s",
                "commits",
                "soaks",
                "soak s",
                "wrong answers",
            ],
        )
    )


if __name__ == "__main__":
    main()
