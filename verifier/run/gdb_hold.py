"""The gdb amplifier: hold one thread at a breakpoint for a few ms while the others run.

gdb runs in non-stop mode, so a breakpoint stops only the thread that hit it. A Python
breakpoint class sleeps in ``stop()`` (the hold) and returns False (resume). gdb is
driven with pexpect and detaches before any evidence is taken (one tracer at a time).

``unless_held`` names a mutex: a thread that owns it (glibc records the owner's LWP in
``__data.__owner``) is not held, so a function called both with and without a lock is held
only on the unlocked call (the racy caller). ``hold_at`` moves the hold to a second
location, reached next by a thread picked at the first: a racy caller is found at a rarely
hit call site and held deep inside a function every thread calls (a line between two
writes), the second breakpoint armed only while a picked thread is on its way.
"""

from __future__ import annotations

import re
from pathlib import Path

import pexpect

from verifier.errors import EnvironmentMissing, HarnessError
from verifier.scenario import GdbHoldSpec
from verifier.util import pidlog
from verifier.util.proc import require_tool

_PROMPT = r"\(gdb\) "
_SCRIPT = """
import gdb, time
HOLD_S = {hold_s!r}
MAIN_ONLY = {main_only!r}
EVERY = {every!r}
UNLESS_HELD = {unless_held!r}
HOLD_AT = {hold_at!r}
ARMED_S = 0.1  # a thread picked at the location must reach HOLD_AT within this
hits = 0
holds = 0
owned = 0  # holds skipped: the thread held UNLESS_HELD
unknown = 0  # holds skipped: UNLESS_HELD could not be read
armed = {{}}  # gdb thread number -> when it passed the location (HOLD_AT only)

def owns(name):
    owner = int(gdb.parse_and_eval("((pthread_mutex_t *) &%s)->__data.__owner" % name))
    return owner == gdb.selected_thread().ptid[1]

def hold():
    global holds, owned, unknown
    if UNLESS_HELD:
        try:
            if owns(UNLESS_HELD):
                owned += 1
                return
        except (gdb.error, RuntimeError):
            unknown += 1
            return
    holds += 1
    time.sleep(HOLD_S)

class Hold(gdb.Breakpoint):
    def stop(self):
        global hits
        hits += 1
        if MAIN_ONLY and gdb.selected_thread().num != 1:
            return False
        if hits % EVERY:
            return False
        if HOLD_AT:
            armed[gdb.selected_thread().num] = time.monotonic()
            then.enabled = True
        else:
            hold()
        return False

def disarm():
    if not armed:
        then.enabled = False

class Then(gdb.Breakpoint):
    def stop(self):
        num = gdb.selected_thread().num
        now = time.monotonic()
        for other, since in list(armed.items()):
            if other != num and now - since > ARMED_S:
                del armed[other]
        if armed.pop(num, None) is not None:
            hold()
        if not armed:
            gdb.post_event(disarm)
        return False

Hold({location!r})
if HOLD_AT:
    then = Then(HOLD_AT)
    then.enabled = False
"""


class GdbHolder:
    def __init__(self, pid: int, spec: GdbHoldSpec, work_dir: Path) -> None:
        self.pid = pid
        self.spec = spec
        self.work_dir = work_dir
        self.child: pexpect.spawn | None = None
        self.log_path = work_dir / "gdb-amplifier.log"

    def start(self, timeout_s: float = 30.0) -> None:
        require_tool("gdb", "apt-get install gdb")
        script = self.work_dir / "gdb-amplifier.py"
        script.write_text(
            _SCRIPT.format(
                hold_s=self.spec.hold_ms / 1000.0,
                main_only=self.spec.thread == "main",
                location=self.spec.location,
                every=self.spec.every,
                unless_held=self.spec.unless_held,
                hold_at=self.spec.hold_at,
            )
        )
        log = open(self.log_path, "w", encoding="utf-8")  # noqa: SIM115 - closed in stop()
        self.child = pexpect.spawn(
            "gdb",
            [
                "-nx",
                "-q",
                "-ex",
                "set non-stop on",
                "-ex",
                "set pagination off",
                "-ex",
                "set confirm off",
                "-ex",
                f"attach {self.pid}",
                "-ex",
                f"source {script}",
            ],
            encoding="utf-8",
            codec_errors="replace",
            timeout=timeout_s,
        )
        self.child.logfile_read = log
        pidlog.record(self.child.pid, "gdb amplifier")
        try:
            self.child.expect(_PROMPT)
            self._command("continue -a &")
        except (pexpect.TIMEOUT, pexpect.EOF):
            self.stop()
            raise HarnessError(f"gdb amplifier did not attach; see {self.log_path}") from None
        text = self.log_path.read_text(errors="replace")
        if "ptrace: Operation not permitted" in text:
            self.stop()
            raise EnvironmentMissing(
                "gdb may not attach: ptrace not permitted (kernel.yama.ptrace_scope; run as root)"
            )

    def _command(self, line: str, timeout_s: float = 30.0) -> str:
        assert self.child is not None
        self.child.sendline(line)
        self.child.expect(_PROMPT, timeout=timeout_s)
        return str(self.child.before)

    def counts(self) -> dict[str, int]:
        """Breakpoint hits and holds so far."""
        if self.child is None or not self.child.isalive():
            return {}
        try:
            out = self._command('python print("COUNTS", hits, holds, owned, unknown)', timeout_s=5)
        except (pexpect.TIMEOUT, pexpect.EOF):
            return {}
        match = re.search(r"COUNTS (\d+) (\d+) (\d+) (\d+)", out)
        if not match:
            return {}
        keys = ("hits", "holds", "owned", "unknown")
        return {key: int(value) for key, value in zip(keys, match.groups(), strict=True)}

    def stop(self) -> dict[str, int]:
        """Detach (the server keeps running, untraced) and quit; returns the final counts."""
        if self.child is None:
            return {}
        counts = self.counts()
        try:
            if self.child.isalive():
                self._command("interrupt -a", timeout_s=5)
                self._command("detach", timeout_s=10)
                self.child.sendline("quit")
                self.child.expect(pexpect.EOF, timeout=5)
        except (pexpect.TIMEOUT, pexpect.EOF):
            pass
        finally:
            self.child.close(force=True)
            if self.child.logfile_read:
                self.child.logfile_read.close()
            self.child = None
        return counts
