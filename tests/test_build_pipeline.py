"""The source -> patch -> build pipeline on Debian's real memcached source, through the CLI."""

from __future__ import annotations

import datetime as dt
import email.utils
import os
import re
import shutil
import subprocess
from pathlib import Path

import git
import pytest

from verifier.build.builder import BuildResult
from verifier.errors import ExitStatus
from verifier.paths import CacheLayout
from verifier.source.debian import DebianSource
from verifier.source.git_source import GitSource

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


def _changelog_date(cache: CacheLayout, version: str) -> dt.datetime:
    """``dpkg-parsechangelog -S Date`` of the downloaded source package."""
    debian_tar = next((cache.debian / "downloads" / version).glob("*.debian.tar.*"))
    changelog = subprocess.run(
        ["tar", "-xOf", str(debian_tar), "debian/changelog"], capture_output=True, check=True
    ).stdout
    parsed = subprocess.run(
        ["dpkg-parsechangelog", "-l", "-", "-S", "Date"],
        input=changelog,
        capture_output=True,
        check=True,
    )
    return email.utils.parsedate_to_datetime(parsed.stdout.decode().strip())


def test_debian_import_is_dated_by_the_changelog_and_reproducible(
    tmp_path: Path, cache_layout: CacheLayout, debian_source
) -> None:
    """Every imported commit carries the changelog's date, so a fresh import (another
    machine, an emptied cache) gives the same SHAs."""
    version = debian_source.label.removeprefix("debian:")
    imported = DebianSource(cache_layout.debian, version).ensure()
    repo = debian_source.git.repo
    commits = list(repo.iter_commits(imported.debian_tag))  # the whole imported history
    date = _changelog_date(cache_layout, version)
    assert commits and all(c.committed_datetime == date for c in commits)
    assert all(c.authored_datetime == date for c in commits)
    fresh = tmp_path / "debian"  # a new cache: only the downloaded files are shared
    shutil.copytree(cache_layout.debian / "downloads", fresh / "downloads")
    again = DebianSource(fresh, version).ensure()
    fresh_repo = git.Repo(again.repo_path)
    for tag in (imported.upstream_tag, imported.debian_tag):
        assert fresh_repo.git.rev_parse(tag) == repo.git.rev_parse(tag)


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


def test_cache_list_and_clean(tmp_path: Path, cache_layout: CacheLayout, pristine) -> None:
    listed = run_cli("cache", "list", cache=cache_layout)
    assert pristine.entry.key[:12] in listed.stdout
    assert "debian imports:" in listed.stdout  # the other parts of the cache, with sizes
    refused = run_cli("cache", "clean", cache=cache_layout)
    assert refused.returncode == ExitStatus.BAD_INPUT
    # --failed on a copy of a real failed build and a real good one (the session's cache
    # is left alone: other tests reuse both)
    broken = run_cli(
        "build",
        "--source",
        "debian",
        "--patch",
        str(FIXTURES / "break-build.diff"),
        cache=cache_layout,
    )
    assert broken.returncode == ExitStatus.BUILD_FAILED
    failed_entry = Path(_one_error_line(broken).split("log: ", 1)[1].strip()).parent
    copy = CacheLayout(tmp_path / "cache")
    for entry in (failed_entry, pristine.entry.path):
        shutil.copytree(entry, copy.builds / entry.name, symlinks=True)
    assert _cache_listing(copy) == sorted([failed_entry.name, pristine.key])
    cleaned = run_cli("cache", "clean", "--failed", cache=copy)
    assert cleaned.returncode == 0 and "removed 1 cached build(s)" in cleaned.stdout
    assert _cache_listing(copy) == [pristine.key]  # the failure went, the good build stayed
    assert (copy.builds / pristine.key / "tree" / "memcached").is_file()


