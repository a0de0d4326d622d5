"""``python -m verifier.matrix.cell_child JOB.json RESULT.json``: run one cell in this
process and write its ``CellResult`` (on a cluster worker, see ``verifier.cluster.child``).

Exit 0 with the result written (a failed build or soak is a result too); any other exit
is a harness failure whose traceback is on stderr, which the parent keeps in a file.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from verifier.errors import EnvironmentMissing
from verifier.matrix.cells import CellJob
from verifier.matrix.run_cell import run_cell
from verifier.paths import CacheLayout, default_cache_dir
from verifier.util.atomic import write_json


def main(job_path: Path, result_path: Path) -> int:
    job = CellJob.from_json(json.loads(job_path.read_text(encoding="utf-8")))
    layout = CacheLayout(default_cache_dir().expanduser().resolve())
    try:
        result = run_cell(job, layout)
    except EnvironmentMissing as error:  # locally fatal; on a worker, one failed cell
        sys.stderr.write(f"{error.message}\n")
        return int(error.status)
    write_json(result_path, result.to_json())
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2])))
