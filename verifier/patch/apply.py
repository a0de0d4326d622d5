"""Apply one patch to a work tree: ``git apply`` first, then ``patch`` with fuzz.

Outcomes are explicit: applied (exactly, or with fuzz/offsets reported per hunk), "already
applied" (the opposite direction applies) or "does not apply" (with the failing hunk).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from verifier.errors import BadInput, PatchAlreadyApplied, PatchDoesNotApply
from verifier.patch.dep3 import Dep3Header, parse_dep3
from verifier.util.proc import CommandResult, require_tool, run

MAX_FUZZ = 2
_HUNK_NOTE_RE = re.compile(
    r"Hunk #(?P<n>\d+) succeeded at (?P<line>\d+)(?: with fuzz (?P<fuzz>\d+))?"
    r"(?: \(offset (?P<offset>-?\d+) lines?\))?"
)
_HUNK_FAIL_RE = re.compile(r"Hunk #(?P<n>\d+) FAILED at (?P<line>\d+)")
_PATCHING_RE = re.compile(r"^(?:patching|checking) file '?(?P<file>[^']+?)'?$")


@dataclass(frozen=True)
class HunkNote:
    file: str
    hunk: int
    line: int
    fuzz: int
    offset: int


@dataclass(frozen=True)
class PatchFile:
    """A patch as given by the user: its path, text and DEP-3 header."""

    path: Path
    text: str
    header: Dep3Header

    @classmethod
    def load(cls, path: Path) -> PatchFile:
        if not path.is_file():
            raise BadInput(f"patch file not found: {path}")
        text = path.read_text(encoding="utf-8", errors="replace")
        if not re.search(r"^(---|\+\+\+|@@) ", text, re.MULTILINE):
            raise BadInput(f"not a unified diff: {path}")
        return cls(path=path, text=text, header=parse_dep3(text))

    @property
    def name(self) -> str:
        return self.path.name


@dataclass
class PatchOutcome:
    patch: PatchFile
    reverse: bool
    method: str  # "git apply" or "patch"
    notes: list[HunkNote] = field(default_factory=list)

    def describe(self) -> str:
        direction = "reversed" if self.reverse else "applied"
        if not self.notes:
            return f"{self.patch.name}: {direction} cleanly ({self.method})"
        details = ", ".join(
            f"{n.file} hunk #{n.hunk}"
            + (f" fuzz {n.fuzz}" if n.fuzz else "")
            + (f" offset {n.offset:+d}" if n.offset else "")
            for n in self.notes
        )
        return f"{self.patch.name}: {direction} with {details} ({self.method})"


def _git_apply(tree: Path, patch: PatchFile, reverse: bool, check: bool) -> CommandResult:
    argv = ["git", "apply", "--whitespace=nowarn"]
    argv += ["-R"] if reverse else []
    argv += ["--check"] if check else []
    return run([*argv, str(patch.path.resolve())], cwd=tree)


def _patch(tree: Path, patch: PatchFile, reverse: bool, dry_run: bool) -> CommandResult:
    argv = [require_tool("patch", "apt-get install patch"), "-p1", "--forward"]
    argv += [f"--fuzz={MAX_FUZZ}", "--no-backup-if-mismatch", "--reject-file=-"]
    argv += ["--reverse"] if reverse else []
    argv += ["--dry-run"] if dry_run else []
    return run([*argv, "-i", str(patch.path.resolve())], cwd=tree)


def _notes(output: str) -> list[HunkNote]:
    notes: list[HunkNote] = []
    current = "?"
    for line in output.splitlines():
        if match := _PATCHING_RE.match(line.strip()):
            current = match["file"]
        elif match := _HUNK_NOTE_RE.search(line):
            notes.append(
                HunkNote(
                    file=current,
                    hunk=int(match["n"]),
                    line=int(match["line"]),
                    fuzz=int(match["fuzz"] or 0),
                    offset=int(match["offset"] or 0),
                )
            )
    return notes


def failing_hunks(patch: PatchFile, patch_output: str, max_lines: int = 12) -> str:
    """The text of the hunks ``patch`` reported as FAILED (trimmed)."""
    failed: list[tuple[str, int]] = []
    current = "?"
    for line in patch_output.splitlines():
        if match := _PATCHING_RE.match(line.strip()):
            current = match["file"]
        elif match := _HUNK_FAIL_RE.search(line):
            failed.append((current, int(match["n"])))
    shown: list[str] = []
    for file, number in failed:
        hunk = _hunk_text(patch.text, file, number)
        if hunk:
            lines = hunk.splitlines()
            more = (
                f"\n    ... ({len(lines) - max_lines} more lines)" if len(lines) > max_lines else ""
            )
            body = "\n".join("    " + text for text in lines[:max_lines])
            shown.append(f"  {file} hunk #{number}:\n{body}{more}")
    return "\n".join(shown)


def _hunk_text(patch_text: str, file: str, number: int) -> str:
    in_file = False
    count = 0
    collected: list[str] = []
    for line in patch_text.splitlines():
        if line.startswith("+++ "):
            target = line[4:].split("\t")[0].strip()
            in_file = target.endswith("/" + file) or target == file
            count = 0
            if collected:
                break
            continue
        if not in_file:
            continue
        if line.startswith("@@"):
            count += 1
            if collected:
                break
        if count == number:
            if line.startswith(("diff ", "--- ")):
                break
            collected.append(line)
    return "\n".join(collected)


def apply_patch(tree: Path, patch: PatchFile, *, reverse: bool = False) -> PatchOutcome:
    """Apply ``patch`` to ``tree`` (reversed when asked); raise with a clear reason if not."""
    if _git_apply(tree, patch, reverse, check=True).ok:
        result = _git_apply(tree, patch, reverse, check=False)
        if result.ok:
            return PatchOutcome(patch, reverse, "git apply")
    trial = _patch(tree, patch, reverse, dry_run=True)
    if trial.ok:
        result = _patch(tree, patch, reverse, dry_run=False)
        if not result.ok:  # cannot happen after a clean dry run, but never half-apply silently
            raise PatchDoesNotApply(f"{patch.name}: patch failed after a clean dry run")
        return PatchOutcome(patch, reverse, "patch", _notes(result.output))
    if (
        _git_apply(tree, patch, not reverse, check=True).ok
        or _patch(tree, patch, not reverse, dry_run=True).ok
    ):
        what = "already reversed (its fix is not in this tree)" if reverse else "already applied"
        raise PatchAlreadyApplied(f"{patch.name}: {what}")
    direction = "reversed " if reverse else ""
    raise PatchDoesNotApply(
        f"{patch.name} does not apply {direction}to this tree",
        detail=failing_hunks(patch, trial.output) or trial.output.strip()[-800:],
    )
