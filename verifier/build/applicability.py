"""Does a commit have the code a scenario exercises? Asked of the source, before building.

``git grep`` for each required symbol at the commit (and in the patches that will be
applied): a commit whose source never mentions ``maxconns_handler`` cannot have a bug in
it, and needs no build to say so.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import git


def source_lacks_symbols(
    repo: git.Repo, commit: str, symbols: Sequence[str], patches: Sequence[Path] = ()
) -> list[str]:
    """The ``symbols`` named nowhere in the commit's C sources nor in the patches' text."""
    patch_text = "\n".join(path.read_text(errors="replace") for path in patches)
    missing = []
    for name in symbols:
        if name in patch_text:
            continue
        try:
            repo.git.grep("-q", "-w", "-F", name, commit, "--", "*.c", "*.h")
        except git.GitCommandError:  # git grep exits 1 when nothing matches
            missing.append(name)
    return missing
