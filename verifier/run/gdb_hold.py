"""The gdb amplifier: hold one thread at a breakpoint for a few ms while the others run.

gdb runs in non-stop mode, so a breakpoint stops only the thread that hit it. A Python
breakpoint class sleeps in ``stop()`` (the hold) and returns False (resume). gdb is
driven with pexpect and detaches before any evidence is taken (one tracer at a time).
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
hits = 0
holds = 0

class Hold(gdb.Breakpoint):
    def stop(self):
        global hits, holds
        hits += 1
        if MAIN_ONLY and gdb.selected_thread().num != 1:
            return False
        if hits % EVERY:
            return False
        holds += 1
        time.sleep(HOLD_S)
        return False

Hold({location!r})
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
            out = self._command('python print("COUNTS", hits, holds)', timeout_s=5)
        except (pexpect.TIMEOUT, pexpect.EOF):
            return {}
        match = re.search(r"COUNTS (\d+) (\d+)", out)
        return {"hits": int(match[1]), "holds": int(match[2])} if match else {}

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
