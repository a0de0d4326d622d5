"""Untrusted patches are never built as root.

A patch under test can change ``configure`` or a Makefile, so every build step (and the
``patch`` / ``git apply`` of the patch: GNU patch can run ``ed`` on an ed-style diff, and
both follow what the tree holds) runs as an unprivileged *build user* when the verifier
runs as root: ``--build-user``, else ``$VERIFIER_BUILD_USER``, else ``nobody``. Naming
``root`` opts out. Not root: nothing changes (a user cannot switch users).

The verifier's cache is usually out of that user's reach (``~/.cache`` under a 0700
``/root``; pytest's 0700 ``/tmp/pytest-of-root``), so a build runs in a *build area*: a
root-owned directory (0711) in the cache's staging directory when the user can reach it,
else in the system temp directory, holding ``work/`` (0700, owned by the user) with the
tree, the staged patch files and the user's HOME. When the steps end, ``work/`` is handed
back to root (the user loses its way in) and the tree is copied into the cache as root:
regular files lose set-id bits and group/other write, ``.git`` is left out (its config,
writable by the build, could name commands git would run as root). ccache keeps working:
the user owns ``<cache>/ccache/<user>`` (or a per-uid directory in the temp directory when
the cache is out of reach). The build user changes nothing in the binary beyond the build
directory named in its debug info (which differs per build anyway), so it is not in the
cache key; it is recorded in the build's meta. Measured: a Debian rebuild with warm ccache
takes 5.89 s as nobody against 5.65 s as root (medians of 5 interleaved rebuilds each,
shared 2-core machine): the copy out and the private clone cost about 4%.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import stat
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from verifier.errors import BadInput, EnvironmentMissing
from verifier.patch.apply import PatchFile
from verifier.util.proc import RunAs

BUILD_USER_ENV = "VERIFIER_BUILD_USER"
DEFAULT_BUILD_USER = "nobody"
_COPY_CHUNK = 1 << 20


@dataclass(frozen=True)
class BuildUser:
    name: str
    uid: int
    gid: int
    groups: frozenset[int]

    @classmethod
    def lookup(cls, name: str) -> BuildUser:
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            raise EnvironmentMissing(
                f"build user {name!r} does not exist (choose one with --build-user or "
                f"{BUILD_USER_ENV}, e.g. create it: useradd --system --no-create-home {name})"
            ) from None
        groups = frozenset(os.getgrouplist(entry.pw_name, entry.pw_gid))
        return cls(entry.pw_name, entry.pw_uid, entry.pw_gid, groups)

    def run_as(self, home: Path) -> RunAs:
        return RunAs(self.name, self.uid, self.gid, home)


def current_user_name() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


def resolve_build_user(requested: str | None) -> BuildUser | None:
    """The user build steps run as, or None to run them as this process.

    ``requested`` (``--build-user``) wins over ``$VERIFIER_BUILD_USER``; as root the default
    is ``nobody`` and ``root`` opts out. Not root: None, unless a different user is asked
    for, which needs root (BadInput)."""
    name = requested or os.environ.get(BUILD_USER_ENV, "").strip() or None
    if os.geteuid() != 0:
        if name and name != current_user_name():
            raise BadInput(
                f"building as {name!r} needs root (running as {current_user_name()!r}); "
                f"drop --build-user / {BUILD_USER_ENV}"
            )
        return None
    user = BuildUser.lookup(name or DEFAULT_BUILD_USER)
    return None if user.uid == 0 else user


def can_reach(path: Path, user: BuildUser) -> bool:
    """Whether ``user`` may traverse every existing directory down to ``path`` (mode bits;
    missing tail directories count as reachable: root creates them 0755)."""
    for directory in [*reversed(path.parents), path]:
        try:
            info = os.stat(directory)
        except FileNotFoundError:
            return True
        if info.st_uid == user.uid:
            bit = stat.S_IXUSR
        elif info.st_gid in user.groups:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not info.st_mode & bit:
            return False
    return True


def _owned_private_dir(path: Path, user: BuildUser) -> bool:
    """``path`` is a real directory owned by ``user`` and closed to others (made if missing)."""
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=0o700)
        os.chown(path, user.uid, user.gid)
    info = os.lstat(path)
    return (
        stat.S_ISDIR(info.st_mode)
        and info.st_uid == user.uid
        and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    )


def ccache_dir_for(user: BuildUser, ccache_root: Path) -> Path | None:
    """A ccache directory ``user`` owns: ``<ccache_root>/<user>`` when it can reach it,
    else ``$TMPDIR/verifier-ccache-<uid>``; None if neither is safe to use."""
    if can_reach(ccache_root, user):
        ccache_root.mkdir(parents=True, exist_ok=True)
        os.chmod(ccache_root, 0o755)
        candidate = ccache_root / user.name
    else:
        candidate = Path(tempfile.gettempdir()) / f"verifier-ccache-{user.uid}"
    try:
        return candidate if _owned_private_dir(candidate, user) else None
    except OSError:
        return None


def _chown_tree(root: Path, uid: int, gid: int) -> None:
    os.chown(root, uid, gid, follow_symlinks=False)
    for top, dirs, files in os.walk(root):
        for name in (*dirs, *files):
            os.chown(os.path.join(top, name), uid, gid, follow_symlinks=False)


def _copy_regular(src: str, dst: str, mode: int) -> None:
    """Copy one file that must still be a regular file when opened (no symlink, no fifo)."""
    fd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return
        out = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            while chunk := os.read(fd, _COPY_CHUNK):
                os.write(out, chunk)
            os.fchmod(out, mode & 0o755)  # no set-id bits, no group/other write
        finally:
            os.close(out)
    finally:
        os.close(fd)


def copy_tree_as_owner(src: Path, dst: Path) -> None:
    """Copy ``src`` to a new ``dst`` owned by this process: regular files, directories and
    symlinks (as links); ``.git`` and special files are left out; times are kept."""
    dst.mkdir(mode=0o755)
    for top, dirs, files in os.walk(src):
        rel = os.path.relpath(top, src)
        out_dir = dst if rel == "." else dst / rel
        if rel == ".":
            dirs[:] = [d for d in dirs if d != ".git"]
        for name in list(dirs):
            source = os.path.join(top, name)
            info = os.lstat(source)
            if stat.S_ISLNK(info.st_mode):
                os.symlink(os.readlink(source), out_dir / name)
                dirs.remove(name)
            else:
                (out_dir / name).mkdir(mode=0o755)
        for name in files:
            source = os.path.join(top, name)
            info = os.lstat(source)
            target = out_dir / name
            if stat.S_ISLNK(info.st_mode):
                os.symlink(os.readlink(source), target)
            elif stat.S_ISREG(info.st_mode):
                _copy_regular(source, str(target), info.st_mode)
                os.utime(target, ns=(info.st_atime_ns, info.st_mtime_ns), follow_symlinks=False)


@dataclass
class BuildArea:
    """Where one build's steps run, and as whom."""

    tree: Path
    user: BuildUser | None = None
    runner: RunAs | None = None  # None: steps run as this process
    work: Path | None = None  # the user's private directory (isolated builds)
    ccache_dir: Path | None = None

    @property
    def isolated(self) -> bool:
        return self.user is not None

    def stage_patches(self, patches: list[PatchFile]) -> list[PatchFile]:
        """Copies of the patch files the build user can read (the originals may sit in a
        0700 directory); the copies keep the names the notes show."""
        if self.work is None:
            return patches
        staged = []
        for index, patch in enumerate(patches):
            target = self.work / "patches" / f"{index:02d}" / patch.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(patch.path, target)
            staged.append(replace(patch, path=target))
        return staged

    def hand_over(self) -> None:
        """Give the work directory (tree, patches, home) to the build user."""
        if self.user is not None and self.work is not None:
            _chown_tree(self.work, self.user.uid, self.user.gid)

    def collect(self, dest: Path) -> None:
        """Put the built tree at ``dest`` (in the cache), owned by this process."""
        if self.work is None:
            if self.tree != dest:
                os.replace(self.tree, dest)
            return
        os.chown(self.work, os.geteuid(), os.getegid())  # the build user loses its way in
        os.chmod(self.work, 0o700)
        copy_tree_as_owner(self.tree, dest)


@contextlib.contextmanager
def build_area(user: BuildUser | None, staging: Path, ccache_root: Path) -> Iterator[BuildArea]:
    """A place to build in: ``staging/tree`` when no user switch is needed, else a private
    area the build user owns (removed on exit; the result is copied out by ``collect``)."""
    if user is None:
        yield BuildArea(tree=staging / "tree")
        return
    base = staging.parent if can_reach(staging.parent, user) else Path(tempfile.gettempdir())
    if not can_reach(base, user):
        raise EnvironmentMissing(
            f"build user {user.name!r} cannot reach {base}; set TMPDIR to a directory it "
            "can traverse"
        )
    area = Path(tempfile.mkdtemp(prefix="verifier-build-", dir=base))
    try:
        os.chmod(area, 0o711)  # root's; the user may only pass through to work/
        work = area / "work"
        work.mkdir(mode=0o700)
        (work / "home").mkdir(mode=0o700)
        yield BuildArea(
            tree=work / "tree",
            user=user,
            runner=user.run_as(work / "home"),
            work=work,
            ccache_dir=ccache_dir_for(user, ccache_root),
        )
    finally:
        shutil.rmtree(area, ignore_errors=True)
