"""Applying patches to a small real git tree: exact, fuzzy, already applied, failing."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from verifier.errors import BadInput, PatchAlreadyApplied, PatchDoesNotApply
from verifier.patch.apply import PatchFile, apply_patch

ORIGINAL = "".join(f"line {i}\n" for i in range(1, 41))


def _tree(tmp_path: Path, text: str = ORIGINAL) -> Path:
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "file.c").write_text(text)
    subprocess.run(["git", "init", "-q", str(tree)], check=True)
    return tree


def _patch(tmp_path: Path, body: str, name: str = "change.diff") -> PatchFile:
    path = tmp_path / name
    path.write_text("Description: change line 20\n---\n" + body)
    return PatchFile.load(path)


CHANGE_20 = (
    "--- a/file.c\n+++ b/file.c\n@@ -18,5 +18,5 @@\n line 18\n line 19\n-line 20\n+LINE 20\n"
    " line 21\n line 22\n"
)


def test_applies_cleanly_then_is_already_applied(tmp_path: Path) -> None:
    tree = _tree(tmp_path)
    patch = _patch(tmp_path, CHANGE_20)
    outcome = apply_patch(tree, patch)
    assert outcome.method == "git apply" and outcome.notes == []
    assert "LINE 20" in (tree / "file.c").read_text()
    with pytest.raises(PatchAlreadyApplied):
        apply_patch(tree, patch)


def test_reverse_takes_it_out(tmp_path: Path) -> None:
    tree = _tree(tmp_path, ORIGINAL.replace("line 20\n", "LINE 20\n"))
    apply_patch(tree, _patch(tmp_path, CHANGE_20), reverse=True)
    assert (tree / "file.c").read_text() == ORIGINAL


def test_offset_and_fuzz_are_reported(tmp_path: Path) -> None:
    moved = "extra\n" * 7 + ORIGINAL.replace("line 18\n", "line 18 (edited)\n")
    tree = _tree(tmp_path, moved)
    outcome = apply_patch(tree, _patch(tmp_path, CHANGE_20))
    assert outcome.method == "patch"
    [note] = outcome.notes
    assert note.offset == 7 and note.fuzz >= 1
    assert "offset +7" in outcome.describe() and "fuzz" in outcome.describe()


def test_does_not_apply_shows_the_failing_hunk(tmp_path: Path) -> None:
    tree = _tree(tmp_path, "something else entirely\n" * 40)
    with pytest.raises(PatchDoesNotApply) as caught:
        apply_patch(tree, _patch(tmp_path, CHANGE_20))
    assert "+LINE 20" in caught.value.detail
    assert (tree / "file.c").read_text() == "something else entirely\n" * 40  # untouched


def test_not_a_diff_is_bad_input(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("just words\n")
    with pytest.raises(BadInput):
        PatchFile.load(path)
