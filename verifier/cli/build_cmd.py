"""``verifier build``: print the binary's path and the build time."""

from __future__ import annotations

import click

from verifier.build.builder import BuildResult
from verifier.cli.options import open_workspace, patch_options, source_options
from verifier.errors import ExitStatus
from verifier.report.table import key_value_table


def describe_build(result: BuildResult) -> list[tuple[str, str]]:
    rows = [
        ("commit", f"{result.commit[:12]} ({result.describe})"),
        ("recipe", result.recipe.path.name),
    ]
    if result.meta.sanitizer:
        rows.append(("sanitizer", result.meta.sanitizer))
    if result.meta.tls:
        rows.append(("tls", "configured with --enable-tls"))
    for patch in result.patches:
        for field, value in patch.header.summary_rows():
            rows.append((f"{patch.name} {field}", value))
    rows += [("patch", note) for note in result.patch_notes]
    how = "cache hit" if result.cache_hit else "built"
    rows.append(
        ("build", f"{how} in {result.seconds:.2f} s (original build {result.build_seconds:.1f} s)")
    )
    if result.build_user:
        rows.append(("built as", result.build_user))
    rows.append(("log", str(result.log)))
    return rows


def register(cli: click.Group) -> None:
    @cli.command("build")
    @source_options
    @click.option("--ref", help="Tag, branch or SHA (default with --source debian: Debian's tree).")
    @patch_options
    @click.option("--quiet", "-q", is_flag=True, help="Print only the binary's path.")
    def build(
        repo: str | None,
        source: str | None,
        cache_dir: object,
        ref: str | None,
        patches: tuple[str, ...],
        reverse: bool,
        cflags: str | None,
        sanitize: str | None,
        tls: bool,
        rebuild: bool,
        quiet: bool,
    ) -> ExitStatus:
        """Build memcached at REF with the given patches (cached)."""
        workspace = open_workspace(repo, source, cache_dir)  # type: ignore[arg-type]
        result = workspace.builder.build(
            workspace.request(ref, patches, reverse, cflags, rebuild, sanitize, tls)
        )
        if not quiet:
            click.echo(key_value_table(describe_build(result)), err=True)
        click.echo(str(result.binary))
        return ExitStatus.SUCCESS
