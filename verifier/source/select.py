"""Turn ``--repo`` / ``--source`` into a git repository plus its default ref."""

from __future__ import annotations

from dataclasses import dataclass

from verifier.errors import BadInput
from verifier.paths import CacheLayout
from verifier.source.debian import DebianSource
from verifier.source.git_source import UPSTREAM_URL, GitSource


@dataclass(frozen=True)
class SourceChoice:
    git: GitSource
    default_ref: str | None  # None: the user must give --ref
    label: str  # how reports name the source


def choose_source(repo: str | None, source: str | None, cache: CacheLayout) -> SourceChoice:
    if repo and source:
        raise BadInput("give either --repo or --source, not both")
    if source:
        kind, _, version = source.partition(":")
        if kind != "debian":
            raise BadInput(f"unknown --source {source!r} (expected debian or debian:VERSION)")
        imported = DebianSource(cache.debian, version or None).ensure()
        git = GitSource(str(imported.repo_path), cache.mirrors, mirror=False)
        return SourceChoice(git, imported.debian_tag, f"debian:{imported.version}")
    location = repo or UPSTREAM_URL
    return SourceChoice(GitSource(location, cache.mirrors), None, location)
