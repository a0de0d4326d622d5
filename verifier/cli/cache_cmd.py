"""``verifier cache list|clean``: what is cached, and making room."""

from __future__ import annotations

import datetime as dt
import re
import shutil
from pathlib import Path

import click

from verifier.build.cache import BuildCache
from verifier.cli.options import cache_layout, cache_option
from verifier.errors import BadInput, ExitStatus
from verifier.report.table import table
from verifier.util.disk import tree_size

_SIZE_RE = re.compile(r"^(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?$", re.IGNORECASE)


def parse_size(text: str) -> int:
    match = _SIZE_RE.match(text.strip())
    if not match:
        raise BadInput(f"bad size {text!r} (e.g. 500M, 2G)")
    scale = 1024 ** " KMGT".index((match[2] or " ").upper())
    return int(float(match[1]) * scale)


def _human(n: float) -> str:
    for unit in ("B", "K", "M", "G"):
        if n < 1024:
            return f"{n:.0f}{unit}"
        n /= 1024
    return f"{n:.1f}T"


@click.group("cache")
def cache() -> None:
    """List and clean cached builds."""


@cache.command("list")
@cache_option
def list_entries(cache_dir: Path | None) -> ExitStatus:
    """One line per cached build."""
    layout = cache_layout(cache_dir)
    builds = BuildCache(layout.builds, layout.locks)
    rows = []
    for entry in builds.entries():
        meta = entry.meta
        patches = ",".join(p.name for p in meta.patches) or "-"
        rows.append(
            (
                entry.key[:12],
                str(meta.status),
                meta.describe,
                patches + (" (reversed)" if meta.reverse else ""),
                f"{meta.build_seconds:.1f}s",
                _human(entry.size_bytes()),
                dt.datetime.fromtimestamp(entry.last_used).strftime("%Y-%m-%d %H:%M"),
            )
        )
    headers = ["key", "status", "ref", "patches", "build", "size", "last used"]
    click.echo(table(rows, headers) if rows else "no cached builds")
    parts = [
        ("git mirrors", layout.mirrors),
        ("debian imports", layout.debian),
        ("runs and evidence", layout.runs),
        ("bisect states", layout.bisects),
        ("auto discoveries and memories", layout.auto),
        ("matrix cells", layout.matrix_cells),
    ]
    click.echo(
        "\n"
        + "; ".join(f"{name}: {_human(tree_size(path))}" for name, path in parts)
        + f"  (under {layout.root})"
    )
    return ExitStatus.SUCCESS


@cache.command("clean")
@cache_option
@click.option("--all", "everything", is_flag=True, help="Remove every cached build.")
@click.option("--failed", is_flag=True, help="Remove cached build failures.")
@click.option(
    "--older-than", type=click.FloatRange(0), metavar="DAYS", help="Unused for more than DAYS."
)
@click.option("--max-size", metavar="SIZE", help="Evict least recently used down to SIZE.")
@click.option("--runs", is_flag=True, help="Also remove run directories (logs, evidence).")
def clean(
    cache_dir: Path | None,
    everything: bool,
    failed: bool,
    older_than: float | None,
    max_size: str | None,
    runs: bool,
) -> ExitStatus:
    """Remove cached builds by rule (at least one rule is required)."""
    if not (everything or failed or older_than is not None or max_size or runs):
        raise BadInput(
            "say what to clean: --all, --failed, --older-than DAYS, --max-size SIZE or --runs"
        )
    layout = cache_layout(cache_dir)
    if runs and layout.runs.is_dir():
        shutil.rmtree(layout.runs, ignore_errors=True)  # another clean may race us
        click.echo(f"removed {layout.runs}")
    max_bytes = parse_size(max_size) if max_size else None
    if not (everything or failed or older_than is not None or max_bytes is not None):
        return ExitStatus.SUCCESS  # --runs alone: builds untouched
    builds = BuildCache(layout.builds, layout.locks)
    result = builds.clean(
        everything=everything,
        failed=failed,
        older_than_s=older_than * 86400 if older_than is not None else None,
        max_bytes=max_bytes,
    )
    click.echo(f"removed {len(result.removed)} cached build(s)")
    if result.skipped:
        in_use = "; ".join(f"{e.key[:12]} {e.meta.describe}" for e in result.skipped)
        count = len(result.skipped)
        click.echo(f"skipped {count} build{'s' if count > 1 else ''} in use: {in_use}")
    return ExitStatus.SUCCESS


def register(cli: click.Group) -> None:
    cli.add_command(cache)
