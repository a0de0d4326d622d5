"""Scenarios: data files in ``recipes/scenarios/*.toml`` describing one race to hunt.

A scenario says which server options and flood shape reach the buggy path, how to
amplify the race (a store watchpoint, a libc interposition, or a gdb hold), which hang
class proves it (``hang_class``; none: any hang is the scenario's bug), and which symbols
a build must have for the scenario to apply. Adding the next race is a new file here, not
a change to the code. The generic ``flood`` scenario is the connection-churn flood and the
probes, no symbol, no class: for races nobody has named yet (``--amplify auto``).

Scenario files are code paths: server arguments that would take the server out of the
harness (daemonise, listen elsewhere, switch user, pid files, unix sockets) are refused,
variables read as evidence must be C identifiers (they reach gdb), and no amplifier may
sleep as long as the hang-confirmation window.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from verifier.errors import BadInput
from verifier.harness_options import refuse_harness_options
from verifier.limits import CONFIRM_WINDOW_S, MAX_AMPLIFIER_DELAY_US
from verifier.resources import recipes_dir
from verifier.stress.workload_file import (
    Connection,
    Group,
    Protocol,
    Workload,
    load_workload,
    parse_workload,
)
from verifier.vocabulary import AmplifierKind, HangClass

DEFAULT_SCENARIO = "maxconns-deadlock"
AMPLIFIERS = tuple(kind.value for kind in AmplifierKind)
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_KEYS = {
    "name",
    "summary",
    "targets",
    "requires_symbols",
    "hang_class",
    "set_aside",
    "same_bug",
    "server",
    "flood",
    "amplify",
    "evidence",
    "workload",
    "exercise",
}
_CHURN_COMMANDS = frozenset({"get", "set", "stats"})


@dataclass(frozen=True)
class WatchSpec:
    symbol: str
    cond: str = "eq"
    value: int = 0
    length: int = 1
    delay_us: int = 20_000
    thread: str = "main"


@dataclass(frozen=True)
class InterposeSpec:
    functions: tuple[str, ...]
    ret: int | None = -1
    errno_name: str | None = "EMFILE"
    delay_us: int = 50_000
    when: str = "after"
    thread: str = "any"


@dataclass(frozen=True)
class GdbHoldSpec:
    location: str  # a breakpoint location, e.g. a function name
    hold_ms: int = 50
    thread: str = "main"
    every: int = 1  # hold on every Nth hit only
    unless_held: str = ""  # a mutex (C identifier): no hold when the stopped thread owns it
    hold_at: str = ""  # hold here instead, when a thread picked at ``location`` reaches it


@dataclass(frozen=True)
class FloodShape:
    concurrency: int = 400
    mix: tuple[tuple[str, float], ...] = (("get", 0.8), ("set", 0.1), ("stats", 0.1))


@dataclass(frozen=True)
class Exercise:
    """What a clean soak must have done for its PASS to say anything: reached EMFILE (the
    accept path's bugs), and had each of these commands answered without an error."""

    emfile: bool = True
    commands: tuple[str, ...] = ()


@dataclass(frozen=True)
class Scenario:
    name: str
    path: Path
    summary: str
    targets: str
    requires_symbols: tuple[str, ...]
    hang_class: HangClass | None  # the class this scenario's bug produces; None: any hang
    maxconns: int
    server_args: tuple[str, ...]
    flood: FloodShape
    amplify_default: AmplifierKind
    watch: tuple[WatchSpec, ...] = field(default_factory=tuple)
    interpose: tuple[InterposeSpec, ...] = field(default_factory=tuple)
    gdb: GdbHoldSpec | None = None
    variables: tuple[str, ...] = field(default_factory=tuple)  # read with gdb as evidence
    workload: Workload | None = None  # client groups beside the churn (``flood``)
    workload_name: str = ""  # the workload file the flood and the groups came from
    exercise: Exercise = field(default_factory=Exercise)
    # hang classes of other bugs this scenario's flood meets first: listed, never its proof
    set_aside: frozenset[HangClass] = frozenset()
    # ends that are all this scenario's one bug ("crash", "hang:livelock"): a bisect takes
    # any of them for the bad end's (libevent corruption exits or spins)
    same_bug: frozenset[str] = frozenset()

    def amplifiers(self) -> tuple[AmplifierKind, ...]:
        """The amplifier kinds this scenario can use (auto and none always)."""
        kinds = [
            kind
            for kind, given in (
                (AmplifierKind.WATCH, self.watch),
                (AmplifierKind.INTERPOSE, self.interpose),
                (AmplifierKind.GDB, self.gdb),
            )
            if given
        ]
        return (*kinds, AmplifierKind.AUTO, AmplifierKind.NONE)


def _check_delay(where: str, delay_us: int) -> None:
    if not 0 <= delay_us <= MAX_AMPLIFIER_DELAY_US:
        raise BadInput(
            f"{where}: delay {delay_us} us is refused: it must stay below the "
            f"{CONFIRM_WINDOW_S:.0f} s hang-confirmation window (the amplifier would make "
            "the hang it proves)"
        )


def _validate(scenario: Scenario) -> None:
    refuse_harness_options(scenario.server_args, f"scenario {scenario.name}")
    for name in (*scenario.variables, *scenario.requires_symbols):
        if not _IDENTIFIER.fullmatch(name):
            raise BadInput(f"scenario {scenario.name}: {name!r} is not a C identifier")
    for rule in (*scenario.watch, *scenario.interpose):
        _check_delay(f"scenario {scenario.name}", rule.delay_us)
    if scenario.gdb is not None:
        _check_delay(f"scenario {scenario.name} gdb hold", scenario.gdb.hold_ms * 1000)
        if not isinstance(scenario.gdb.hold_at, str) or "\n" in scenario.gdb.hold_at:
            raise BadInput(f"scenario {scenario.name}: gdb hold_at must be one location")
        held = scenario.gdb.unless_held
        if held and not (isinstance(held, str) and _IDENTIFIER.fullmatch(held)):
            raise BadInput(
                f"scenario {scenario.name}: gdb unless_held {held!r} is not a C identifier "
                '(a mutex variable, e.g. "cache_lock")'
            )
    if scenario.amplify_default not in scenario.amplifiers():
        raise BadInput(f"scenario {scenario.name}: default amplifier is not defined in the file")


def _churn_shape(group: Group) -> FloodShape | None:
    """A group the churn flood's fast path runs as is (it keeps its figures): new
    connection per ascii get/set/stats, nothing paced, checked, expiring or slow."""
    plain = (
        group.connection == Connection.CHURN
        and group.protocol == Protocol.ASCII
        and group.pipeline == 1
        and not (group.check or group.rate or group.read_delay_ms or group.ttl != (0, 0))
        and {c for c, _ in group.commands} <= _CHURN_COMMANDS
    )
    return FloodShape(group.clients, group.commands) if plain else None


def _main_command(group: Group) -> str:
    """The command a group sends most (``watch`` for watchers)."""
    if not group.commands:
        return "watch"
    return max(group.commands, key=lambda pair: pair[1])[0]


def with_workload(
    scenario: Scenario, workload: Workload, exercise: Exercise | None = None
) -> Scenario:
    """The scenario driven by ``workload`` (``--workload`` replaces the scenario's own):
    its first plain churn group becomes the churn flood, the rest run as client groups.
    Without an explicit ``exercise``, a PASS needs EMFILE only when all there is is churn."""
    churn, rest = FloodShape(concurrency=0), []
    for group in workload.groups:
        shape = _churn_shape(group) if churn.concurrency == 0 else None
        if shape is not None:
            churn = shape
        else:
            rest.append(group)
    groups = replace(workload, groups=tuple(rest)) if rest else None
    if exercise is None:  # each group must have done what it is there for, once at least
        exercise = Exercise(
            emfile=churn.concurrency > 0 and not rest,
            commands=tuple(dict.fromkeys(_main_command(g) for g in rest)),
        )
    if not (churn.concurrency or rest):
        raise BadInput(f"workload {workload.name} has no client group")
    fits = scenario.maxconns - 8  # the held connection, probes and memcached's own fds
    if groups is not None and groups.clients > fits:
        raise BadInput(
            f"workload {workload.name} keeps {groups.clients} connections open, but scenario "
            f"{scenario.name} allows {scenario.maxconns} (-c): raise [server] maxconns"
        )
    return replace(
        scenario, flood=churn, workload=groups, workload_name=workload.name, exercise=exercise
    )


def _workload_of(path: Path, value: Any) -> Workload:
    if isinstance(value, str):
        candidate = path.parent / value
        return load_workload(str(candidate) if candidate.suffix == ".toml" else value)
    if isinstance(value, dict):
        return parse_workload(value, f"{path.stem} (inline)", path)
    raise BadInput(f"bad scenario file {path.name}: workload must be a name or a table")


def _set_aside(path: Path, names: Any) -> frozenset[HangClass]:
    """``set_aside = ["listener-lost-wakeup"]``: named classes only (an unnamed hang could
    be the scenario's own bug in another shape)."""
    named = [c.value for c in HangClass if c != HangClass.UNKNOWN]
    if not isinstance(names, list) or any(n not in named for n in names):
        raise BadInput(
            f"bad scenario file {path.name}: set_aside takes hang classes ({', '.join(named)})"
        )
    return frozenset(HangClass(n) for n in names)


def _same_bug(path: Path, shapes: Any) -> frozenset[str]:
    """``same_bug = ["crash", "hang:livelock"]``: a crash, or a hang of a named class."""
    named = [f"hang:{c.value}" for c in HangClass if c != HangClass.UNKNOWN]
    if not isinstance(shapes, list) or any(s not in ("crash", *named) for s in shapes):
        raise BadInput(
            f"bad scenario file {path.name}: same_bug takes crash or hang:CLASS (a named class)"
        )
    return frozenset(shapes)


def _unless_any(value: Any) -> Any:
    """An interpose rule's ``ret`` or ``errno``: "any" matches every result (None)."""
    return None if value == "any" else value


def _load(path: Path) -> Scenario:
    try:
        data: dict[str, Any] = tomllib.loads(path.read_text(encoding="utf-8"))
        for old, new in (("expect", "hang_class"), ("signature", "evidence")):
            if old in data:
                raise BadInput(f"bad scenario file {path.name}: '{old}' is now called '{new}'")
        unknown = sorted(set(data) - _KEYS)
        if unknown:
            raise BadInput(f"bad scenario file {path.name}: unknown key(s) {', '.join(unknown)}")
        server = data.get("server", {})
        flood = data.get("flood", {})
        amplify = data.get("amplify", {})
        gdb = amplify.get("gdb")
        scenario = Scenario(
            name=data.get("name", path.stem),
            path=path,
            summary=data["summary"],
            targets=data.get("targets", ""),
            requires_symbols=tuple(data.get("requires_symbols", [])),
            hang_class=HangClass(data["hang_class"]) if data.get("hang_class") else None,
            maxconns=int(server.get("maxconns", 64)),
            server_args=tuple(server.get("args", [])),
            flood=FloodShape(
                concurrency=int(flood.get("concurrency", 400)),
                mix=tuple((k, float(v)) for k, v in flood.get("mix", {"get": 1.0}).items()),
            ),
            amplify_default=AmplifierKind(amplify.get("default", "none")),
            watch=tuple(
                WatchSpec(**{k: v for k, v in rule.items()}) for rule in amplify.get("watch", [])
            ),
            interpose=tuple(
                InterposeSpec(
                    functions=tuple(rule["functions"]),
                    ret=_unless_any(rule.get("ret", -1)),
                    errno_name=_unless_any(rule.get("errno", "EMFILE")),
                    delay_us=int(rule.get("delay_us", 50_000)),
                    when=rule.get("when", "after"),
                    thread=rule.get("thread", "any"),
                )
                for rule in amplify.get("interpose", [])
            ),
            gdb=GdbHoldSpec(**gdb) if gdb else None,
            variables=tuple(data.get("evidence", {}).get("variables", [])),
            set_aside=_set_aside(path, data.get("set_aside", [])),
            same_bug=_same_bug(path, data.get("same_bug", [])),
        )
        exercise = data.get("exercise")
        wanted = (
            Exercise(bool(exercise.get("emfile", False)), tuple(exercise.get("commands", [])))
            if isinstance(exercise, dict)
            else None
        )
        if "workload" in data:
            if "flood" in data:
                raise BadInput(
                    f"bad scenario file {path.name}: give [flood] or workload, not both "
                    "(a churn group in the workload is the flood)"
                )
            scenario = with_workload(scenario, _workload_of(path, data["workload"]), wanted)
        elif wanted is not None:
            scenario = replace(scenario, exercise=wanted)
    except (OSError, tomllib.TOMLDecodeError, KeyError, TypeError, ValueError) as exc:
        raise BadInput(f"bad scenario file {path.name}: {exc}") from None
    except BadInput as exc:
        if exc.message.startswith("bad scenario file"):
            raise
        raise BadInput(f"bad scenario file {path.name}: {exc.message}") from None
    _validate(scenario)
    return scenario


def scenarios_dir() -> Path:
    return recipes_dir() / "scenarios"


def list_scenarios() -> list[Scenario]:
    return [_load(path) for path in sorted(scenarios_dir().glob("*.toml"))]


def load_scenario(name: str) -> Scenario:
    """By name from recipes/scenarios/, or a path to a scenario file."""
    candidate = Path(name)
    if candidate.suffix == ".toml" and candidate.is_file():
        return _load(candidate)
    path = scenarios_dir() / f"{name}.toml"
    if not path.is_file():
        known = ", ".join(s.name for s in list_scenarios())
        raise BadInput(f"unknown scenario {name!r} (known: {known})")
    return _load(path)
