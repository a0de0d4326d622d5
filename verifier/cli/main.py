"""Entry point: the ``verifier`` group, and the one place that maps errors to exit codes."""

from __future__ import annotations

import importlib.util
import os
import signal
import sys
import tempfile
import traceback
from collections.abc import Sequence
from pathlib import Path

import click

from verifier import __version__
from verifier.cli import (
    bisect_cmd,
    bisect_step_cmd,
    build_cmd,
    cache_cmd,
    demo_cmd,
    export_cmd,
    known_bugs_cmd,
    matrix_cmd,
    verify_cmd,
)
from verifier.errors import ExitStatus, VerifierError
from verifier.util import signals
from verifier.util.atomic import write_text

_SIGNAL_STATUS = {signal.SIGTERM: ExitStatus.TERMINATED, signal.SIGHUP: ExitStatus.HUNG_UP}


class Terminated(BaseException):
    """SIGTERM or SIGHUP, raised like Ctrl-C's KeyboardInterrupt so that every ``finally``
    and ExitStack runs: servers and floods stopped by pid, state already saved."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def install_signal_handlers() -> None:
    signals.install(list(_SIGNAL_STATUS), Terminated)
    signals.install([signal.SIGINT], lambda _signum: KeyboardInterrupt())


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="verifier")
def cli() -> None:
    """Build memcached at any ref with any patches, flood it, catch hangs, bisect them.

    Exit codes: 0 success (verify: bounded PASS), 1 HANG/CRASH, 2 bad input,
    3 patch does not apply, 4 patch already applied, 5 build failed, 6 tool or package
    missing, 7 scenario not applicable, 8 harness error, 9 inconclusive, 10 bad bisect
    range, 11 unknown ref, 12 --expect not met, 13 PASS but another hang showed, 14 network,
    15 matrix gate failed, 129/130/143 hung up/interrupted/terminated.
    """


for module in (
    build_cmd,
    verify_cmd,
    bisect_cmd,
    bisect_step_cmd,
    demo_cmd,
    cache_cmd,
    matrix_cmd,
    export_cmd,
    known_bugs_cmd,
):
    module.register(cli)


def save_traceback() -> Path:
    path = Path(tempfile.gettempdir()) / f"verifier-traceback-{os.getpid()}.txt"
    write_text(path, traceback.format_exc())
    return path


def report_error(error: VerifierError) -> None:
    click.secho(f"error: {error.message}", fg="red", err=True)
    if error.detail:
        click.echo(error.detail, err=True)


def declare_main_module() -> None:
    """Flood workers start by multiprocessing's "spawn", which re-runs the main script in
    each child unless ``__main__`` is a package's ``__main__``. Run as the ``verifier``
    console script, every worker would import the whole CLI again: measured, a flood took
    0.6 s to start instead of 0.2 s, on every trial. Declare the package's ``__main__``."""
    module = sys.modules.get("__main__")
    if module is not None and getattr(module, "__spec__", None) is None:
        module.__spec__ = importlib.util.find_spec("verifier.__main__")


def main(argv: Sequence[str] | None = None) -> None:
    """Run the CLI; never lets a traceback out for an expected failure."""
    install_signal_handlers()
    declare_main_module()
    try:
        status = cli.main(args=list(argv) if argv is not None else None, standalone_mode=False)
    except VerifierError as error:
        report_error(error)
        sys.exit(int(error.status))
    except (KeyboardInterrupt, click.exceptions.Abort):
        click.echo("interrupted", err=True)
        sys.exit(int(ExitStatus.INTERRUPTED))
    except Terminated as stop:
        click.echo(f"stopped by {stop}", err=True)
        sys.exit(int(_SIGNAL_STATUS[signal.Signals(stop.signum)]))
    except click.exceptions.Exit as done:
        sys.exit(done.exit_code)
    except click.ClickException as error:
        error.show()
        sys.exit(int(ExitStatus.BAD_INPUT))
    except Exception as error:  # a bug in the verifier: one line here, the traceback in a file
        saved = save_traceback()
        click.secho(
            f"internal error: {type(error).__name__}: {error} (a bug in verifier; "
            f"traceback in {saved})",
            fg="red",
            err=True,
        )
        sys.exit(int(ExitStatus.HARNESS_ERROR))
    sys.exit(int(status) if isinstance(status, int) else 0)
