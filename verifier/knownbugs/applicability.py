"""Can a known bug be in this build? Decided from the source before anything is built.

In order: the fix (an ancestor commit when the repository has it, else the release number
against ``first_fixed``), the introduction (``introduced_by`` / ``first_bad``), the features
the build lacks, and whether a runner exists for what reaches it. A version that has the fix
is still soaked when a given patch changes the code the fix changed (``code``): that is how
a packager learns whether their patches bring a fixed bug back, and how the reintroduction
fixtures are checked over Debian's source.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import git

from verifier.build.versions import Version
from verifier.knownbugs.spec import KnownBug
from verifier.vocabulary import BugApplicability

SOAKED = frozenset({BugApplicability.APPLICABLE, BugApplicability.PATCHED})
_FEATURE_SINCE: dict[str, Version] = {"extstore": (1, 6, 0), "meta": (1, 6, 0)}


def shown(version: Version | None) -> str:
    return "unknown" if version is None else ".".join(map(str, version))


@dataclass(frozen=True)
class BuildFacts:
    """What the source says about the build, read once for every bug."""

    repo: git.Repo
    commit: str
    version: Version | None
    changed_lines: str  # the patches' added, removed and hunk-header lines
    tls: bool = False  # the build is configured with --enable-tls (known-bugs --tls)

    def has_commit(self, sha: str) -> bool:
        try:
            self.repo.git.cat_file("-e", f"{sha}^{{commit}}")
        except git.GitCommandError:
            return False
        return True

    def contains(self, sha: str) -> bool:
        try:
            self.repo.git.merge_base("--is-ancestor", sha, self.commit)
        except git.GitCommandError:
            return False
        return True


def changed_lines(patches: Sequence[Path]) -> str:
    """The lines a patch changes (and its hunk headers, which name functions), not its
    description: a DEP-3 header that only mentions a function does not touch it."""
    kept = []
    for path in patches:
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith(("+++", "---")):
                continue
            if line.startswith(("+", "-", "@@")):
                kept.append(line)
    return "\n".join(kept)


@dataclass(frozen=True)
class Decision:
    bug: KnownBug
    state: BugApplicability
    reason: str

    @property
    def soaked(self) -> bool:
        return self.state in SOAKED

    def to_json(self) -> dict[str, object]:
        return {"bug": self.bug.id, "applicability": str(self.state), "reason": self.reason}


def _fixed(bug: KnownBug, facts: BuildFacts) -> str | None:
    """Why the build has the fix, or None."""
    known = [sha for sha in bug.fixed_by if facts.has_commit(sha)]
    if bug.fixed_by and len(known) == len(bug.fixed_by):
        if all(facts.contains(sha) for sha in known):
            return f"has {', '.join(bug.fixed_by)}"
        return None
    if bug.first_fixed and facts.version and facts.version >= bug.first_fixed:
        return f"since {shown(bug.first_fixed)} ({', '.join(bug.fixed_by)})"
    return None


def _not_yet(bug: KnownBug, facts: BuildFacts) -> str | None:
    known = [sha for sha in bug.introduced_by if facts.has_commit(sha)]
    if known and not any(facts.contains(sha) for sha in known):
        return f"predates {', '.join(known)}"
    if not known and bug.first_bad and facts.version and facts.version < bug.first_bad:
        return f"first in {shown(bug.first_bad)}"
    return None


def decide(bug: KnownBug, facts: BuildFacts) -> Decision:
    touched = [name for name in bug.code if name in facts.changed_lines]
    for state, why in (
        (BugApplicability.FIXED, _fixed(bug, facts)),
        (BugApplicability.NOT_YET, _not_yet(bug, facts)),
    ):
        if why is None:
            continue
        if touched and bug.scenario is not None:
            return Decision(
                bug, BugApplicability.PATCHED, f"{why}, but a patch changes {touched[0]}"
            )
        if touched:  # a patch may bring it back, and nothing here can soak it yet
            return Decision(
                bug,
                BugApplicability.NO_RUNNER,
                f"{why}, but a patch changes {touched[0]}; workload {bug.workload} has no "
                "scenario file to run it (recipes/scenarios/)",
            )
        return Decision(bug, state, why)
    for feature in bug.needs:
        if feature == "tls" and not facts.tls:
            return Decision(
                bug, BugApplicability.NO_FEATURE, "needs TLS; this build lacks it (use --tls)"
            )
        since = _FEATURE_SINCE.get(feature)
        if since and facts.version and facts.version < since:
            return Decision(
                bug,
                BugApplicability.NO_FEATURE,
                f"needs {feature}, built by default from {shown(since)}",
            )
    if bug.scenario is None:
        return Decision(
            bug,
            BugApplicability.NO_RUNNER,
            f"reached by workload {bug.workload}, which no scenario file runs yet",
        )
    return Decision(bug, BugApplicability.APPLICABLE, f"version {shown(facts.version)}")
