"""verifier matrix --executor dask://: a real scheduler and two real workers started with
their defaults (nanny on) on 127.0.0.1 give the same answers as the local executor, one
whole machine per cell, evidence on the worker; a worker killed mid-cell is retried on
another worker, and the cell says so."""

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

from verifier.bisect.remote import RemoteTester, Running
from verifier.bisect.tester import CommitTester
from verifier.build.builder import Builder, BuildRequest
from verifier.cluster.dask import DaskCluster
from verifier.errors import ExitStatus
from verifier.matrix.dask_executor import CELL_MODULE
from verifier.matrix.runner import plan
from verifier.matrix.spec import load_matrix
from verifier.paths import CacheLayout
from verifier.scenario import load_scenario
from verifier.source.select import SourceChoice, choose_source
from verifier.verify import VerifyCore, VerifyOptions
from verifier.vocabulary import ObservationKind

from conftest import LOST_WAKEUP_FIX, ROOT, run_cli
from synthetic_history import History, make_history

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
ONE_CELL = """
sources = ["debian"]
scenarios = ["listener-lost-wakeup"]
trials = 1
soak = 6
[patch_sets]
with-fix = ["fix.diff"]
"""
DASK = Path(sys.executable).parent / "dask"
BISECT_FAST = ["--max-soak", "10", "--endpoint-soak", "10", "--min-soak", "3"]
WORKERS = 2


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Stop one process we started, by its pid: SIGTERM, then SIGKILL."""
    if process.poll() is None:
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=15)


def _workers(address: str) -> dict[str, dict]:
    with distributed.Client(address, timeout=30) as client:
        return dict(client.scheduler_info(n_workers=-1)["workers"])


def _wait_for_workers(address: str, count: int, deadline_s: float = 120.0) -> None:
    with distributed.Client(address, timeout=30) as client:
        client.wait_for_workers(count, timeout=deadline_s)
    workers = _workers(address).values()
    assert sum(w.get("resources", {}).get("machine") == 1 for w in workers) >= count


@pytest.fixture(scope="module")
def cluster(cache_layout: CacheLayout, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``dask scheduler`` and two ``dask worker ADDRESS --nthreads 1 --resources machine=1``
    with their defaults (each under its nanny) on 127.0.0.1, sharing this session's build
    cache and importing this tree's verifier; all stopped by pid."""
    tmp_path = tmp_path_factory.mktemp("cluster")
    scheduler_file = tmp_path / "scheduler.json"
    env = {
        **os.environ,
        "VERIFIER_CACHE_DIR": str(cache_layout.root),
        "PYTHONPATH": str(ROOT),
    }
    names = ["scheduler"] + [f"worker{n}" for n in range(WORKERS)]
    logs = [open(tmp_path / f"{name}.log", "wb") for name in names]  # noqa: SIM115
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
        for log in logs[1:]:
            started.append(
                subprocess.Popen(
                    [str(DASK), "worker", address, "--nthreads", "1", "--nworkers", "1",
                     "--resources", "machine=1", "--no-dashboard", "--host", "127.0.0.1"],
                    stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp_path,
                )
            )  # fmt: skip
        _wait_for_workers(address, WORKERS)
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


@pytest.mark.slow
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
    # one machine per cell: the two cells were given to the two workers, one each, and
    # ran under their nannies with nothing to say
    assert sorted(c["worker"] for c in cells) == sorted(_workers(cluster))
    assert all(c["notes"] == [] for c in cells)


