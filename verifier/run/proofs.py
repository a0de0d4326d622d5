"""Prove a hang from the live server at once, instead of timing it out.

The proofs, tried when a probe fails (``evidence/waitfor.py``, ``evidence/state_proof.py``,
``evidence/leaked_lock.py``, ``evidence/spin.py``): a confirmed cycle in the wait-for graph
of mutexes (one thread: ``self-deadlock``; more: ``deadlock``); the lost wake-up's state
(listener polling, flag false, not accepting, no client left) held across two snapshots;
a leaked lock (a mutex whose owner sleeps elsewhere and never ran while others waited,
``MIN_HOLD_S``); a spinning thread (on CPU, never blocked, counters frozen for 1 s). None
stops the process (the spin proof attaches gdb once, after it is established, to name the
function). The cycle and state cost a few ms (benchmarks/proof_latency.py: 4 ms median for
the graph on a hung memcached, against 660 ms for one gdb dump); the leaked lock its hold
bound, the spin its window. A hang none proves is confirmed by timing, as before.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from pathlib import Path

from verifier.errors import EnvironmentMissing, HarnessError
from verifier.evidence.classify import Diagnosis
from verifier.evidence.leaked_lock import MIN_HOLD_S, find_leaked_lock
from verifier.evidence.memory import ProcessGone
from verifier.evidence.spin import find_spin
from verifier.evidence.state_proof import prove_lost_wakeup
from verifier.evidence.symtab import SymbolTable
from verifier.evidence.waitfor import find_deadlock, warm_up
from verifier.probe.telnet import ProbeTimeout, TelnetSession
from verifier.vocabulary import HangClass, HangProof, Liveness


class Prover:
    """The proofs for one server process; symbols are loaded once, on the healthy server."""

    def __init__(
        self,
        pid: int,
        binary: Path,
        symbol_file: Path | None = None,
        *,
        min_hold_s: float = MIN_HOLD_S,
    ) -> None:
        self.pid = pid
        self.binary = binary
        self.symbol_file = symbol_file
        self.min_hold_s = min_hold_s  # a leaked lock's minimum hold (see hold_bound)
        self.symbols: SymbolTable | None = None
        self.disabled = ""  # why proofs cannot run here ("" = they can)

    def warm(self) -> None:
        """Load the symbol tables now (~0.3 s), so a proof later costs milliseconds. A
        process this user may not read disables the proofs (timing still works)."""
        try:
            self.symbols = SymbolTable.load(self.binary, self.symbol_file)
            warm_up(self.pid, self.symbols)
        except (EnvironmentMissing, HarnessError) as error:
            self.disabled = f"hang proofs off: {error.message}"

    def cycle(self) -> Diagnosis | None:
        """A confirmed lock cycle, as a diagnosis; None when there is none."""
        if self.disabled:
            return None
        try:
            graph = find_deadlock(self.pid, self.symbols)
        except ProcessGone:
            return None
        cycle = graph.cycle()
        if cycle is None or graph.hang_class is None:
            return None
        locks = sorted({edge.lock for edge in cycle})
        tids = graph.involved_tids
        details: dict[str, object] = {
            "locks": locks,
            "cycle": graph.describe_cycle(),
            "tids": list(tids),
            "wait_for_graph": graph.to_json(),
        }
        if graph.hang_class == HangClass.SELF_DEADLOCK:
            details["lock"] = locks[0]
        hung = self.pid if self.pid in tids else tids[0]
        return Diagnosis(  # what still answers is read with the evidence, not here (no wait)
            graph.hang_class,
            Liveness.UNKNOWN,
            graph.describe_cycle(),
            details,
            HangProof.CYCLE,
            hung_tid=hung,
        )

    def lost_wakeup(self, held: TelnetSession | None) -> Diagnosis | None:
        """The lost wake-up proven from the process state; None when it is not."""
        if self.disabled or held is None:
            return None
        try:
            proof = prove_lost_wakeup(
                self.pid, self.symbols, lambda: _stats(held), held.local_port()
            )
        except ProcessGone:
            return None
        if not proof.proven:
            return None
        return Diagnosis(  # proven: the held connection answered stats, so workers are alive
            HangClass.LOST_WAKEUP,
            Liveness.WORKERS_ALIVE,
            proof.reason,
            {
                "allow_new_conns": str(proof.allow_new_conns),
                "accepting_conns": proof.accepting_conns,
                "client_sockets": len(proof.client_sockets),
                "state_proof": proof.to_json(),
            },
            HangProof.STATE,
            hung_tid=self.pid,
        )

    def leaked_lock(self) -> Diagnosis | None:
        """A leaked mutex (owner asleep elsewhere, waiters behind it), as a diagnosis; None
        when there is none. Waits the hold bound (0.3 s) only when a candidate is seen."""
        if self.disabled:
            return None
        try:
            proof = find_leaked_lock(self.pid, self.symbols, hold_s=self.min_hold_s)
        except ProcessGone:
            return None
        if not proof.proven:
            return None
        leak = proof.leaks[0]
        return Diagnosis(
            HangClass.LEAKED_LOCK,
            Liveness.UNKNOWN,
            leak.describe(),
            {
                "lock": leak.lock,
                "owner": leak.owner,
                "waiters": [tid for tid, _ in leak.waiters],
                "condvar_waits": proof.condvar_waits,
                "leak_proof": proof.to_json(),
            },
            HangProof.OWNER,
            hung_tid=leak.owner,
        )

    def spin(self, held: TelnetSession | None) -> Diagnosis | None:
        """A thread spinning with the server's counters frozen (read on ``held``), as a
        diagnosis; None when there is none. Costs its 1 s window when a thread is on CPU."""
        if self.disabled or held is None:
            return None
        try:
            proof = find_spin(self.pid, lambda: _stats(held))
        except ProcessGone:
            return None
        if not proof.proven:
            return None
        first = proof.spinners[0]
        details: dict[str, object] = {
            "tids": [s.tid for s in proof.spinners],
            "spin_proof": proof.to_json(),
        }
        if first.function:
            details["function"] = first.function
        return Diagnosis(  # with the held connection's stats: something still answers
            HangClass.LIVELOCK,
            Liveness.FROZEN if proof.frozen else Liveness.UNKNOWN,
            proof.describe(),
            details,
            HangProof.SPIN,
            hung_tid=first.tid,
        )


def hold_bound(delays_us: Iterable[int]) -> float:
    """A leaked lock's minimum hold with these amplifier sleeps: an amplifier stretches a
    window by sleeping, maybe holding a lock others wait for, so a hold must outlast twice
    its longest sleep (the defaults, 20-50 ms, leave ``MIN_HOLD_S``)."""
    return max([MIN_HOLD_S, *(2 * delay / 1e6 for delay in delays_us)])


def _stats(held: TelnetSession | None) -> dict[str, str] | None:
    if held is None:
        return None
    try:
        return held.stats(0.5)
    except ProbeTimeout:
        return None


class CycleWatch:
    """Reads the wait-for graph every ``interval_s`` while the flood runs, in a thread: a
    deadlock is proven the moment it happens, not when a probe has timed out (the listener
    of the 1.4.6 race deadlocks within milliseconds of the first EMFILE; the probe sent
    just before waits its full second). A leaked lock is looked for too, every
    ``leak_every``-th read: a read with no candidate costs what the graph's does (24 ms
    median against 23 ms under a 400-client flood, benchmarks/leak_hold.py), and a healthy
    flood showed no candidate in ~6,000 reads. ``found`` is set with the proof."""

    def __init__(
        self, prover: Prover, interval_s: float = 0.1, enabled: bool = True, leak_every: int = 5
    ) -> None:
        self.prover = prover
        self.interval_s = interval_s
        self.leak_every = max(1, leak_every)
        self.enabled = enabled and not prover.disabled
        self.found = threading.Event()
        self.diagnosis: Diagnosis | None = None
        self.at_monotonic = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cycle-watch", daemon=True)

    def __enter__(self) -> CycleWatch:
        if self.enabled:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5.0)

    def _run(self) -> None:
        reads = 0
        while not self._stop.wait(self.interval_s):
            reads += 1
            diagnosis = self.prover.cycle()
            if diagnosis is None and reads % self.leak_every == 0:
                diagnosis = self.prover.leaked_lock()
            if diagnosis is not None:
                self.diagnosis, self.at_monotonic = diagnosis, time.monotonic()
                self.found.set()
                return
