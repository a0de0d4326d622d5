"""Reusable option decorators and the shared context (cache location, builder)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click

from verifier.build.builder import Builder, BuildRequest
from verifier.paths import CACHE_ENV, CacheLayout, default_cache_dir
from verifier.resources import resolve_patch
from verifier.source.select import SourceChoice, choose_source

F = TypeVar("F", bound=Callable[..., Any])


def _stack(*decorators: Callable[[F], F]) -> Callable[[F], F]:
    def apply(func: F) -> F:
        for decorator in reversed(decorators):
            func = decorator(func)
        return func

    return apply


cache_option = click.option(
    "--cache-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help=f"Cache root (default: ${CACHE_ENV} or $XDG_CACHE_HOME/memcached-verifier).",
)

source_options = _stack(
    click.option("--repo", metavar="URL|PATH", help="Git repository (default: upstream GitHub)."),
    click.option(
        "--source", metavar="debian[:VERSION]", help="Debian's memcached source package instead."
    ),
    cache_option,
)

patch_options = _stack(
    click.option(
        "--patch",
        "patches",
        multiple=True,
        metavar="FILE",
        help="Patch to apply (repeatable, in order); a bare name is looked up in patches/.",
    ),
    click.option("--reverse", is_flag=True, help="Apply the patches reversed (take a fix out)."),
    click.option("--cflags", default=None, help="Compiler flags (default: -O2 -g -march=native)."),
    click.option("--rebuild", is_flag=True, help="Ignore a cached build of the same inputs."),
)


@dataclass
class Workspace:
    cache: CacheLayout
    source: SourceChoice
    builder: Builder

    def request(
        self,
        ref: str | None,
        patches: tuple[str, ...],
        reverse: bool,
        cflags: str | None,
        rebuild: bool,
    ) -> BuildRequest:
        chosen = ref or self.source.default_ref
        if not chosen:
            raise click.UsageError("--ref is required with --repo (e.g. --ref 1.4.6)")
        return BuildRequest(
            source=self.source,
            ref=chosen,
            patches=tuple(resolve_patch(p) for p in patches),
            reverse=reverse,
            cflags=cflags,
            rebuild=rebuild,
        )


def cache_layout(cache_dir: Path | None) -> CacheLayout:
    return CacheLayout((cache_dir or default_cache_dir()).expanduser().resolve())


def open_workspace(repo: str | None, source: str | None, cache_dir: Path | None) -> Workspace:
    layout = cache_layout(cache_dir)
    choice = choose_source(repo, source, layout)
    return Workspace(layout, choice, Builder(layout.builds, layout.locks))
