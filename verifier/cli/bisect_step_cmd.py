"""``verifier bisect-step``: one commit for ``git bisect run`` (0 good, 1 bad, 125 skip).

It tests the HEAD of the repository git is bisecting, builds it through the cache, and
never exits with 128 or more of its own accord (git would abort the whole bisect): every
failure, timeout or signal becomes a skip. A commit that lacks the scenario's code
(``git grep`` finds none of its symbols, checked before building) cannot have the bug:
it is good (with ``--find-fix``: fixed), so a range whose older commits predate the code
still converges on the commit that brought it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, NoReturn

import click

from verifier.cli.options import (
    cache_option,
    open_workspace,
    patch_options,
    scenario_options,
    soak_option,
    verify_options,
)
from verifier.errors import VerifierError
from verifier.source.git_source import GitSource
from verifier.source.select import SourceChoice
from verifier.verify import verify
from verifier.vocabulary import VerdictKind

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
    @cache_option
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
    sanitize: str | None,
    tls: bool,
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
    request = workspace.request(head, patches, reverse, cflags, rebuild, sanitize, tls)
    run_dir = workspace.cache.runs / f"bisect-step-{head[:12]}-{os.getpid()}"
    outcome = verify(workspace.builder, request, options, workspace.cache.tools, run_dir)
    verdict = outcome.verdict
    click.echo(f"bisect-step {head[:12]}: {verdict.headline}", err=True)
    hangs, fine = (GOOD, BAD) if find_fix else (BAD, GOOD)
    hunted = options.hunted
    if verdict.kind == VerdictKind.HANG and hunted in (None, verdict.hang_class):
        return hangs
    if verdict.kind == VerdictKind.PASS and not verdict.other_bugs:
        return fine
    if verdict.kind == VerdictKind.NOT_APPLICABLE and outcome.build is None:
        return fine  # the source lacks the scenario's code: it cannot have this bug
    # does not build, symbols gone from the binary, inconclusive, or another bug cut the
    # soak short (its clean seconds are too few to call the commit good, as in bisect)
    return SKIP


def _exit_for_git(step: Any) -> NoReturn:
    """git bisect run aborts on exit codes >= 128: every failure, and SIGTERM/SIGHUP (which
    ``main`` turns into an exception, so the servers are stopped first), is a skip."""
    try:
        code = step()
    except VerifierError as error:
        click.echo(f"bisect-step: {error.message} (skip)", err=True)
        code = SKIP
    except BaseException as error:
        click.echo(f"bisect-step: {type(error).__name__}: {error} (skip)", err=True)
        code = SKIP
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
