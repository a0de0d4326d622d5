"""Turn a scenario's amplifier section into what a trial needs: preload rules or a gdb hold.

The preload library is always loaded (its crash reporter gives CRASH verdicts a
backtrace, and it keeps the parent-death signal across ``-u nobody``); rules are added
only for ``watch`` and ``interpose``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from verifier.amplify.counters import read_status, require_armed
from verifier.amplify.library import build_library, preload_env
from verifier.amplify.spec import InterposeRule, Rule, WatchRule, resolve_rules
from verifier.errors import BadInput
from verifier.scenario import GdbHoldSpec, Scenario


@dataclass(frozen=True)
class AmplifierPlan:
    kind: str  # watch | interpose | gdb | none
    rules: tuple[Rule, ...]
    gdb: GdbHoldSpec | None
    library: Path

    def describe(self) -> str:
        if self.kind == "watch":
            return "watch: " + "; ".join(
                f"{r.symbol} {r.cond} {r.value} -> sleep {r.delay_us} us on {r.thread} thread"
                for r in self.rules
                if isinstance(r, WatchRule)
            )
        if self.kind == "interpose":
            return "interpose: " + "; ".join(
                f"{'/'.join(r.functions)} ret={r.ret} errno={r.errno_name} -> sleep {r.delay_us} us"
                for r in self.rules
                if isinstance(r, InterposeRule)
            )
        if self.kind == "gdb" and self.gdb:
            hold = self.gdb
            return f"gdb: hold {hold.thread} thread at {hold.location} for {hold.hold_ms} ms"
        return "none"

    def env(self, binary: Path, status_file: Path) -> dict[str, str]:
        return preload_env(self.library, list(self.rules), status_file, target=binary)

    def triggers(self, status_file: Path) -> int:
        if not self.rules:
            return 0
        return sum(rule.triggers for rule in read_status(status_file).rules)

    def check_armed(self, status_file: Path) -> None:
        """After start-up: a watchpoint the kernel refused is an environment problem."""
        if self.rules:
            require_armed(read_status(status_file), list(self.rules))


def plan_amplifier(
    kind: str | None,
    scenario: Scenario,
    binary: Path,
    tools_dir: Path,
    delay_us: int | None = None,
    every: int = 1,
) -> AmplifierPlan:
    """Resolve ``--amplify`` (default: the scenario's) against ``binary``'s symbols."""
    chosen = kind or scenario.amplify_default
    if chosen not in scenario.amplifiers():
        raise BadInput(
            f"scenario {scenario.name} has no '{chosen}' amplifier "
            f"(it has: {', '.join(scenario.amplifiers())})"
        )
    rules: list[Rule] = []
    if chosen == "watch":
        rules = [
            WatchRule(
                symbol=w.symbol,
                length=w.length,
                cond=w.cond,
                value=w.value,
                delay_us=w.delay_us if delay_us is None else delay_us,
                every=every,
                thread=w.thread,
            )
            for w in scenario.watch
        ]
        rules = resolve_rules(rules, binary)
    elif chosen == "interpose":
        rules = [
            InterposeRule(
                functions=i.functions,
                ret=i.ret,
                errno_name=i.errno_name,
                delay_us=i.delay_us if delay_us is None else delay_us,
                every=every,
                when=i.when,
                thread=i.thread,
            )
            for i in scenario.interpose
        ]
    gdb = scenario.gdb if chosen == "gdb" else None
    if gdb is not None and delay_us is not None:
        gdb = replace(gdb, hold_ms=max(1, delay_us // 1000))
    if gdb is not None and every != 1:
        gdb = replace(gdb, every=every)
    return AmplifierPlan(chosen, tuple(rules), gdb, build_library(tools_dir))
