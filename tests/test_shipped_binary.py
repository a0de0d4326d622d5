"""`verify --binary`: the binary a packager ships, stripped, with its debug info found by
build id in a Debian-style `.build-id` tree."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from verifier.errors import ExitStatus
from verifier.paths import CacheLayout

from conftest import run_cli

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def shipped(pristine, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:  # type: ignore[no-untyped-def]
    """A stripped copy of Debian's build, and a directory holding its debug file at
    .build-id/xx/rest.debug (what a -dbgsym package installs under /usr/lib/debug)."""
    root = tmp_path_factory.mktemp("shipped")
    binary, debug = root / "memcached", root / "memcached.debug"
    binary.write_bytes(pristine.binary.read_bytes())
    binary.chmod(0o755)
    subprocess.run(["objcopy", "--only-keep-debug", str(binary), str(debug)], check=True)
    subprocess.run(["strip", "--strip-all", str(binary)], check=True)
    notes = subprocess.run(["readelf", "-n", str(binary)], capture_output=True, text=True).stdout
    build_id = next(line.split()[-1] for line in notes.splitlines() if "Build ID" in line)
    tree = root / "debug" / ".build-id" / build_id[:2]
    tree.mkdir(parents=True)
    debug.rename(tree / f"{build_id[2:]}.debug")
    symbols = subprocess.run(["nm", str(binary)], capture_output=True, text=True)
    assert "no symbols" in symbols.stderr  # really stripped
    return binary, root / "debug"


def verify(cache: CacheLayout, run_dir: Path, *args: str) -> tuple[Any, dict[str, Any]]:
    result = run_cli("verify", "--run-dir", str(run_dir), *args, cache=cache)
    report = run_dir / "report.json"
    assert report.is_file(), result.stdout + result.stderr
    return result, json.loads(report.read_text())


def test_a_stripped_binary_with_its_debug_info_proves_the_lost_wakeup(
    cache_layout: CacheLayout, shipped: tuple[Path, Path], tmp_path: Path
) -> None:
    binary, debug_dir = shipped
    result, report = verify(
        cache_layout, tmp_path, "--binary", str(binary), "--debug-dir", str(debug_dir),
        "--scenario", "listener-lost-wakeup", "--soak", "20",
    )  # fmt: skip
    assert result.returncode == ExitStatus.BUG_SEEN, result.stdout + result.stderr
    assert report["binary"]["symbols"].startswith(str(debug_dir / ".build-id"))
    assert report["binary"]["degraded"] == []
    trial = report["trials"][-1]
    assert trial["hang_class"] == "listener-lost-wakeup" and trial["proof"] == "state"
    stack = trial["diagnosis"]["hung_stack"]
    assert "main (" in stack and "memcached.c:" in stack  # symbolised from the debug file


def test_without_debug_info_it_says_what_degrades(
    cache_layout: CacheLayout, shipped: tuple[Path, Path], tmp_path: Path
) -> None:
    binary, _ = shipped
    result, report = verify(
        cache_layout, tmp_path / "na", "--binary", str(binary),
        "--scenario", "listener-lost-wakeup", "--soak", "3",
    )  # fmt: skip
    assert result.returncode == ExitStatus.NOT_APPLICABLE, result.stdout + result.stderr
    assert "cannot be checked: no symbols" in report["verdict"]["headline"]
    (degraded,) = report["binary"]["degraded"]
    assert "watch and auto amplifiers" in degraded and "state proof are off" in degraded
    generic, flood = verify(
        cache_layout, tmp_path / "flood", "--binary", str(binary), "--scenario", "flood",
        "--soak", "3", "--trials", "1",
    )  # fmt: skip
    assert generic.returncode == ExitStatus.SUCCESS, generic.stdout + generic.stderr
    assert flood["binary"]["degraded"] == [degraded]
    assert "degraded" in generic.stdout


def test_binary_refuses_build_options(cache_layout: CacheLayout, tmp_path: Path) -> None:
    result = run_cli(
        "verify", "--binary", "/bin/true", "--patch", "maxconns-fix", cache=cache_layout
    )
    assert result.returncode == ExitStatus.BAD_INPUT
    assert "as shipped" in result.stderr and "Traceback" not in result.stderr
