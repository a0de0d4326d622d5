"""A git repository kept as a bare mirror in the cache: resolve refs, make clean checkouts.

Cloning and fetching talk to a remote: they run bounded in time (``verifier.source.network``)
and an unreachable remote is a ``NetworkError`` carrying git's own reason. They run git
directly (``util.proc.run``: timeout, process-group kill) rather than through GitPython,
whose ``clone_from`` starts git ``as_process`` and so never applies ``kill_after_timeout``
(GitPython 3.1/3.2), and whose ``GitCommandError.stderr`` ends in a quote that the old
last-line parser turned into an empty reason.
"""

from __future__ import annotations

import contextlib
import difflib
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import git

from verifier.errors import BadInput, NetworkError, UnknownRef
from verifier.source.network import git_network_env, git_timeout_s, remote_failure
from verifier.util.hashing import digest
from verifier.util.locks import HeldLock, file_lock
from verifier.util.proc import run

MIRROR_LOCK_SLACK_S = 120.0  # a holder's clone/fetch ends within the git timeout plus this

UPSTREAM_URL = "https://github.com/memcached/memcached.git"
_SHA_RE = re.compile(r"^[0-9a-f]{7,40}$")
_GITHUB_RE = re.compile(r"github\.com[:/](?P<slug>[^/]+/[^/]+?)(?:\.git)?/?$")


@dataclass(frozen=True)
class CommitInfo:
    sha: str
    subject: str
    author: str
    author_date: str  # ISO 8601


def _slug(location: str) -> str:
    tail = re.sub(r"[^A-Za-z0-9._-]+", "-", location.rstrip("/").split("/")[-1]) or "repo"
    return f"{tail.removesuffix('.git')}-{digest(location)[:10]}.git"


def normalise_location(location: str) -> str:
    """URLs stay as given; local paths become absolute (so the mirror key is stable)."""
    if re.match(r"^[a-z][a-z0-9+.-]*://", location) or re.match(r"^[^/]+@[^:]+:", location):
        return location
    path = Path(location).expanduser()
    if not path.exists():
        raise BadInput(f"repository path does not exist: {location}")
    return str(path.resolve())


