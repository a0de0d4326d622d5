"""``verifier bisect-step``: one commit for ``git bisect run`` (0 good, 1 bad, 125 skip).

It tests the HEAD of the repository git is bisecting, builds it through the cache, and
never exits with 128 or more of its own accord (git would abort the whole bisect): every
failure, timeout or signal becomes a skip.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any, NoReturn

import click

from verifier.cli.options import (
    open_workspace,
    patch_options,
    scenario_options,
    soak_option,
    verify_options,
)
from verifier.errors import VerifierError
from verifier.source.git_source import GitSource
from verifier.source.select import SourceChoice
from verifier.verdict.verdict import HANG, PASS
from verifier.verify import verify

GOOD, BAD, SKIP = 0, 1, 125


def register(cli: click.Group) -> None:
    @cli.command("bisect-step")
    @click.option(
        "--repo",
        default=".",
        show_default=True,
        metavar="PATH",
        help="The repository git bisect is running in; its HEAD is tested.",
    )
    @click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), default=None)
    @click.option(
        "--find-fix",
        is_flag=True,
        help="For `git bisect start --term-old=hangs --term-new=fixed`: a hang is old (0), "
        "no hang is new (1).",
    )
    @patch_options
    @scenario_options
    @soak_option
    @click.option("--trials", type=click.IntRange(1), default=1, show_default=True)
    def bisect_step(**params: Any) -> NoReturn:
        """Test HEAD for `git bisect run`: exit 0 good, 1 bad, 125 skip, never 128 or more."""
        _exit_for_git(lambda: _step(**params))


def _step(
    repo: str,
    cache_dir: Path | None,
    find_fix: bool,
    patches: tuple[str, ...],
    reverse: bool,
    cflags: str | None,
    rebuild: bool,
    soak_s: float,
    trials: int,
    **flood: Any,
) -> int:
    workspace = open_workspace(None, None, cache_dir)
    git = GitSource(repo, workspace.cache.mirrors, mirror=False)
    workspace.source = SourceChoice(git, None, repo)
    head = git.repo.head.commit.hexsha
    options = verify_options(trials=trials, soak_s=soak_s, **flood)
    request = workspace.request(head, patches, reverse, cflags, rebuild)
    run_dir = workspace.cache.runs / f"bisect-step-{head[:12]}-{os.getpid()}"
    outcome = verify(workspace.builder, request, options, workspace.cache.tools, run_dir)
    verdict = outcome.verdict
    click.echo(f"bisect-step {head[:12]}: {verdict.headline}", err=True)
    if verdict.kind == HANG and verdict.hang_class == options.scenario.expect:
        return GOOD if find_fix else BAD
    if verdict.kind == PASS and not verdict.other_bugs:
        return BAD if find_fix else GOOD
    # does not build, not applicable, inconclusive, or another bug cut the soak short (its
    # clean seconds are too few to call the commit good, as in `verifier bisect`)
    return SKIP


def _exit_for_git(step: Any) -> NoReturn:
    """git bisect run aborts on exit codes >= 128: map every failure to a skip instead."""

    def on_signal(signum: int, _frame: object) -> NoReturn:
        click.echo(f"bisect-step: signal {signum}, skipping this commit", err=True)
        os._exit(SKIP)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    try:
        code = step()
    except VerifierError as error:
        click.echo(f"bisect-step: {error.message} (skip)", err=True)
        code = SKIP
    except BaseException as error:
        click.echo(f"bisect-step: {type(error).__name__}: {error} (skip)", err=True)
        code = SKIP
    sys.stdout.flush()
    os._exit(code)
