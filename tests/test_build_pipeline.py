"""The source -> patch -> build pipeline on Debian's real memcached source, through the CLI."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from verifier.build.builder import BuildResult
from verifier.errors import ExitStatus
from verifier.paths import CacheLayout

from conftest import FIXTURES, MAXCONNS_FIX, run_cli


def _one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The error output starts with exactly one 'error:' line and has no traceback."""
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr
    return lines[0]


def _cache_listing(cache: CacheLayout) -> list[str]:
    return sorted(p.name for p in cache.builds.iterdir() if not p.name.startswith("."))


def test_debian_import_is_git_history_with_one_commit_per_patch(debian_source) -> None:
    repo = debian_source.git.repo
    tags = {t.name for t in repo.tags}
    assert debian_source.default_ref in tags and debian_source.default_ref.startswith("debian/")
    upstream = debian_source.default_ref.removeprefix("debian/").rsplit("-", 1)[0]
    assert upstream in tags
    commits = list(repo.iter_commits(f"{upstream}..{debian_source.default_ref}"))
    source = debian_source.git.repo.git.show(f"{debian_source.default_ref}:memcached.c")
    assert "maxconns_handler" in source
    patch_names = [c.message.split("Debian patch ", 1)[1].split()[0] for c in commits]
    assert patch_names and all(name.endswith(".patch") for name in patch_names)
    assert len(set(patch_names)) == len(commits)  # one commit per patch of the series
    # deterministic: the changelog date, not "now"
    assert all(c.authored_datetime.year < 2026 for c in commits)


def test_build_then_cache_hit(cache_layout: CacheLayout, pristine: BuildResult) -> None:
    assert pristine.binary.is_file()
    version = subprocess.run([str(pristine.binary), "-h"], capture_output=True, text=True)
    assert version.stdout.startswith("memcached 1.6")
    again = run_cli("build", "--source", "debian", cache=cache_layout)
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == str(pristine.binary)
    assert "cache hit" in again.stderr
    sections = subprocess.run(
        ["readelf", "-S", "-W", str(pristine.binary)], capture_output=True, text=True
    ).stdout
    assert ".debug_info" in sections and ".symtab" in sections  # -g kept: backtraces work


def test_reverse_fix_builds_memcached_without_it(build_debian, pristine: BuildResult) -> None:
    reverted = build_debian(MAXCONNS_FIX, reverse=True)
    source = (reverted.entry.tree / "memcached.c").read_text()
    handler = source[source.index("static void maxconns_handler") :][:600]
    assert "fd == -42" not in handler and "if (allow_new_conns == false)" in handler
    assert "maxconns_handler(0, 0, 0)" in source
    assert reverted.binary.read_bytes() != pristine.binary.read_bytes()
    assert "fuzz" in " ".join(reverted.patch_notes)  # the 1.4.6 diff needs fuzz on 1.6


def test_fix_forward_on_debian_is_already_applied(cache_layout: CacheLayout, pristine) -> None:
    before = _cache_listing(cache_layout)
    result = run_cli(
        "build", "--source", "debian", "--patch", str(MAXCONNS_FIX), cache=cache_layout
    )
    assert result.returncode == ExitStatus.PATCH_ALREADY_APPLIED
    assert "already applied" in _one_error_line(result)
    assert _cache_listing(cache_layout) == before


def test_patch_that_does_not_apply_shows_the_hunk(cache_layout: CacheLayout, pristine) -> None:
    result = run_cli(
        "build",
        "--source",
        "debian",
        "--patch",
        str(FIXTURES / "does-not-apply.diff"),
        cache=cache_layout,
    )
    assert result.returncode == ExitStatus.PATCH_DOES_NOT_APPLY
    assert "does not apply" in _one_error_line(result)
    assert "no_such_function_in_memcached" in result.stderr  # the failing hunk is shown


def test_patch_that_breaks_the_build(cache_layout: CacheLayout, pristine) -> None:
    result = run_cli(
        "build",
        "--source",
        "debian",
        "--patch",
        str(FIXTURES / "break-build.diff"),
        cache=cache_layout,
    )
    assert result.returncode == ExitStatus.BUILD_FAILED
    line = _one_error_line(result)
    log = Path(line.split("log: ", 1)[1].strip())
    assert log.is_file() and "this is not C" in log.read_text()
    assert "error" in result.stderr.split(line, 1)[1]  # the log's last lines follow


@pytest.mark.parametrize(
    ("args", "env", "status", "words"),
    [
        (["--ref", "no-such-tag-1.6.1"], {}, ExitStatus.UNKNOWN_REF, "nearest tags"),
        (["--patch", "no/such/file.diff"], {}, ExitStatus.BAD_INPUT, "not found"),
        ([], {"CC": "/nonexistent/cc"}, ExitStatus.ENV_MISSING, "compiler"),
        ([], {"PKG_CONFIG_LIBDIR": "/nonexistent"}, ExitStatus.ENV_MISSING, "libevent"),
    ],
    ids=["unknown-ref", "missing-patch", "missing-compiler", "missing-libevent"],
)
def test_bad_input_gives_one_line_and_its_exit_code(
    cache_layout: CacheLayout,
    pristine,
    args: list[str],
    env: dict[str, str],
    status: ExitStatus,
    words: str,
) -> None:
    result = run_cli("build", "--source", "debian", "--rebuild", *args, cache=cache_layout, env=env)
    assert result.returncode == status, result.stderr
    assert words in _one_error_line(result)


def test_missing_deb_src_says_what_to_add(tmp_path: Path) -> None:
    """With no deb-src entry, apt-get source cannot work: the message says what to add."""
    empty = tmp_path / "sources"
    empty.mkdir()
    (tmp_path / "apt.conf").write_text(
        f'Dir::Etc::sourcelist "{empty}/none.list";\nDir::Etc::sourceparts "{empty}";\n'
        f'Dir::State::lists "{tmp_path}/lists";\n'
    )
    (tmp_path / "lists" / "partial").mkdir(parents=True)
    result = run_cli(
        "build",
        "--source",
        "debian",
        cache=CacheLayout(tmp_path / "cache"),
        env={"APT_CONFIG": str(tmp_path / "apt.conf")},
    )
    assert result.returncode == ExitStatus.ENV_MISSING
    assert "deb-src" in _one_error_line(result)


def test_cache_list_and_clean(cache_layout: CacheLayout, pristine) -> None:
    listed = run_cli("cache", "list", cache=cache_layout)
    assert pristine.entry.key[:12] in listed.stdout
    assert "debian imports:" in listed.stdout  # the other parts of the cache, with sizes
    refused = run_cli("cache", "clean", cache=cache_layout)
    assert refused.returncode == ExitStatus.BAD_INPUT
    cleaned = run_cli("cache", "clean", "--failed", cache=cache_layout)
    assert cleaned.returncode == 0
    assert pristine.binary.is_file()  # only failures went
