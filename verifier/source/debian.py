"""Debian's memcached source package, imported into a git repository in the cache.

Layout of the imported history (one repository for every imported version):

    <upstream version>          tag: the pristine upstream tree (from the .orig tarball)
    one commit per patch of debian/patches/series, subject from its DEP-3 header
    debian/<package version>    tag: exactly what Debian builds

Commits carry the changelog date and the maintainer as author, so the same source package
gives the same SHAs on every machine (stable build-cache keys and reports).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import git

from verifier.errors import BadInput, EnvironmentMissing, NetworkError
from verifier.patch.dep3 import parse_dep3
from verifier.source.network import GIT_TIMEOUT_ENV, git_timeout_s, is_unreachable, reason
from verifier.util.locks import file_lock
from verifier.util.proc import require_tool, run

PACKAGE = "memcached"
DEB_SRC_HINT = (
    "no deb-src entry for apt: add 'deb-src http://deb.debian.org/debian bookworm main' "
    "to /etc/apt/sources.list (or run ./bootstrap), then 'apt-get update'"
)
_VERSION_RE = re.compile(r"^Version:\s*(\S+)", re.MULTILINE)


@dataclass(frozen=True)
class DebianImport:
    repo_path: Path
    version: str  # Debian version, e.g. 1.6.18-1
    upstream_tag: str  # e.g. 1.6.18
    debian_tag: str  # e.g. debian/1.6.18-1


def upstream_version(version: str) -> str:
    """1.6.18-1 -> 1.6.18; 2:1.2-3 -> 1.2."""
    return version.split(":", 1)[-1].rsplit("-", 1)[0]


def _available_versions() -> list[str]:
    result = run(["apt-cache", "showsrc", PACKAGE])
    versions = _VERSION_RE.findall(result.output)
    if not result.ok or not versions:
        raise EnvironmentMissing(DEB_SRC_HINT)
    return versions


def _newest(versions: list[str]) -> str:
    best = versions[0]
    for candidate in versions[1:]:
        if run(["dpkg", "--compare-versions", candidate, "gt", best]).ok:
            best = candidate
    return best


class DebianSource:
    """``--source debian[:VERSION]``: download, import once, then serve as a git repository."""

    def __init__(self, cache_dir: Path, version: str | None = None) -> None:
        self.cache_dir = cache_dir
        self.requested = version or None
        self.repo_path = cache_dir / f"{PACKAGE}.git"

    def ensure(self) -> DebianImport:
        version = self._pick_version()
        result = DebianImport(
            repo_path=self.repo_path,
            version=version,
            upstream_tag=upstream_version(version),
            debian_tag=f"debian/{version.replace(':', '%').replace('~', '_')}",
        )
        # the holder downloads (bounded by the network timeout) and imports (seconds)
        wait_s = git_timeout_s() + 300
        with file_lock(self.cache_dir / "import.lock", timeout_s=wait_s):
            if not self._has_tag(result.debian_tag):
                self._import(result)
        return result

    # -- version ------------------------------------------------------------------------
    def _pick_version(self) -> str:
        if self.requested:
            if self._downloaded_dsc(self.requested):  # already here: works offline
                return self.requested
            versions = _available_versions()
            if self.requested not in versions:
                raise BadInput(
                    f"Debian has no {PACKAGE} source version {self.requested!r}; "
                    f"available: {', '.join(versions)}"
                )
            return self.requested
        try:
            return _newest(_available_versions())
        except EnvironmentMissing:
            cached = sorted(self.cache_dir.glob("downloads/*/*.dsc"))
            if cached:  # offline, but something was imported before
                return cached[-1].parent.name
            raise

    def _downloaded_dsc(self, version: str) -> Path | None:
        dsc = self.cache_dir / "downloads" / version / f"{PACKAGE}_{version.split(':')[-1]}.dsc"
        return dsc if dsc.is_file() else None

    def _has_tag(self, tag: str) -> bool:
        if not (self.repo_path / "HEAD").exists():
            return False
        return tag in {t.name for t in git.Repo(self.repo_path).tags}

    # -- download + import --------------------------------------------------------------
    def _download(self, version: str) -> Path:
        dsc = self._downloaded_dsc(version)
        if dsc:
            return dsc
        require_tool("apt-get", "this needs a Debian-based system")
        target = self.cache_dir / "downloads" / version
        partial = Path(tempfile.mkdtemp(prefix=".download-", dir=self.cache_dir))
        timeout_s = git_timeout_s()
        try:
            result = run(
                ["apt-get", "source", "--download-only", "-q", f"{PACKAGE}={version}"],
                cwd=partial,
                timeout_s=timeout_s,
            )
            if not result.ok:
                raise _download_failure(version, result.output, result.timed_out, timeout_s)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(target, ignore_errors=True)
            partial.rename(target)
        finally:
            shutil.rmtree(partial, ignore_errors=True)
        found = self._downloaded_dsc(version)
        if not found:
            raise EnvironmentMissing(f"apt-get source gave no .dsc for {PACKAGE}={version}")
        return found

    def _import(self, target: DebianImport) -> None:
        require_tool("dpkg-source", "apt-get install dpkg-dev")
        dsc = self._download(target.version)
        work = Path(tempfile.mkdtemp(prefix=".import-", dir=self.cache_dir))
        try:
            tree = work / "tree"
            extracted = run(["dpkg-source", "--skip-patches", "-x", str(dsc), str(tree)])
            if not extracted.ok:
                raise EnvironmentMissing(f"dpkg-source -x failed: {extracted.output[-300:]}")
            self._commit_series(tree, work, target)
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def _commit_series(self, tree: Path, work: Path, target: DebianImport) -> None:
        debian_dir = work / "debian"
        shutil.move(str(tree / "debian"), debian_dir)
        changelog_date = run(
            ["dpkg-parsechangelog", "-l", str(debian_dir / "changelog"), "-S", "Date"]
        ).output.strip()
        maintainer = _control_field(debian_dir / "control", "Maintainer") or "Debian <debian>"
        name, _, email = maintainer.partition("<")
        env = {
            "GIT_AUTHOR_NAME": name.strip(),
            "GIT_AUTHOR_EMAIL": email.rstrip(">").strip(),
            "GIT_COMMITTER_NAME": name.strip(),
            "GIT_COMMITTER_EMAIL": email.rstrip(">").strip(),
            "GIT_AUTHOR_DATE": changelog_date,
            "GIT_COMMITTER_DATE": changelog_date,
        }
        repo = git.Repo.init(tree)
        with repo.git.custom_environment(**env):
            repo.git.add("--all", "--force")
            repo.git.commit(
                "--quiet",
                "--no-verify",
                "-m",
                f"Import {PACKAGE} {target.upstream_tag} (pristine upstream, Debian .orig tarball)",
            )
            repo.git.tag(target.upstream_tag)
            for patch_path in _series(debian_dir):
                text = patch_path.read_text(encoding="utf-8", errors="replace")
                applied = run(
                    ["patch", "-p1", "--forward", "--no-backup-if-mismatch", "-i", str(patch_path)],
                    cwd=tree,
                )
                if not applied.ok:
                    raise EnvironmentMissing(
                        f"Debian patch {patch_path.name} does not apply: {applied.output[-200:]}"
                    )
                header = parse_dep3(text)
                subject = header.description or patch_path.stem
                body = f"Debian patch {patch_path.name}\n\n" + "\n".join(
                    f"{k}: {v}" for k, v in header.summary_rows()[1:]
                )
                repo.git.add("--all", "--force")
                repo.git.commit(
                    "--quiet", "--no-verify", "--allow-empty", "-m", subject, "-m", body
                )
            repo.git.tag(target.debian_tag)
        self._publish(tree, target)

    def _publish(self, tree: Path, target: DebianImport) -> None:
        """Push the imported history into the shared bare repository (created on first use)."""
        if not (self.repo_path / "HEAD").exists():
            partial = self.repo_path.with_name(self.repo_path.name + ".partial")
            shutil.rmtree(partial, ignore_errors=True)
            git.Repo.init(partial, bare=True)
            os.replace(partial, self.repo_path)
        source = git.Repo(tree)
        source.git.push(
            "--quiet",
            str(self.repo_path),
            f"HEAD:refs/heads/debian/{target.upstream_tag}",
            f"refs/tags/{target.upstream_tag}",
            f"refs/tags/{target.debian_tag}",
        )


def _download_failure(
    version: str, output: str, timed_out: bool, timeout_s: float
) -> EnvironmentMissing | NetworkError:
    what = f"cannot download Debian's {PACKAGE}={version} source (apt-get source)"
    hint = "check the network or the deb-src mirror in /etc/apt/sources.list"
    if timed_out:
        return NetworkError(
            f"{what}: no answer within {timeout_s:.0f} s ({GIT_TIMEOUT_ENV} sets the limit); {hint}"
        )
    if is_unreachable(output):
        return NetworkError(f"{what}: {reason(output)} ({hint})")
    if "deb-src" in output:
        return EnvironmentMissing(DEB_SRC_HINT)
    return EnvironmentMissing(f"{what}: {reason(output)}")


def _series(debian_dir: Path) -> list[Path]:
    series = debian_dir / "patches" / "series"
    if not series.is_file():
        return []
    names = [
        line.split("#", 1)[0].split()[0]
        for line in series.read_text().splitlines()
        if line.split("#", 1)[0].strip()
    ]
    return [debian_dir / "patches" / name for name in names]


def _control_field(control: Path, name: str) -> str:
    if not control.is_file():
        return ""
    match = re.search(rf"^{name}:\s*(.+)$", control.read_text(), re.MULTILINE)
    return match.group(1).strip() if match else ""
