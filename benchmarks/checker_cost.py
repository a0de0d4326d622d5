"""The checker's cost: operations checked per second on correct histories.

Histories come from tests/simulated_history.py (a linearizable memcached in a dict, clients
with overlapping random intervals), so every cell must come out OK; a cell the budget did
not cover prints "budget" instead of a rate. Each cell is judged ``--runs`` times on the
same history; medians are printed, per CPU second of this process (what the checker costs
on a core of its own; on a shared machine wall time also counts other processes' turns)
and per wall second. The last column says what the goal "a 60 s soak's history is judged in
under 10% of the soak" means at the CPU rate: the workload may record up to rate / 10
checked ops per second of soak.

    .venv/bin/python benchmarks/checker_cost.py --runs 3
    .venv/bin/python benchmarks/checker_cost.py --sizes 10000 100000 --keys 1 10 --runs 5
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from tabulate import tabulate

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # this tree's verifier, not an installed one

from simulated_history import simulate  # noqa: E402

from verifier.check.checker import check_history  # noqa: E402
from verifier.vocabulary import CheckOutcome  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10**4, 10**5, 10**6])
    parser.add_argument("--keys", type=int, nargs="+", default=[1, 10, 100, 1000])
    parser.add_argument("--clients", type=int, default=8, help="concurrent simulated clients")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--budget", type=float, default=120.0, help="checker budget per run, s")
    parser.add_argument(
        "--skip", nargs="*", default=[], help="cells to skip, as SIZExKEYS (e.g. 1000000x1)"
    )
    parser.add_argument("--indeterminate", type=float, default=0.001)
    args = parser.parse_args()
    rows = []
    for size in args.sizes:
        for keys in args.keys:
            if keys > size or f"{size}x{keys}" in args.skip:
                continue
            made = time.monotonic()
            ops = simulate(
                size, keys, clients=args.clients, seed=size + keys, indeterminate=args.indeterminate
            )
            made = time.monotonic() - made
            rates: list[float] = []
            cpu_rates: list[float] = []
            secs: list[float] = []
            outcome = CheckOutcome.OK
            for _ in range(args.runs):
                cpu = time.process_time()
                report = check_history(ops, budget_s=args.budget)
                cpu = time.process_time() - cpu
                if report.verdict is not CheckOutcome.OK:
                    outcome = report.verdict
                    break
                secs.append(report.seconds)
                rates.append(size / report.seconds)
                cpu_rates.append(size / cpu)
            if outcome is not CheckOutcome.OK:
                shown = "budget" if outcome is CheckOutcome.UNKNOWN else "FALSE WRONG RESULT"
                rows.append([size, keys, shown, "", "", "", ""])
            else:
                cpu_rate = statistics.median(cpu_rates)
                rows.append(
                    [
                        size,
                        keys,
                        f"{cpu_rate:,.0f}",
                        f"{statistics.median(rates):,.0f}",
                        f"{statistics.median(secs):.2f}",
                        f"{len(rates)}",
                        f"{cpu_rate / 10:,.0f}",
                    ]
                )
            print(f"  {size}x{keys}: history made in {made:.1f} s", file=sys.stderr, flush=True)
    headers = [
        "ops",
        "keys",
        "ops/CPU-s",
        "ops/wall-s",
        "wall s",
        "runs",
        "soak ops/s judged in 10%",
    ]
    print(tabulate(rows, headers=headers, disable_numparse=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
