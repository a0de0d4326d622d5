"""Test one commit for the bisector: build (cached), check the scenario applies, soak once.

The observation says whether THIS bug hung: a hang whose signature differs from the
reference (the bad endpoint's) is another bug, reported but never used as evidence.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from git import GitCommandError

from verifier.build.builder import Builder, BuildRequest
from verifier.errors import BuildFailed, HarnessError, NotApplicable
from verifier.run.trial import Progress, run_trial
from verifier.scenario import Scenario
from verifier.verify import VerifyOptions, amplifier_for, check_applicable, trial_settings

HANG, CLEAN, OTHER_BUG, SKIP = "hang", "clean", "other-bug", "skip"


@dataclass
class Observation:
    sha: str
    kind: str  # hang | clean | other-bug | skip
    seconds: float = 0.0  # soak seconds (time to hang for a hang)
    reason: str = ""
    signature_key: str | None = None
    hang_class: str | None = None
    build_seconds: float = 0.0
    build_cached: bool = False
    run_dir: str = ""
    emfile_episodes: int = 0
    extra: dict[str, object] = field(default_factory=dict)


def signature_key(trial_signature: dict[str, object] | None, liveness: str | None) -> str:
    """What identifies a bug: the classified signature plus what still answers."""
    key = str((trial_signature or {}).get("key", "unknown"))
    return f"{key}|{liveness or '?'}"


class CommitTester:
    def __init__(
        self,
        builder: Builder,
        base_request: BuildRequest,
        options: VerifyOptions,
        tools_dir: Path,
        run_root: Path,
        progress: Progress | None = None,
    ) -> None:
        self.builder = builder
        self.base_request = base_request
        self.options = options
        self.tools_dir = tools_dir
        self.run_root = run_root
        self.progress = progress
        self._counter = 0

    @property
    def scenario(self) -> Scenario:
        return self.options.scenario

    def source_lacks_symbols(self, sha: str) -> list[str]:
        """Cheap pre-check before building: symbols whose name is nowhere in the source."""
        git = self.base_request.source.git.repo.git
        missing = []
        for name in self.scenario.requires_symbols:
            try:
                git.grep("-q", "-w", "-F", name, sha, "--", "*.c")
            except GitCommandError:  # git grep exits 1 when nothing matches
                missing.append(name)
        return missing

    def is_built(self, sha: str) -> bool:
        return self.builder.is_cached(replace(self.base_request, ref=sha))

    def test(self, sha: str, soak_s: float, reference_key: str | None) -> Observation:
        missing = self.source_lacks_symbols(sha)
        if missing:
            return Observation(sha, SKIP, reason=f"not applicable: no {', '.join(missing)}")
        started = time.monotonic()
        try:
            build = self.builder.build(replace(self.base_request, ref=sha))
        except BuildFailed as error:
            return Observation(
                sha,
                SKIP,
                reason="does not build",
                build_seconds=time.monotonic() - started,
                extra={"error": error.message},
            )
        build_s = 0.0 if build.cache_hit else build.build_seconds
        missing = check_applicable(build.binary, self.scenario)
        if missing:
            return Observation(
                sha,
                SKIP,
                reason=f"not applicable: no {', '.join(missing)}",
                build_seconds=build_s,
                build_cached=build.cache_hit,
            )
        try:
            amplifier = amplifier_for(self.options, build.binary, self.tools_dir)
        except NotApplicable as error:
            return Observation(
                sha,
                SKIP,
                reason=f"not applicable: {error.message}",
                build_seconds=build_s,
                build_cached=build.cache_hit,
            )
        self._counter += 1
        trial_dir = self.run_root / f"{self._counter:03d}-{sha[:12]}"
        trial = run_trial(
            1,
            build.binary,
            self.scenario,
            amplifier,
            trial_settings(self.options, build, soak_s),
            trial_dir,
            self.progress,
        )
        common = {
            "build_seconds": build_s,
            "build_cached": build.cache_hit,
            "run_dir": str(trial_dir),
            "emfile_episodes": trial.emfile_episodes,
        }
        if trial.outcome == "error":
            raise HarnessError(f"trial on {sha[:12]} failed: {trial.error}")
        if trial.outcome == "crash":
            return Observation(
                sha, OTHER_BUG, trial.soak_s, reason=f"crash ({trial.crash_signal})", **common
            )  # type: ignore[arg-type]
        if trial.outcome == "hang":
            key = signature_key(trial.signature, trial.liveness)
            # Before the bad end has hung, the scenario's class is the reference; after, the
            # bad end's full signature is: anything else is another bug.
            same = (
                trial.hang_class == self.scenario.expect
                if reference_key is None
                else (key == reference_key)
            )
            kind = HANG if same else OTHER_BUG
            reason = "" if same else f"different signature: {trial.hang_class}"
            return Observation(
                sha,
                kind,
                trial.time_to_hang_s or trial.soak_s,
                reason,
                key,
                trial.hang_class,
                **common,
            )  # type: ignore[arg-type]
        if trial.emfile_episodes == 0:
            return Observation(
                sha,
                SKIP,
                trial.soak_s,
                reason="the flood never reached EMFILE (no evidence)",
                **common,
            )  # type: ignore[arg-type]
        return Observation(sha, CLEAN, trial.soak_s, **common)  # type: ignore[arg-type]