@pytest.mark.parametrize("name", ["maxconns-fix", "maxconns-fix.diff"])
def test_reverse_and_a_bare_patch_name_on_the_command_line(
    cache_layout: CacheLayout, build_debian, name: str
) -> None:
    """`--patch NAME --reverse` finds NAME in patches/ and takes the fix out: the very
    build the library made of MAXCONNS_FIX reversed."""
    reverted = build_debian(MAXCONNS_FIX, reverse=True)
    result = run_cli(
        "build", "--source", "debian", "--patch", name, "--reverse", cache=cache_layout
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(reverted.binary)
    assert "cache hit" in result.stderr and "reversed" in result.stderr
    forward = run_cli("build", "--source", "debian", "--patch", name, cache=cache_layout)
    assert forward.returncode == ExitStatus.PATCH_ALREADY_APPLIED  # the direction mattered


def _git(cwd: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "Test",
        "GIT_AUTHOR_EMAIL": "test@example.invalid",
        "GIT_COMMITTER_NAME": "Test",
        "GIT_COMMITTER_EMAIL": "test@example.invalid",
        "GIT_AUTHOR_DATE": "2024-01-01T00:00:00Z",  # fixed: the same SHA every session
        "GIT_COMMITTER_DATE": "2024-01-01T00:00:00Z",
    }
    done = subprocess.run(
        ["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def test_repo_url_fetches_a_ref_the_mirror_lacks(
    tmp_path: Path, cache_layout: CacheLayout, debian_source, pristine: BuildResult
) -> None:
    """`--repo file://...`: the first build clones the mirror; a tag pushed to the origin
    later is fetched into the mirror by the next build that asks for it."""
    assert debian_source.default_ref
    origin = tmp_path / "origin.git"
    _git(tmp_path, "init", "--quiet", "--bare", str(origin))
    _git(
        debian_source.git.path,
        "push",
        "--quiet",
        str(origin),
        f"{debian_source.default_ref}^{{commit}}:refs/heads/main",
        f"{debian_source.default_ref}^{{commit}}:refs/tags/first",
    )
    url = origin.as_uri()
    mirror = GitSource(url, cache_layout.mirrors).path
    try:
        first = run_cli("build", "--repo", url, "--ref", "first", cache=cache_layout)
        assert first.returncode == 0, first.stderr
        assert first.stdout.strip() == str(pristine.binary)  # same commit: the same build
        assert (mirror / "HEAD").is_file()

        work = tmp_path / "work"
        _git(tmp_path, "clone", "--quiet", "--branch", "main", url, str(work))
        (work / "NEWS").write_text("a commit the mirror has not seen\n")
        _git(work, "commit", "--quiet", "-am", "Touch NEWS")
        _git(work, "tag", "second")
        _git(work, "push", "--quiet", "origin", "HEAD:main", "second")
        second_sha = _git(work, "rev-parse", "HEAD")

        second = run_cli("build", "--repo", url, "--ref", "second", cache=cache_layout)
        assert second.returncode == 0, second.stderr
        assert re.search(rf"^commit\s+{second_sha[:12]} \(second\)", second.stderr, re.M)
        assert _git(mirror, "rev-parse", "second^{commit}") == second_sha  # fetched
        assert second.stdout.strip() != str(pristine.binary)
    finally:
        shutil.rmtree(mirror, ignore_errors=True)  # named after this test's tmp origin
        (cache_layout.mirrors / f"{mirror.name}.lock").unlink(missing_ok=True)


def test_source_debian_version(cache_layout: CacheLayout, debian_source, pristine) -> None:
    version = debian_source.label.removeprefix("debian:")
    assert version == "1.6.18-1"  # what bookworm's apt offers
    named = run_cli("build", "--source", f"debian:{version}", cache=cache_layout)
    assert named.returncode == 0, named.stderr
    assert named.stdout.strip() == str(pristine.binary) and "cache hit" in named.stderr
    unknown = run_cli("build", "--source", "debian:9.9.9-1", cache=cache_layout)
    assert unknown.returncode == ExitStatus.BAD_INPUT, unknown.stderr
    line = _one_error_line(unknown)
    assert "no memcached source version '9.9.9-1'" in line and f"available: {version}" in line


def _producer(binary: Path) -> str:
    """The compiler flags recorded in the binary's debug info (DW_AT_producer)."""
    dump = subprocess.run(
        ["readelf", "--debug-dump=info", str(binary)], capture_output=True, text=True
    ).stdout
    match = re.search(r"DW_AT_producer\s*:.*?:\s*(GNU C.*)$", dump, re.MULTILINE)
    assert match, "no DW_AT_producer"
    return match[1]


def test_cflags_are_part_of_the_cache_key(cache_layout: CacheLayout, pristine) -> None:
    same = run_cli(
        "build", "--source", "debian", "--cflags", "-O2 -g -march=native", cache=cache_layout
    )
    assert same.returncode == 0 and same.stdout.strip() == str(pristine.binary)
    assert "cache hit" in same.stderr  # the default flags, spelled out: the same build
    other = run_cli("build", "--source", "debian", "--cflags", "-O1 -g", cache=cache_layout)
    assert other.returncode == 0, other.stderr
    binary = Path(other.stdout.strip())
    assert binary != pristine.binary  # a new key, so a separate build
    assert " -O1" in _producer(binary) and "-march=native" not in _producer(binary)
    assert "-O2" in _producer(pristine.binary)
    again = run_cli("build", "--source", "debian", "--cflags", "-O1 -g", cache=cache_layout)
    assert again.stdout.strip() == str(binary) and "cache hit" in again.stderr
