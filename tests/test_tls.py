"""TLS on Debian's real 1.6.18: a --tls build serves a workload's TLS group on a TLS
listener (the server's own stats count the TLS sessions) while the probes keep a plain one;
a build without TLS leaves TLS groups out (NOT APPLICABLE when nothing is left); a source
whose configure has no --enable-tls says so in one line."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from verifier.errors import ExitStatus
from verifier.paths import CacheLayout

from conftest import run_cli

# pipeline 1: pipelined TLS sets stall a connection in 1.5.13-1.6.38 (the known bug
# tls-pipelined-sets), which this test is not about
TLS_AND_PLAIN = """
name = "tls-and-plain"
[[group]]
name = "tls"
clients = 4
tls = true
keys = { count = 100, prefix = "t:" }
commands = { get = 3, set = 2 }
[[group]]
name = "plain"
clients = 1
rate = 200
keys = { count = 100, prefix = "p:" }
commands = { get = 1, set = 1 }
"""

SCENARIO = """
name = "tls-test"
summary = "test scenario"
requires_symbols = []
workload = "{workload}"
[server]
maxconns = 256
[amplify]
default = "none"
"""


def _verify(cache: CacheLayout, tmp_path: Path, *args: str) -> tuple[int, str, dict | None]:
    done = run_cli("verify", "--source", "debian", "--run-dir", str(tmp_path / "run"), *args,
                   cache=cache, timeout=600)  # fmt: skip
    report_path = tmp_path / "run" / "report.json"
    report = json.loads(report_path.read_text()) if report_path.is_file() else None
    return done.returncode, done.stdout + done.stderr, report


@pytest.mark.slow  # a TLS build of its own: about 1-2 min without ccache on 2 cores
def test_tls_clients_are_answered_over_tls_while_the_plain_probes_work(
    tmp_path: Path, cache_layout: CacheLayout
) -> None:
    workload = tmp_path / "w.toml"
    workload.write_text(TLS_AND_PLAIN)
    scenario = tmp_path / "s.toml"
    scenario.write_text(SCENARIO.format(workload=workload))
    code, out, report = _verify(
        cache_layout, tmp_path, "--tls", "--scenario", str(scenario), "--soak", "5"
    )
    assert code == ExitStatus.SUCCESS, out
    assert report is not None
    trial = report["trials"][0]
    assert trial["clients"]["left_out"] == []
    answered = {
        (row["group"], row["command"]): row["counts"] for row in trial["clients"]["commands"]
    }
    tls_sets = answered[("tls", "set")]
    assert tls_sets.get("stored", 0) > 100, answered
    assert set(tls_sets) == {"stored"}, answered  # no timeout, no closed connection
    server = trial["server_counts"]
    # the server's own word: TLS sessions were made (1.6.18 counts them with
    # ssl_session_cache, which the harness turns on), none failed
    assert server["ssl_new_sessions"] >= 4, server
    assert server["ssl_handshake_errors"] == 0, server
    assert server["cmd_set"] >= tls_sets["stored"]
    # the plain probes answered every second meanwhile
    samples = trial["timeline"]["samples"]
    column = trial["timeline"]["columns"].index("probe_ok")
    assert len(samples) >= 4 and all(s[column] for s in samples), samples


def test_a_tls_only_workload_on_a_build_without_tls_is_not_applicable(
    tmp_path: Path, cache_layout: CacheLayout, pristine
) -> None:  # type: ignore[no-untyped-def]
    code, out, _ = _verify(cache_layout, tmp_path, "--scenario", "tls-pipelined-sets")
    assert code == ExitStatus.NOT_APPLICABLE, out
    assert "NOT APPLICABLE" in out and "group pipelined" in out and "TLS" in out, out


def test_tls_asked_of_a_source_without_enable_tls_is_one_line(
    tmp_path: Path, cache_layout: CacheLayout
) -> None:
    """A 1.5.12-like tree (its configure.ac has no --enable-tls): one line, exit 7."""
    repo = tmp_path / "old"
    repo.mkdir()
    (repo / "version.m4").write_text("m4_define([VERSION_NUMBER], [1.5.12])\n")
    (repo / "configure.ac").write_text("AC_INIT([memcached], [1.5.12])\n")
    for argv in (["init", "-q"], ["add", "."], ["commit", "-qm", "1.5.12"], ["tag", "1.5.12"]):
        subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@t", *argv], cwd=repo, check=True
        )
    done = run_cli("build", "--repo", str(repo), "--ref", "1.5.12", "--tls", cache=cache_layout)
    assert done.returncode == ExitStatus.NOT_APPLICABLE, done.stderr
    lines = [x for x in done.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and "--enable-tls" in lines[0] and "1.5.12" in lines[0], done.stderr
    assert "Traceback" not in done.stderr
