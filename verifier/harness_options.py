"""Server arguments the harness owns: refused in scenario, workload and recipe files.

The harness keeps every server on 127.0.0.1, in the foreground, under its control; a file
that could set the listen address, daemonise, switch user or write a pid file or a unix
socket could take the server out of it. Checked where the files are read (scenario and
workload loaders) and again where the server is started (``ServerConfig``).
"""

from __future__ import annotations

from collections.abc import Sequence

from verifier.errors import BadInput

# memcached options the harness sets itself or that would escape it (short and long forms)
_HARNESS_OPTIONS = {
    "-d": "daemonise",
    "--daemon": "daemonise",
    "-l": "listen address",
    "--listen": "listen address",
    "-p": "TCP port",
    "--port": "TCP port",
    "-U": "UDP port",
    "--udp-port": "UDP port",
    "-u": "user",
    "--user": "user",
    "-s": "unix socket",
    "--unix-socket": "unix socket",
    "-P": "pid file",
    "--pidfile": "pid file",
    "-c": "connection limit (set [server] maxconns)",
    "--conn-limit": "connection limit (set [server] maxconns)",
    "-t": "threads (use --threads)",
    "--threads": "threads (use --threads)",
}


def refuse_harness_options(args: Sequence[str], where: str) -> None:
    """Refuse server arguments that would take the server out of the harness."""
    for arg in args:
        option = arg.split("=", 1)[0]
        if option in _HARNESS_OPTIONS or (
            option[:2] in _HARNESS_OPTIONS and not option.startswith("--")
        ):
            what = _HARNESS_OPTIONS.get(option) or _HARNESS_OPTIONS[option[:2]]
            raise BadInput(
                f"{where}: server argument {arg!r} is refused: the harness owns the {what} "
                "(it keeps every server on 127.0.0.1, in the foreground, under its control)"
            )
