"""The commit range of a bisection, in the model's orientation.

The model's index 0 is the end that does NOT hang and index n the end that hangs. For a
regression that is oldest -> newest (good .. bad); for ``--find-fix`` it is newest ->
oldest (good .. bad again), so one model serves both searches.
"""

from __future__ import annotations

from dataclasses import dataclass

from verifier.errors import BadInput
from verifier.source.git_source import GitSource


@dataclass(frozen=True)
class CommitRange:
    shas: tuple[str, ...]  # model order: index 0 = the good end, index n = the bad end
    find_fix: bool

    @property
    def n(self) -> int:
        return len(self.shas) - 1

    @property
    def good(self) -> str:
        return self.shas[0]

    @property
    def bad(self) -> str:
        return self.shas[-1]

    def answer(self, culprit: int) -> str:
        """The commit to report for the model's culprit index: the first bad commit of a
        regression, or (finding a fix) the oldest good one, just newer than the culprit."""
        return self.shas[culprit - 1] if self.find_fix else self.shas[culprit]


def commit_range(git: GitSource, good: str, bad: str, find_fix: bool) -> CommitRange:
    """Resolve both ends and list the first-parent history between them."""
    good_sha, bad_sha = git.resolve(good), git.resolve(bad)
    if good_sha == bad_sha:
        raise BadInput("--good and --bad are the same commit")
    older, newer = (bad_sha, good_sha) if find_fix else (good_sha, bad_sha)
    if not git.repo.is_ancestor(older, newer):
        want = "--bad must be older than --good" if find_fix else "--good must be older than --bad"
        raise BadInput(f"{want} (add or drop --find-fix)")
    oldest_first = git.first_parent_range(older, newer)
    if len(oldest_first) < 2:
        raise BadInput("nothing to bisect between these commits")
    shas = tuple(reversed(oldest_first)) if find_fix else tuple(oldest_first)
    return CommitRange(shas, find_fix)
