"""A synthetic memcached history for bisect tests and benchmarks, made at run time from
Debian's source (never committed): harmless edits, one commit that reintroduces the 1.4.6
race, one that does not build (repaired by the next), and a later one that fixes the race.
The base carries patches/listener-lost-wakeup-fix.diff: Debian's 1.6.18 also has the lost
wake-up, which a flood sometimes finds; over its fix, only the race under study is in play.

    index  commit
    0      base: debian/<version> + the lost wake-up fix   good
    1-5    harmless
    6      breaks the build
    7      repairs the build
    8-9    harmless
    10     INTRODUCE: reintroduce-maxconns-race     first bad
    11-19  harmless                                 (15 is the regression search's bad end)
    20     FIX: maxconns-fix                        first fixed
    21-23  harmless
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "patches"
INTRODUCE, BROKEN, FIX, REGRESSION_BAD, LAST = 10, 6, 20, 15, 23


@dataclass(frozen=True)
class History:
    path: Path
    shas: tuple[str, ...]  # by index, see the module docstring

    @property
    def good(self) -> str:
        return self.shas[0]

    @property
    def introduce(self) -> str:
        return self.shas[INTRODUCE]

    @property
    def fix(self) -> str:
        return self.shas[FIX]

    @property
    def broken(self) -> str:
        return self.shas[BROKEN]

    @property
    def regression_bad(self) -> str:
        return self.shas[REGRESSION_BAD]

    @property
    def last(self) -> str:
        return self.shas[LAST]


def _git(repo: Path, *args: str, env: dict[str, str] | None = None) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True, env=env
    ).stdout.strip()


def make_history(debian_repo: Path, base_ref: str, dest: Path) -> History:
    """Clone the Debian import and add the commits; identical SHAs on every run."""
    if not (dest / ".git").exists():
        subprocess.run(["git", "clone", "-q", str(debian_repo), str(dest)], check=True)
        _git(dest, "checkout", "-q", "-B", "synthetic", base_ref)
        _build_commits(dest)
    shas = _git(dest, "rev-list", "--first-parent", "--reverse", f"{base_ref}..synthetic")
    return History(dest, tuple(shas.split()))


def _build_commits(repo: Path) -> None:
    env = {
        "GIT_AUTHOR_NAME": "Synthetic History",
        "GIT_AUTHOR_EMAIL": "synthetic@example.invalid",
        "GIT_COMMITTER_NAME": "Synthetic History",
        "GIT_COMMITTER_EMAIL": "synthetic@example.invalid",
        "PATH": "/usr/bin:/bin",
    }

    def commit(index: int, subject: str) -> None:
        stamp = f"2024-01-{index + 1:02d}T12:00:00Z"
        _git(repo, "add", "-A")
        _git(
            repo,
            "commit",
            "-q",
            "--no-verify",
            "-m",
            subject,
            env={**env, "GIT_AUTHOR_DATE": stamp, "GIT_COMMITTER_DATE": stamp},
        )

    def apply(patch: str, *flags: str) -> None:
        subprocess.run(
            [
                "patch",
                "-p1",
                "-s",
                "--no-backup-if-mismatch",
                "-F2",
                *flags,
                "-i",
                str(ROOT / patch),
            ],
            cwd=repo,
            check=True,
        )

    for index in range(LAST + 1):
        if index == 0:
            apply("patches/listener-lost-wakeup-fix.diff")
            commit(index, "Listener: re-check the fd table while accepting is off")
        elif index == BROKEN:
            apply("tests/fixtures/patches/break-build.diff")
            commit(index, "Refactor maxconns declarations (does not build)")
        elif index == BROKEN + 1:
            apply("tests/fixtures/patches/break-build.diff", "-R")
            commit(index, "Fix the build")
        elif index == INTRODUCE:
            apply("tests/fixtures/patches/reintroduce-maxconns-race.diff")
            commit(index, "Simplify maxconns handling (drops conn_lock in conn_close)")
        elif index == FIX:
            apply("patches/maxconns-fix.diff")
            commit(index, "Fix incredibly slim race for maxconns handler")
        else:
            target = repo / ("README.md" if index % 2 else "doc/protocol.txt")
            with target.open("a") as handle:
                handle.write(f"\nSynthetic note {index}: a harmless edit.\n")
            commit(index, f"Docs: harmless edit {index}")


ARRIVAL_CULPRIT, ARRIVAL_LAST = 6, 9


def make_arrival_history(debian_repo: Path, base_ref: str, dest: Path) -> History:
    """A history in which the scenario's code arrives with the bug (as maxconns_handler did
    in 1.4.6): commits 0-5 call the maxconns timer ``conn_limit_timer`` (no
    ``maxconns_handler`` anywhere in the source), commit 6 renames it to maxconns_handler
    and brings the 1.4.6 race with it, 7-9 are harmless. ``git bisect run`` must answer
    "good" for the commits that lack the code, not "skip", or it gives up."""
    if not (dest / ".git").exists():
        subprocess.run(["git", "clone", "-q", str(debian_repo), str(dest)], check=True)
        _git(dest, "checkout", "-q", "-B", "arrival", base_ref)
        _build_arrival(dest)
    shas = _git(dest, "rev-list", "--first-parent", "--reverse", f"{base_ref}..arrival")
    return History(dest, tuple(shas.split()))


def _build_arrival(repo: Path) -> None:
    env = {
        "GIT_AUTHOR_NAME": "Synthetic History",
        "GIT_AUTHOR_EMAIL": "synthetic@example.invalid",
        "GIT_COMMITTER_NAME": "Synthetic History",
        "GIT_COMMITTER_EMAIL": "synthetic@example.invalid",
        "PATH": "/usr/bin:/bin",
    }
    source = repo / "memcached.c"
    subprocess.run(  # over the lost wake-up fix, as make_history: one race in play
        ["patch", "-p1", "-s", "--no-backup-if-mismatch", "-i",
         str(ROOT / "patches" / "listener-lost-wakeup-fix.diff")],
        cwd=repo,
        check=True,
    )  # fmt: skip
    original = source.read_text()

    def commit(index: int, subject: str) -> None:
        stamp = f"2024-02-{index + 1:02d}T12:00:00Z"
        _git(repo, "add", "-A")
        _git(
            repo,
            "commit",
            "-q",
            "--no-verify",
            "-m",
            subject,
            env={**env, "GIT_AUTHOR_DATE": stamp, "GIT_COMMITTER_DATE": stamp},
        )

    for index in range(ARRIVAL_LAST + 1):
        if index == 0:
            source.write_text(original.replace("maxconns_handler", "conn_limit_timer"))
            commit(index, "Connection limit timer (before maxconns_handler existed)")
        elif index == ARRIVAL_CULPRIT:
            source.write_text(original)
            subprocess.run(
                [
                    "patch",
                    "-p1",
                    "-s",
                    "--no-backup-if-mismatch",
                    "-F2",
                    "-i",
                    str(FIXTURES / "reintroduce-maxconns-race.diff"),
                ],
                cwd=repo,
                check=True,
            )
            commit(index, "Rename the timer to maxconns_handler and simplify conn_close")
        else:
            with (repo / "README.md").open("a") as handle:
                handle.write(f"\nArrival note {index}: a harmless edit.\n")
            commit(index, f"Docs: arrival edit {index}")
