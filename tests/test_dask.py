"""verifier matrix --executor dask://: a real scheduler and a real worker on 127.0.0.1 give
the same answers as the local executor, one whole machine per cell, evidence on the worker."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from verifier.errors import ExitStatus
from verifier.paths import CacheLayout

from conftest import LOST_WAKEUP_FIX, run_cli

distributed = pytest.importorskip("distributed")

MATRIX = """
sources = ["debian"]
scenarios = ["listener-lost-wakeup"]
trials = 2
soak = 5
[patch_sets]
as-shipped = []
with-fix = ["fix.diff"]
[expect]
"as-shipped/listener-lost-wakeup" = "hang:listener-lost-wakeup"
"""
DASK = Path(sys.executable).parent / "dask"


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Stop one process we started, by its pid: SIGTERM, then SIGKILL."""
    if process.poll() is None:
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=15)


def _wait_for_worker(address: str, deadline_s: float = 90.0) -> None:
    with distributed.Client(address, timeout=30) as client:
        client.wait_for_workers(1, timeout=deadline_s)
        workers = client.scheduler_info()["workers"].values()
        assert any(w.get("resources", {}).get("machine") == 1 for w in workers)


@pytest.fixture()
def cluster(cache_layout: CacheLayout, tmp_path: Path) -> Iterator[str]:
    """``dask scheduler`` and one ``dask worker --nthreads 1 --resources machine=1`` on
    127.0.0.1 (the worker shares this session's build cache); both stopped by pid."""
    scheduler_file = tmp_path / "scheduler.json"
    env = {**os.environ, "VERIFIER_CACHE_DIR": str(cache_layout.root)}
    logs = [open(tmp_path / f"{name}.log", "wb") for name in ("scheduler", "worker")]  # noqa: SIM115
    started: list[subprocess.Popen[bytes]] = []
    try:
        started.append(
            subprocess.Popen(
                [str(DASK), "scheduler", "--host", "127.0.0.1", "--port", "0",
                 "--no-dashboard", "--scheduler-file", str(scheduler_file)],
                stdout=logs[0], stderr=subprocess.STDOUT, env=env, cwd=tmp_path,
            )
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while not scheduler_file.is_file() and time.monotonic() < deadline:
            time.sleep(0.2)
        address = json.loads(scheduler_file.read_text())["address"]
        assert address.startswith("tcp://127.0.0.1:")
        started.append(
            subprocess.Popen(
                [str(DASK), "worker", address, "--nthreads", "1", "--resources", "machine=1",
                 "--no-nanny", "--no-dashboard", "--host", "127.0.0.1"],
                stdout=logs[1], stderr=subprocess.STDOUT, env=env, cwd=tmp_path,
            )
        )  # fmt: skip
        _wait_for_worker(address)
        yield address
    finally:
        for process in reversed(started):
            _stop(process)
        for log in logs:
            log.close()


def _run(cache: CacheLayout, matrix: Path, out: Path, *args: str) -> tuple[int, dict]:
    result = run_cli("matrix", str(matrix), "--json", str(out), *args, cache=cache)
    assert out.is_file(), result.stdout + result.stderr
    return result.returncode, json.loads(out.read_text())


def _answers(document: dict) -> dict[tuple[str, str], tuple[str, str | None]]:
    return {
        (c["patch_set"], c["scenario"]): (c["verdict"]["kind"], c["verdict"]["hang_class"])
        for c in document["cells"]
    }


@pytest.mark.timeout(600)
def test_dask_cluster_gives_the_same_answers_as_local(
    cluster: str, cache_layout: CacheLayout, tmp_path: Path
) -> None:
    (tmp_path / "fix.diff").write_text(LOST_WAKEUP_FIX.read_text())
    matrix = tmp_path / "gate.toml"
    matrix.write_text(MATRIX)
    local_status, local = _run(cache_layout, matrix, tmp_path / "local.json")
    port = cluster.rsplit(":", 1)[1]
    dask_status, remote = _run(
        cache_layout,
        matrix,
        tmp_path / "dask.json",
        "--executor",
        f"dask://127.0.0.1:{port}",
        "--no-cache",
    )
    assert local_status == dask_status == ExitStatus.SUCCESS
    assert (
        _answers(remote)
        == _answers(local)
        == {
            ("as-shipped", "listener-lost-wakeup"): ("HANG", "listener-lost-wakeup"),
            ("with-fix", "listener-lost-wakeup"): ("PASS", None),
        }
    )
    assert remote["executor"] == f"dask://127.0.0.1:{port}"
    cells = remote["cells"]
    assert not any(c["cached"] for c in cells)
    for cell in cells:  # the evidence stays on the worker; the report says where
        assert cell["host"] and Path(cell["run_dir"], "cell.json").is_file()
        assert cell["evidence"].startswith(cell["host"] + ":")
    hung = next(c for c in cells if c["verdict"]["kind"] == "HANG")
    assert Path(hung["evidence"].partition(":")[2], "evidence", "backtraces.txt").is_file()
    # one machine per cell: the worker's single "machine" ran the cells one after the other
    spans = sorted((c["started"], c["started"] + c["seconds"]) for c in cells)
    assert spans[0][1] <= spans[1][0] + 0.5


def test_unreachable_scheduler_is_one_line(cache_layout: CacheLayout, tmp_path: Path) -> None:
    (tmp_path / "fix.diff").write_text(LOST_WAKEUP_FIX.read_text())
    matrix = tmp_path / "gate.toml"
    matrix.write_text(MATRIX)
    result = run_cli(
        "matrix", str(matrix), "--executor", "dask://127.0.0.1:9", cache=cache_layout,
        env={"VERIFIER_DASK_TIMEOUT": "3"}, timeout=120,
    )  # fmt: skip
    assert result.returncode == ExitStatus.HARNESS_ERROR, result.stderr
    assert "cannot reach the Dask scheduler at dask://127.0.0.1:9" in result.stderr
    assert "Traceback" not in result.stderr
