"""A scenario's workload fitted to one build: what the build lacks is left out and listed,
never sent blindly (a command it does not know, an ``-o`` option it would refuse at start,
a signal it has no handler for).

The features come from the build itself (``verifier/stress/features.py``: ``-h``, string
literals, symbols, version). An ``-o`` option the feature table does not name is kept when
its name is a string literal in the binary (memcached's suboption tokens are C strings),
else left out: an unknown suboption stops memcached at start ("Illegal suboption").
A group with ``tls = true`` needs a build with TLS and a plain listener beside it (the
probes speak plain ascii). A workload whose every group is left out makes the scenario
NOT APPLICABLE.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from verifier.build.help import help_text as help_of
from verifier.scenario import Scenario
from verifier.stress.features import Features, command_key
from verifier.stress.protocol.base import Command
from verifier.stress.workload_file import EventAction, Group, GroupKind, Workload

TLS_CONNECTIONS = "tls connections"  # what a group with tls = true needs (features.toml)


def _lacks(features: Features, name: str) -> str:
    reasons = features.missing_for([name])
    return reasons[0] if reasons else ""


def _fit_group(group: Group, features: Features, left_out: list[str]) -> Group | None:
    where = f"group {group.name}"
    if group.tls and _lacks(features, TLS_CONNECTIONS):
        left_out.append(f"{where}: {_lacks(features, TLS_CONNECTIONS)}")
        return None
    if group.kind == GroupKind.WATCH:
        why = _lacks(features, "watch")
        if why:
            left_out.append(f"{where}: {why}")
            return None
        return group
    commands, args = [], dict(group.args)
    for command, weight in group.commands:
        choices = group.arg_choices(command)
        kept = [a for a in choices if not _lacks(features, command_key(Command(command, arg=a)))]
        if not kept:
            why = _lacks(features, command_key(Command(command, arg=choices[0])))
            left_out.append(f"{where}: {why}")
            continue
        for dropped in sorted(set(choices) - set(kept)):
            left_out.append(
                f"{where}: {_lacks(features, command_key(Command(command, arg=dropped)))}"
            )
        if len(kept) != len(choices):
            args[command] = tuple(kept)
        commands.append((command, weight))
    if not commands:
        return None
    return replace(group, commands=tuple(commands), args=tuple(args.items()))


def _option_known(features: Features, blob: bytes, help_text: str, option: str) -> str:
    """Why the build would refuse ``-o option`` ("" when it takes it)."""
    name = option.split("=", 1)[0]
    if "-o" not in help_text.split():
        return f"-o {name}: this build has no -o (extended options arrived in 1.4.8)"
    if features.option_needs(name):
        return _lacks_option(features, option)
    if name.encode() + b"\x00" in blob:
        return ""
    return f"-o {name}: not an option of this build (no such suboption in the binary)"


def _lacks_option(features: Features, option: str) -> str:
    reasons = features.missing_for([], [option])
    return reasons[0] if reasons else ""


def fit_workload(scenario: Scenario, features: Features) -> tuple[Scenario, list[str]]:
    """The scenario with its workload fitted to the build, and what was left out (why)."""
    workload = scenario.workload
    if workload is None:
        return scenario, []
    left_out: list[str] = []
    groups = [g for g in (_fit_group(g, features, left_out) for g in workload.groups) if g]
    blob = Path(features.binary).read_bytes()
    help_text = help_of(Path(features.binary)).replace(",", " ")
    options = []
    for option in workload.server.options:
        why = _option_known(features, blob, help_text, option)
        if why:
            left_out.append(f"server: {why}")
        else:
            options.append(option)
    server = workload.server
    if server.extstore_mb is not None and not features.has("extstore"):
        left_out.append("server: extstore: not in this build")
        server = replace(server, extstore_mb=None)
    if server.enable_shutdown and _lacks_option(features, "-A"):
        left_out.append(f"server: {_lacks_option(features, '-A')}")
        server = replace(server, enable_shutdown=False)
    events = []
    for event in workload.events:
        key = {
            EventAction.SIGNAL: f"signal {event.signal}",
            EventAction.SHUTDOWN: "shutdown",
            EventAction.SHUTDOWN_GRACEFUL: "shutdown graceful",
        }.get(event.action, "")
        why = _lacks(features, key) if key else ""
        if why:
            left_out.append(f"event {event.describe()}: {why}")
        else:
            events.append(event)
    fitted: Workload | None = replace(
        workload,
        server=replace(server, options=tuple(options)),
        groups=tuple(groups),
        events=tuple(events),
    )
    if not groups:
        fitted = None
    return replace(scenario, workload=fitted), left_out
