"""memcached-127 (the 1.4.4/1.4.5 incr race) on upstream releases: the fraction of 10 s
trials that expose it, told and untold, beside Nekara's figure.

    .venv/bin/python benchmarks/memcached127.py --repo UPSTREAM_CLONE [--runs 10] [--soak 10]

Rows (each a separate one-trial ``verifier verify`` per run, a fresh server each time):
  told     1.4.5, --scenario incr-race (concurrent incr on counters that gain a digit,
           checked): WRONG RESULT lost-update expected
  untold   1.4.5, --scenario everything --amplify auto (told nothing)
  fixed    1.4.6, --scenario incr-race: no wrong answer expected
Nekara (ASE 2021) exposes memcached-127 in 20% of its iterations after replacing
memcached's sockets, libevent and pthreads with models (0.12% uncontrolled).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from tabulate import tabulate

ROWS = (
    ("told", "1.4.5", ["--scenario", "incr-race"]),
    ("untold", "1.4.5", ["--scenario", "everything", "--amplify", "auto"]),
    ("fixed", "1.4.6", ["--scenario", "incr-race"]),
)


def one_run(repo: str, ref: str, extra: list[str], soak: float, memory: Path) -> dict:
    with tempfile.TemporaryDirectory(prefix="m127-") as run_dir:
        done = subprocess.run(
            [sys.executable, "-m", "verifier", "verify", "--repo", repo, "--ref", ref,
             "--trials", "1", "--soak", str(soak), "--run-dir", run_dir,
             "--auto-memory", str(memory), *extra],
            capture_output=True, text=True, timeout=soak * 6 + 300,
        )  # fmt: skip
        report = Path(run_dir) / "report.json"
        if not report.exists():
            return {"kind": f"no report (exit {done.returncode})", "wrong": None, "at": None}
        data = json.loads(report.read_text())
    verdict = data["verdict"]
    trial = data["trials"][0] if data["trials"] else {}
    return {
        "kind": verdict["kind"],
        "wrong": verdict.get("wrong_class"),
        "at": trial.get("time_to_hang_s"),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", required=True)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--soak", type=float, default=10.0)
    parser.add_argument("--rows", default="told,untold,fixed")
    args = parser.parse_args()
    wanted = set(args.rows.split(","))
    table = []
    for label, ref, extra in ROWS:
        if label not in wanted:
            continue
        memory = Path(tempfile.mkdtemp(prefix="m127-memory-")) / "memory.json"  # fresh each row
        runs = []
        for n in range(args.runs):
            result = one_run(args.repo, ref, extra, args.soak, memory)
            runs.append(result)
            print(f"{label} {ref} run {n + 1}: {result}", file=sys.stderr, flush=True)
        exposed = [r for r in runs if r["wrong"] == "lost-update"]
        other = sorted({r["kind"] + (f" {r['wrong']}" if r["wrong"] else "") for r in runs})
        times = [r["at"] for r in exposed if r["at"] is not None]
        table.append(
            [
                label,
                ref,
                " ".join(extra),
                f"{len(exposed)}/{len(runs)}",
                f"{statistics.median(times):.1f}" if times else "-",
                ", ".join(other),
            ]
        )
    headers = ["row", "ref", "scenario", "lost-update in 10 s trials", "median s", "verdicts"]
    print(f"cpus {os.cpu_count()}, load {os.getloadavg()[0]:.1f}, soak {args.soak:g} s")
    print(tabulate(table, headers=headers))
    print("Nekara (ASE 2021): 20% of iterations, with sockets, libevent and pthreads mocked")
    return 0


if __name__ == "__main__":
    sys.exit(main())
