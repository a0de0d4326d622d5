"""`bisect --amplify auto` on real upstream history, after a verify that learned.

    .venv/bin/python benchmarks/auto_bisect_upstream.py --repo PATH [--repeats 3]
        [--good 1.4.5] [--bad 1.4.6] [--expect hang:self-deadlock] [--cache-dir DIR]

PATH is a local clone of upstream memcached (with its tags). Each repeat, as a user would:

  learn   ``verifier verify --ref BAD --scenario flood --amplify auto --expect CLASS
          --trials 5 --soak 60 --auto-memory FRESH``: the hang, and the point it credits
  bisect  ``verifier bisect --good GOOD --bad BAD --scenario flood --amplify auto
          --auto-memory COPY --endpoint-tries 2 --endpoint-soak 20``: how long the bad end
          took, whether its soak stretched the credited point, the commit named, the
          posterior, the wall time

No figure is asserted: this prints what it saw, run by run (the machine's load skews the
seconds; compare the rows of one run).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tabulate import tabulate

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT_S = 1800.0


def _cli(args: list[str], cache: Path | None) -> tuple[subprocess.CompletedProcess[str], float]:
    argv = [sys.executable, "-m", "verifier", *args]
    if cache is not None:
        argv += ["--cache-dir", str(cache)]
    started = time.monotonic()
    done = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, timeout=TIMEOUT_S)
    return done, time.monotonic() - started


def _report_path(stdout: str) -> Path | None:
    for line in stdout.splitlines():
        if line.startswith("report: "):
            return Path(line.removeprefix("report: ").strip())
    return None


def learn(
    repo: Path, bad: str, expect: str, memory: Path, run_dir: Path, cache: Path | None
) -> tuple[float, str, str | None]:
    args = ["verify", "--repo", str(repo), "--ref", bad, "--scenario", "flood"]
    args += ["--amplify", "auto", "--expect", expect, "--trials", "5", "--soak", "60"]
    args += ["--auto-memory", str(memory), "--run-dir", str(run_dir)]
    done, wall = _cli(args, cache)
    report = run_dir / "report.json"
    if not report.is_file():
        return wall, "no report: " + (done.stderr.strip().splitlines() or ["?"])[-1], None
    document = json.loads(report.read_text())
    credited = None
    for trial in document["trials"]:
        named = (trial.get("stretched") or {}).get("attribution")
        if trial["outcome"] == "hang" and named:
            credited = named["point"]
    return wall, document["verdict"]["headline"][:60], credited


def bisect(
    repo: Path, good: str, bad: str, memory: Path, cache: Path | None
) -> tuple[float, dict[str, Any] | None, str]:
    args = ["bisect", "--repo", str(repo), "--good", good, "--bad", bad, "--restart"]
    args += ["--scenario", "flood", "--amplify", "auto", "--auto-memory", str(memory)]
    args += ["--endpoint-tries", "2", "--endpoint-soak", "20"]
    done, wall = _cli(args, cache)
    path = _report_path(done.stdout)
    if path is None or not path.is_file():
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:]
        return wall, None, f"exit {done.returncode}: {' '.join(tail)[:70]}"
    return wall, json.loads(path.read_text()), ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo", type=Path, required=True)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--good", default="1.4.5")
    parser.add_argument("--bad", default="1.4.6")
    parser.add_argument("--expect", default="hang:self-deadlock")
    parser.add_argument("--cache-dir", type=Path, default=None)
    args = parser.parse_args()
    repo = args.repo.resolve()
    rows = []
    with tempfile.TemporaryDirectory(prefix="auto-bisect-") as tmp:
        for n in range(1, args.repeats + 1):
            memory = Path(tmp) / f"memory-{n}.json"
            learn_wall, learned, credited = learn(
                repo, args.bad, args.expect, memory, Path(tmp) / f"verify-{n}", args.cache_dir
            )
            print(f"repeat {n}: verify {learned} in {learn_wall:.0f} s, credited {credited}")
            if not memory.is_file():
                rows.append([n, f"{learn_wall:.0f} s", learned, "-", "-", "-", "-", "-"])
                continue
            copy = Path(tmp) / f"memory-{n}-copy.json"
            shutil.copy(memory, copy)
            wall, report, failure = bisect(repo, args.good, args.bad, copy, args.cache_dir)
            if report is None:
                rows.append([n, f"{learn_wall:.0f} s", credited, failure, "-", "-", "-", "-"])
                print(f"repeat {n}: bisect failed: {failure}", flush=True)
                continue
            bad_end = next((s for s in report["steps"] if s["role"] == "bad end"), None)
            first = (
                f"{bad_end['kind']} at {bad_end['seconds']:.1f} s" if bad_end is not None else "-"
            )
            stretched_credited = bool(
                bad_end and credited and credited in (bad_end.get("stretched") or "")
            )
            if bad_end is not None:  # what its first try stretched, as the step recorded it
                print(f"repeat {n}: bad end stretched: {bad_end.get('stretched') or '-'}")
            answer = report.get("answer") or {}
            rows.append(
                [
                    n,
                    f"{learn_wall:.0f} s",
                    credited,
                    first,
                    "yes" if stretched_credited else "no",
                    answer.get("sha", "none")[:12],
                    f"{report.get('posterior', 0):.3f}",
                    f"{wall:.0f} s",
                ]
            )
            print(f"repeat {n}: bisect named {answer.get('sha', 'none')[:12]} in {wall:.0f} s")
    print(
        f"\n{args.repeats} repeats: verify {args.bad} (learn), then bisect {args.good}..{args.bad}"
    )
    headers = ["repeat", "verify wall", "credited", "bad end, first try", "stretched it"]
    headers += ["named", "posterior", "bisect wall"]
    print(tabulate(rows, headers=headers))


if __name__ == "__main__":
    main()