def _descendants(pid: int) -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command line) of every process below ``pid``."""
    table: dict[int, tuple[int, str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            argv = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        table[int(entry.name)] = (int(stat[stat.rindex(")") + 2 :].split()[1]), argv)
    below: dict[int, tuple[int, str]] = {}
    frontier = {pid}
    while frontier:
        frontier = {p for p, (ppid, _) in table.items() if ppid in frontier and p not in below}
        below.update({p: table[p] for p in frontier})
    return below


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_worker_killed_mid_cell_is_retried_on_another_worker(
    cluster: str, cache_layout: CacheLayout, tmp_path: Path
) -> None:
    (tmp_path / "fix.diff").write_text(LOST_WAKEUP_FIX.read_text())
    matrix = tmp_path / "one.toml"
    matrix.write_text(ONE_CELL)
    out = tmp_path / "dask.json"
    env = {**os.environ, "VERIFIER_CACHE_DIR": str(cache_layout.root)}
    port = cluster.rsplit(":", 1)[1]
    argv = [sys.executable, "-m", "verifier", "matrix", str(matrix), "--json", str(out),
            "--executor", f"dask://127.0.0.1:{port}", "--no-cache"]  # fmt: skip
    coordinator = subprocess.Popen(argv, env=env, cwd=ROOT, stderr=subprocess.PIPE, text=True)
    try:
        with distributed.Client(cluster, timeout=30) as client:
            by_pid = {pid: address for address, pid in client.run(os.getpid).items()}
        deadline = time.monotonic() + 120
        victim = None
        while victim is None and time.monotonic() < deadline:
            for pid, address in by_pid.items():
                below = _descendants(pid)
                if any("verifier.matrix.cell_child" in argv for _, argv in below.values()):
                    victim = (pid, address)
            time.sleep(0.2)
        assert victim is not None, "no worker started the cell"
        time.sleep(3)  # mid-cell: the build is cached, the soak is under way
        os.kill(victim[0], signal.SIGKILL)  # the worker process; its nanny starts another
        _, stderr = coordinator.communicate(timeout=300)
    finally:
        _stop(coordinator)  # type: ignore[arg-type]
    assert coordinator.returncode == ExitStatus.SUCCESS, stderr
    (cell,) = json.loads(out.read_text())["cells"]
    assert (cell["verdict"]["kind"], len(cell["trials"])) == ("PASS", 1)
    assert cell["worker"] and cell["worker"] != victim[1]
    (note,) = cell["notes"]
    assert f"worker {victim[1]} on " in note and "lost mid-run" in note
    assert "the lost attempt is not counted" in note and f"note: {note}" in stderr


def _memcached_below(pids: list[int]) -> list[int]:
    return [
        p
        for pid in pids
        for p, (_, argv) in _descendants(pid).items()
        if "memcached" in argv.split(" ")[0]
    ]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_cell_cancelled_while_it_soaks_is_stopped_on_its_worker(
    cluster: str, cache_layout: CacheLayout, tmp_path: Path
) -> None:
    """Dask does not interrupt a running task (seen in CI: a bisect that was done cancelled
    the soak still running on the other worker, and its memcached outlived the test).
    Cancelling asks the task to stop its child and waits until it is gone: no server is
    left soaking on the worker when ``cancel`` returns."""
    (tmp_path / "fix.diff").write_text(LOST_WAKEUP_FIX.read_text())
    matrix = tmp_path / "long.toml"
    matrix.write_text(ONE_CELL.replace("soak = 6", "soak = 300"))
    (planned,) = plan(load_matrix(matrix), cache_layout)
    with distributed.Client(cluster, timeout=30) as client:
        workers = list(client.run(os.getpid).values())
    dask_cluster = DaskCluster(cluster)
    try:
        future = dask_cluster.submit(CELL_MODULE, planned.job.to_json(), "cancelled")
        deadline = time.monotonic() + 300  # a build, when the cache has none
        while not _memcached_below(workers) and time.monotonic() < deadline:
            assert not future.done(), dask_cluster.outcome(future).failure
            time.sleep(0.2)
        assert _memcached_below(workers), "the cell's server never started"
        dask_cluster.cancel([future])
        assert _memcached_below(workers) == []
    finally:
        dask_cluster.close()


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


@pytest.fixture(scope="module")
def history(debian_source: SourceChoice, tmp_path_factory: pytest.TempPathFactory) -> History:
    assert debian_source.default_ref
    return make_history(
        debian_source.git.path,
        debian_source.default_ref,
        tmp_path_factory.mktemp("history") / "repo",
    )


def _bisect(cache: CacheLayout, history: History, *args: str) -> tuple[str, dict]:
    result = run_cli(
        "bisect", "--repo", str(history.path), "--good", history.good,
        "--bad", history.regression_bad, "--restart", *BISECT_FAST, *args, cache=cache,
    )  # fmt: skip
    assert result.returncode == ExitStatus.SUCCESS, result.stdout + result.stderr
    line = next(line for line in result.stdout.splitlines() if line.startswith("report: "))
    return result.stdout, json.loads(Path(line.removeprefix("report: ")).read_text())


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_dask_bisect_names_the_same_commit_as_local(
    cluster: str, cache_layout: CacheLayout, history: History
) -> None:
    """The same bisect, here and on two workers (one soak each at a time, planned given
    the other's): both name the introducing commit, confidently."""
    _, local = _bisect(cache_layout, history)
    port = cluster.rsplit(":", 1)[1]
    stdout, remote = _bisect(cache_layout, history, "--executor", f"dask://127.0.0.1:{port}")
    assert local["answer"]["sha"] == remote["answer"]["sha"] == history.introduce
    assert remote["confident"] and f"introduced by {history.introduce[:12]}" in stdout
    soaked = [s for s in remote["steps"] if s["run_dir"]]
    assert soaked and all(":" in s["run_dir"] for s in soaked)  # host:path on the worker


def test_a_failed_task_names_its_worker_the_cause_and_what_to_do(cluster: str) -> None:
    """A task whose child process fails (here: a module the worker does not have) comes
    back as one line naming the worker's address and host, the child's last words, where
    its output is, and what to do; never '?'."""
    dask_cluster = DaskCluster(cluster)
    try:
        future = dask_cluster.submit("verifier.no_such_module", {}, "broken")
        ((_, outcome),) = list(dask_cluster.as_completed([future]))
    finally:
        dask_cluster.close()
    assert outcome.result is None and outcome.status == ExitStatus.HARNESS_ERROR
    assert outcome.where is not None and outcome.where.worker in _workers(cluster)
    assert outcome.failure.startswith(f"on worker {outcome.where.worker} on {outcome.where.host}:")
    assert "No module named verifier.no_such_module" in outcome.failure
    assert "install the verifier" in outcome.failure and "?" not in outcome.failure
    host, _, log = outcome.failure.partition("(its output: ")[2].partition(";")[0].partition(":")
    assert host == outcome.where.host and Path(log).is_file()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_soaks_of_a_commit_go_back_to_the_worker_that_built_it(
    cluster: str, cache_layout: CacheLayout, history: History, tmp_path: Path
) -> None:
    """Each worker builds in its own cache: a commit soaked again is sent to the worker
    that built it (``workers=[it]``, loose), here three times while the other is idle."""
    request = BuildRequest(choose_source(str(history.path), None, cache_layout), history.good, ())
    builder = Builder(cache_layout.builds, cache_layout.locks)
    options = VerifyOptions(scenario=load_scenario("listener-lost-wakeup"))
    local = CommitTester(VerifyCore(builder, cache_layout.tools), request, options, tmp_path)
    dask_cluster = DaskCluster(cluster)
    tester = RemoteTester(dask_cluster, local, str(history.path), request)
    sha = history.good
    try:
        first = tester.start(sha, 3.0, None)
        assert tester.observation(_wait(tester, first)).kind == ObservationKind.CLEAN
        (builder_worker,) = [w for w in tester.built if sha in tester.built_on(w)]
        other = next(w for w in _workers(cluster) if w != builder_worker)
        for _ in range(3):
            assert tester.free_workers([]) and other in tester.free_workers([])
            again = tester.start(sha, 3.0, None, builder_worker)
            tester.observation(_wait(tester, again))
            assert dask_cluster.attempts(str(again.future.key))[-1].worker == builder_worker
        assert sha not in tester.built_on(other)
        tester.shared_cache = True  # --shared-cache: one cache for all, built for every worker
        assert sha in tester.built_on(other)
    finally:
        dask_cluster.close()


def _wait(tester: RemoteTester, running: Running) -> Running:
    for _ in tester.completion([running]):
        break
    return running
