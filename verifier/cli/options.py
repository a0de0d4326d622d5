"""Reusable option decorators and the shared context (cache location, builder)."""

from __future__ import annotations

import datetime as dt
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click

from verifier.build.builder import Builder, BuildRequest
from verifier.paths import CACHE_ENV, CacheLayout, default_cache_dir
from verifier.resources import resolve_patch
from verifier.scenario import AMPLIFIERS, DEFAULT_SCENARIO, load_scenario, with_workload
from verifier.source.select import SourceChoice, choose_source
from verifier.stress.workload_file import load_workload
from verifier.verify import VerifyOptions
from verifier.vocabulary import AmplifierKind, HangClass, ProbeClient, Sanitizer

F = TypeVar("F", bound=Callable[..., Any])


def stack(*decorators: Callable[[F], F]) -> Callable[[F], F]:
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

source_options = stack(
    click.option("--repo", metavar="URL|PATH", help="Git repository (default: upstream GitHub)."),
    click.option(
        "--source", metavar="debian[:VERSION]", help="Debian's memcached source package instead."
    ),
    cache_option,
)

patch_options = stack(
    click.option(
        "--patch",
        "patches",
        multiple=True,
        metavar="FILE",
        help="Patch to apply (repeatable, in order); a bare name is looked up in patches/.",
    ),
    click.option("--reverse", is_flag=True, help="Apply the patches reversed (take a fix out)."),
    click.option("--cflags", default=None, help="Compiler flags (default: -O2 -g -march=native)."),
    click.option(
        "--sanitize",
        type=click.Choice([s.value for s in Sanitizer]),
        default=None,
        help="Build with this sanitizer (its reports under the flood are verdicts).",
    ),
    click.option(
        "--tls",
        is_flag=True,
        help="Build with ./configure --enable-tls (1.5.13+): workload groups with tls = true "
        "then speak TLS to the server.",
    ),
    click.option("--rebuild", is_flag=True, help="Ignore a cached build of the same inputs."),
    click.option(
        "--build-user",
        metavar="USER",
        expose_value=False,  # handed to the builder through its environment variable
        callback=lambda _ctx, _param, value: value and os.environ.update(VERIFIER_BUILD_USER=value),
        help="As root, run build steps as USER (default: $VERIFIER_BUILD_USER or nobody).",
    ),
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
        sanitize: str | None = None,
        tls: bool = False,
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
            sanitizer=Sanitizer(sanitize) if sanitize else None,
            tls=tls,
        )


def cache_layout(cache_dir: Path | None) -> CacheLayout:
    return CacheLayout((cache_dir or default_cache_dir()).expanduser().resolve())


def open_workspace(repo: str | None, source: str | None, cache_dir: Path | None) -> Workspace:
    layout = cache_layout(cache_dir)
    choice = choose_source(repo, source, layout)
    return Workspace(layout, choice, Builder(layout.builds, layout.locks))


class ProgressLine:
    """One live status line on a terminal; a line every few seconds otherwise."""

    def __init__(self, every_s: float = 5.0) -> None:
        self.tty = sys.stderr.isatty()
        self.every_s = every_s
        self.last = 0.0

    def __call__(self, text: str) -> None:
        if self.tty:
            click.echo("\r\033[K" + text[: click.get_terminal_size()[0] - 1], err=True, nl=False)
            return
        now = dt.datetime.now().timestamp()
        if now - self.last >= self.every_s:
            self.last = now
            click.echo(text, err=True)

    def done(self) -> None:
        if self.tty:
            click.echo("\r\033[K", err=True, nl=False)


def default_run_dir(cache_runs: Path, label: str, scenario: str) -> Path:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", label)[:40]
    return cache_runs / f"{stamp}-{safe}-{scenario}-{os.getpid()}"


confidence_option = click.option(
    "--confidence",
    type=click.FloatRange(0.5, 0.999),
    default=0.95,
    show_default=True,
    help="verify: the confidence of a PASS bound; bisect: stop when the culprit's posterior "
    "reaches it.",
)

soak_option = click.option(
    "--soak",
    "soak_s",
    type=click.FloatRange(1.0),
    default=20.0,
    show_default=True,
    help="Seconds of flood per trial.",
)


def scenario_options(func):  # type: ignore[no-untyped-def]
    for option in reversed(
        [
            click.option(
                "--scenario",
                default=DEFAULT_SCENARIO,
                show_default=True,
                help="Race to hunt: a name from `verifier scenarios` or a .toml file.",
            ),
            click.option(
                "--workload",
                metavar="NAME|FILE",
                default=None,
                help="What the clients do, instead of the scenario's own: a name from "
                "`verifier workloads` or a .toml file.",
            ),
            click.option(
                "--amplify",
                type=click.Choice(AMPLIFIERS),
                default=None,
                help="Race amplifier (default: the scenario's).",
            ),
            click.option(
                "--delay-us",
                type=click.IntRange(0),
                default=None,
                help="Override the amplifier's delay (gdb: hold time).",
            ),
            click.option(
                "--amplify-every",
                type=click.IntRange(1),
                default=1,
                show_default=True,
                help="Stretch only every Nth race window (emulates a rarer race).",
            ),
            click.option(
                "--auto-memory",
                type=click.Path(dir_okay=False, path_type=Path),
                default=None,
                help="--amplify auto: the file of what led to hangs before (default: one in "
                "the cache, shared by scenarios and commands; copy it to carry the learning).",
            ),
            click.option(
                "--threads",
                type=click.IntRange(1),
                default=None,
                help="Server worker threads (default: host cores).",
            ),
            click.option(
                "--concurrency",
                type=click.IntRange(1),
                default=None,
                help="Flood connections in flight (default: the scenario's).",
            ),
            click.option(
                "--probe-client",
                type=click.Choice([c.value for c in ProbeClient]),
                default=ProbeClient.AUTO.value,
                show_default=True,
                help="Liveness probe carrier.",
            ),
        ]
    ):
        func = option(func)
    return func


def verify_options(
    scenario: str,
    amplify: str | None,
    delay_us: int | None,
    amplify_every: int,
    threads: int | None,
    concurrency: int | None,
    probe_client: str,
    hunt: HangClass | None = None,
    workload: str | None = None,
    **extra: Any,
) -> VerifyOptions:
    """VerifyOptions from the shared scenario options (the rest passed through). ``hunt``
    (from ``--expect hang:CLASS``) names the class hunted when the scenario names none."""
    loaded = load_scenario(scenario)
    if workload is not None:
        loaded = with_workload(loaded, load_workload(workload))
    return VerifyOptions(
        scenario=loaded,
        amplify=None if amplify is None else AmplifierKind(amplify),
        delay_us=delay_us,
        amplify_every=amplify_every,
        threads=threads,
        concurrency=concurrency,
        probe_client=None if probe_client == ProbeClient.AUTO else probe_client,
        hunt=hunt if loaded.hang_class is None else None,
        **extra,
    )
