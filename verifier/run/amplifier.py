"""Turn a scenario's amplifier section into what a trial needs: preload rules or a gdb hold.

The preload library is always loaded (its crash reporter gives CRASH verdicts a
backtrace, and it keeps the parent-death signal across ``-u nobody``); rules are added
only for ``watch`` and ``interpose``. A plan is asked for each trial's amplifier
(``for_trial``) and told each trial's result (``observe``): a fixed plan answers the same
every time; a learning one (``auto``) changes its choice.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from verifier.amplify.auto.sweep import Sweep
from verifier.amplify.counters import mute_rules, pause_stretches, read_status, require_armed
from verifier.amplify.library import build_library, preload_env
from verifier.amplify.spec import InterposeRule, Rule, WatchRule, resolve_rules
from verifier.errors import BadInput, VerifierError
from verifier.limits import CONFIRM_WINDOW_S, MAX_AMPLIFIER_DELAY_US
from verifier.scenario import GdbHoldSpec, Scenario
from verifier.vocabulary import AmplifierKind

if TYPE_CHECKING:
    from verifier.records.trial import TrialResult


@dataclass(frozen=True)
class AmplifierPlan:
    kind: AmplifierKind
    rules: tuple[Rule, ...]
    gdb: GdbHoldSpec | None
    library: Path
    sweep: Sweep | None = None  # auto: rules start muted, unmuted one hypothesis at a time

    def for_trial(self, index: int) -> AmplifierPlan:
        """The amplifier of trial ``index`` (a fixed plan: itself)."""
        return self

    def observe(self, trial: TrialResult) -> None:
        """Learn from a finished trial (a fixed plan learns nothing)."""

    def pass_note(self) -> str:
        """What a PASS should add about the amplifier (coverage, for a learning plan)."""
        return ""

    def describe(self) -> str:
        if self.kind == AmplifierKind.WATCH:
            return "watch: " + "; ".join(
                f"{r.symbol} {r.cond} {r.value} -> sleep {r.delay_us} us on {r.thread} thread"
                for r in self.rules
                if isinstance(r, WatchRule)
            )
        if self.kind == AmplifierKind.INTERPOSE:
            return "interpose: " + "; ".join(
                f"{'/'.join(r.functions)} ret={r.ret} errno={r.errno_name} -> sleep {r.delay_us} us"
                for r in self.rules
                if isinstance(r, InterposeRule)
            )
        if self.kind == AmplifierKind.AUTO:
            return f"auto: {len(self.rules)} stretch rule(s) this trial"
        if self.kind == AmplifierKind.GDB and self.gdb:
            hold = self.gdb
            where = f"{hold.hold_at} after {hold.location}" if hold.hold_at else hold.location
            unless = f" unless it holds {hold.unless_held}" if hold.unless_held else ""
            return f"gdb: hold {hold.thread} thread at {where} for {hold.hold_ms} ms{unless}"
        return "none"

    def env(self, binary: Path, status_file: Path) -> dict[str, str]:
        muted = self.sweep.all_muted() if self.sweep is not None else ()
        return preload_env(self.library, list(self.rules), status_file, target=binary, muted=muted)

    def tick(self, status_file: Path, now_s: float, cycles: int) -> None:
        """Once a probe interval while flooding: a sweep may switch what is stretched
        (through the status file, in the live server)."""
        if self.sweep is None:
            return
        with contextlib.suppress(VerifierError):
            triggers = [r.triggers for r in read_status(status_file).rules]
            mutes = self.sweep.tick(now_s, cycles, triggers)
            if mutes is not None:
                mute_rules(status_file, mutes)

    def triggers(self, status_file: Path) -> int:
        if not self.rules:
            return 0
        return sum(rule.triggers for rule in read_status(status_file).rules)

    def pause(self, status_file: Path, paused: bool) -> None:
        """Stop (or resume) the stretches while a failed probe is judged."""
        if self.rules:
            pause_stretches(status_file, paused)

    def check_armed(self, status_file: Path) -> None:
        """After start-up: a watchpoint the kernel refused is an environment problem."""
        if self.rules:
            require_armed(read_status(status_file), list(self.rules))


def plan_amplifier(
    kind: AmplifierKind | None,
    scenario: Scenario,
    binary: Path,
    tools_dir: Path,
    delay_us: int | None = None,
    every: int = 1,
) -> AmplifierPlan:
    """Resolve ``--amplify`` (default: the scenario's) against ``binary``'s symbols."""
    chosen = AmplifierKind(kind or scenario.amplify_default)
    if chosen not in scenario.amplifiers():
        raise BadInput(
            f"scenario {scenario.name} has no '{chosen}' amplifier "
            f"(it has: {', '.join(scenario.amplifiers())})"
        )
    if delay_us is not None and delay_us > MAX_AMPLIFIER_DELAY_US:
        raise BadInput(
            f"--delay-us {delay_us} is refused: it must stay below the "
            f"{CONFIRM_WINDOW_S:.0f} s hang-confirmation window"
        )
    if chosen == AmplifierKind.AUTO:
        raise BadInput("--amplify auto is planned by the verify core (run/auto_plan.py)")
    rules: list[Rule] = []
    if chosen == AmplifierKind.WATCH:
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
    elif chosen == AmplifierKind.INTERPOSE:
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
    gdb = scenario.gdb if chosen == AmplifierKind.GDB else None
    if gdb is not None and delay_us is not None:
        gdb = replace(gdb, hold_ms=max(1, delay_us // 1000))
    if gdb is not None and every != 1:
        gdb = replace(gdb, every=every)
    return AmplifierPlan(chosen, tuple(rules), gdb, build_library(tools_dir))
