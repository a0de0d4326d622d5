"""Scenarios: data files in ``recipes/scenarios/*.toml`` describing one race to hunt.

A scenario says which server options and flood shape reach the buggy path, how to
amplify the race (a store watchpoint, a libc interposition, or a gdb hold), which hang
signature proves it, and which symbols a build must have for the scenario to apply.
Adding the next race is a new file here, not a change to the code.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from verifier.errors import BadInput
from verifier.resources import recipes_dir

DEFAULT_SCENARIO = "maxconns-deadlock"
AMPLIFIERS = ("watch", "interpose", "gdb", "none")


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


@dataclass(frozen=True)
class FloodShape:
    concurrency: int = 400
    mix: tuple[tuple[str, float], ...] = (("get", 0.8), ("set", 0.1), ("stats", 0.1))


@dataclass(frozen=True)
class Scenario:
    name: str
    path: Path
    summary: str
    targets: str
    requires_symbols: tuple[str, ...]
    expect: str  # the hang class this scenario's bug produces
    maxconns: int
    server_args: tuple[str, ...]
    flood: FloodShape
    amplify_default: str
    watch: tuple[WatchSpec, ...] = field(default_factory=tuple)
    interpose: tuple[InterposeSpec, ...] = field(default_factory=tuple)
    gdb: GdbHoldSpec | None = None
    variables: tuple[str, ...] = field(default_factory=tuple)  # read with gdb as evidence

    def amplifiers(self) -> tuple[str, ...]:
        """The amplifier kinds this scenario defines (always including none)."""
        kinds = [k for k, v in (("watch", self.watch), ("interpose", self.interpose)) if v]
        if self.gdb:
            kinds.append("gdb")
        return (*kinds, "none")


def _load(path: Path) -> Scenario:
    try:
        data: dict[str, Any] = tomllib.loads(path.read_text(encoding="utf-8"))
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
            expect=data["expect"],
            maxconns=int(server.get("maxconns", 64)),
            server_args=tuple(server.get("args", [])),
            flood=FloodShape(
                concurrency=int(flood.get("concurrency", 400)),
                mix=tuple((k, float(v)) for k, v in flood.get("mix", {"get": 1.0}).items()),
            ),
            amplify_default=amplify.get("default", "none"),
            watch=tuple(
                WatchSpec(**{k: v for k, v in rule.items()}) for rule in amplify.get("watch", [])
            ),
            interpose=tuple(
                InterposeSpec(
                    functions=tuple(rule["functions"]),
                    ret=rule.get("ret", -1),
                    errno_name=rule.get("errno", "EMFILE"),
                    delay_us=int(rule.get("delay_us", 50_000)),
                    when=rule.get("when", "after"),
                    thread=rule.get("thread", "any"),
                )
                for rule in amplify.get("interpose", [])
            ),
            gdb=GdbHoldSpec(**gdb) if gdb else None,
            variables=tuple(data.get("signature", {}).get("variables", [])),
        )
    except (OSError, tomllib.TOMLDecodeError, KeyError, TypeError, ValueError) as exc:
        raise BadInput(f"bad scenario file {path.name}: {exc}") from None
    if scenario.amplify_default not in scenario.amplifiers():
        raise BadInput(f"scenario {scenario.name}: default amplifier is not defined in the file")
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