class GitSource:
    """One repository (URL or local path) mirrored under ``mirrors_dir``."""

    def __init__(self, location: str, mirrors_dir: Path, *, mirror: bool = True) -> None:
        self.location = normalise_location(location)
        self._mirrors_dir = mirrors_dir
        # A repository that already lives in the cache (the Debian import) is used in place.
        self.path = mirrors_dir / _slug(self.location) if mirror else Path(self.location)
        self._mirror = mirror
        self._repo: git.Repo | None = None

    # -- mirror ---------------------------------------------------------------------------
    @property
    def repo(self) -> git.Repo:
        if self._repo is None:
            self._repo = self._open_or_clone()
        return self._repo

    @property
    def lock_path(self) -> Path:
        """Held while the mirror is cloned or fetched."""
        return self._mirrors_dir / f"{self.path.name}.lock"

    def _mirror_lock(self) -> contextlib.AbstractContextManager[HeldLock]:
        wait_s = git_timeout_s() + MIRROR_LOCK_SLACK_S
        return file_lock(self.lock_path, timeout_s=wait_s)

    def _remote_git(self, what: str, *argv: str) -> None:
        """Run a git command that talks to the origin; raise NetworkError/BadInput with
        git's reason when it fails."""
        timeout_s = git_timeout_s()
        result = run(
            ["git", "-c", "protocol.ext.allow=never", *argv],
            env=git_network_env(),
            timeout_s=timeout_s,
        )
        if not result.ok:
            raise remote_failure(
                f"cannot {what} {self.location}",
                result.output,
                timed_out=result.timed_out,
                timeout_s=timeout_s,
            )

    def _open_or_clone(self) -> git.Repo:
        if not self._mirror:
            return git.Repo(self.path)
        with self._mirror_lock():
            if (self.path / "HEAD").exists():
                return git.Repo(self.path)
            partial = self.path.with_name(self.path.name + ".partial")
            if partial.exists():
                shutil.rmtree(partial)
            partial.parent.mkdir(parents=True, exist_ok=True)
            try:
                self._remote_git("clone", "clone", "--mirror", "--", self.location, str(partial))
            except BaseException:
                shutil.rmtree(partial, ignore_errors=True)
                raise
            partial.rename(self.path)
            return git.Repo(self.path)

    def fetch(self) -> None:
        """Update the mirror from its origin (a no-op for in-place repositories)."""
        if not self._mirror:
            return
        repo = self.repo
        with self._mirror_lock():
            self._remote_git(
                "fetch",
                "-C",
                str(repo.git_dir),
                "fetch",
                "--prune",
                "--tags",
                "origin",
                "+refs/*:refs/*",
            )

    # -- refs -----------------------------------------------------------------------------
    def _try_resolve(self, ref: str) -> str | None:
        try:
            return self.repo.git.rev_parse("--verify", "--quiet", f"{ref}^{{commit}}")
        except git.GitCommandError:
            return None

    def resolve(self, ref: str) -> str:
        """Full SHA of ``ref`` (tag, branch or SHA); fetches once when it is missing."""
        if not ref or ref.startswith("-"):
            raise UnknownRef(f"invalid ref {ref!r}")
        sha = self._try_resolve(ref)
        is_fixed = sha is not None and (_SHA_RE.match(ref) or ref in self.tags())
        if sha is not None and (is_fixed or not self._mirror):
            return sha
        try:
            self.fetch()
        except (BadInput, NetworkError):
            if sha is not None:  # offline: a cached branch is better than nothing
                return sha
            raise
        sha = self._try_resolve(ref)
        if sha is None:
            near = self.nearest_tags(ref)
            hint = f"; nearest tags: {', '.join(near)}" if near else ""
            raise UnknownRef(f"unknown ref {ref!r} in {self.location}{hint}")
        return sha

    def tags(self) -> list[str]:
        return [tag.name for tag in self.repo.tags]

    def nearest_tags(self, ref: str, count: int = 5) -> list[str]:
        return difflib.get_close_matches(ref, self.tags(), n=count, cutoff=0.4)

    def describe(self, sha: str) -> str:
        try:
            return self.repo.git.describe("--tags", "--always", sha)
        except git.GitCommandError:
            return sha[:12]

    def commit_info(self, sha: str) -> CommitInfo:
        commit = self.repo.commit(sha)
        return CommitInfo(
            sha=commit.hexsha,
            subject=commit.summary if isinstance(commit.summary, str) else commit.summary.decode(),
            author=str(commit.author),
            author_date=commit.authored_datetime.isoformat(),
        )

    def first_parent_range(self, older: str, newer: str) -> list[str]:
        """Commits from ``older`` (included) to ``newer`` (included), oldest first."""
        if not self.repo.is_ancestor(older, newer):
            raise BadInput(f"{older[:12]} is not an ancestor of {newer[:12]}")
        shas = self.repo.git.rev_list("--first-parent", "--reverse", f"{older}..{newer}").split()
        return [older, *shas]

    def web_url(self, sha: str) -> str | None:
        match = _GITHUB_RE.search(self.location)
        return f"https://github.com/{match['slug']}/commit/{sha}" if match else None

    # -- checkouts ------------------------------------------------------------------------
    def checkout(self, sha: str, dest: Path, *, independent: bool = False) -> None:
        """A clean work tree of ``sha`` at ``dest`` that is a git repository with tags
        (1.4.x's version.sh runs ``git describe``). ``independent``: its own copy of the
        objects (no alternates into the cache, no hard links), for a tree handed to another
        user."""
        options = {"no_local": True} if independent else {"shared": True}
        clone = git.Repo.clone_from(str(self.path), dest, no_checkout=True, **options)
        clone.git.checkout("--quiet", "--detach", sha)
