"""One flood worker process: an event loop running the churn coroutines.

Each coroutine loops connect -> command(s) -> reply -> close over a Protocol (uvloop does the
socket work in C; a StreamReader/Writer client was ~3x slower). Timeouts are not one timer
per operation: every tick (TICK_S) a sweep cancels connects and ends reply waits that are
past their deadline. The same tick reads the parent's command word (run / pause / stop),
checks the bounds and copies the local counters into this process's shared row.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import os
import random
import resource
import signal
import struct
import sys
import traceback
from collections.abc import Callable, Coroutine, MutableSequence
from socket import SO_LINGER, SOL_SOCKET
from typing import Any

from verifier.stress.clients import GroupProcess
from verifier.stress.config import FloodConfig
from verifier.stress.stats import N_FIELDS, Field, ProcState
from verifier.stress.workload import OK, Request, build_schedule, classify_reply
from verifier.util.proc import die_with_parent

TICK_S = 0.02

# The parent's command word: (sequence number << 2) | command.
CMD_RUN, CMD_PAUSE, CMD_STOP = 0, 1, 2


def encode_command(command: int, seq: int) -> int:
    return seq << 2 | command


def decode_command(word: int) -> tuple[int, int]:
    return word & 3, word >> 2


# Counter slots as plain ints for the hot path.
_ACTIVE = int(Field.ACTIVE)
_CYCLES = int(Field.CYCLES)
_CONNECTS = int(Field.CONNECTS)
_OPS = int(Field.OPS)
_BYTES_OUT = int(Field.BYTES_OUT)
_BYTES_IN = int(Field.BYTES_IN)
_REFUSED = int(Field.ERR_REFUSED)
_CONNECT_TIMEOUT = int(Field.ERR_CONNECT_TIMEOUT)
_REPLY_TIMEOUT = int(Field.ERR_REPLY_TIMEOUT)
_RESET = int(Field.ERR_RESET)
_CLOSED = int(Field.ERR_CLOSED)
_LOCAL = int(Field.ERR_LOCAL)
_OTHER = int(Field.ERR_OTHER)

_LOCAL_ERRNOS = frozenset(
    {errno.EMFILE, errno.ENFILE, errno.EADDRNOTAVAIL, errno.ENOBUFS, errno.ENOMEM}
)
_LINGER_RST = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends RST

_IDLE, _CONNECT, _REPLY = 0, 1, 2  # what a coroutine is waiting for


def classify_error(exc: BaseException) -> int:
    """The error counter for a socket exception."""
    if isinstance(exc, ConnectionRefusedError):
        return _REFUSED
    if isinstance(exc, ConnectionResetError | ConnectionAbortedError | BrokenPipeError):
        return _RESET
    if isinstance(exc, TimeoutError):
        return _CONNECT_TIMEOUT
    if isinstance(exc, OSError) and exc.errno in _LOCAL_ERRNOS:
        return _LOCAL
    return _OTHER


def raise_nofile_limit() -> int:
    """Raise RLIMIT_NOFILE's soft limit to the hard one (capped by fs.nr_open); the new soft."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard
    if target == resource.RLIM_INFINITY:
        try:
            with open("/proc/sys/fs/nr_open") as f:
                target = int(f.read())
        except (OSError, ValueError):
            target = 1 << 20
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (OSError, ValueError):
            pass
    return soft


class _Conn(asyncio.Protocol):
    """One connection; ``waiter`` gets the outcome of the command in flight."""

    __slots__ = ("buf", "lost", "multi", "received", "waiter")

    def __init__(self) -> None:
        self.waiter: asyncio.Future[int] | None = None
        self.buf = b""
        self.multi = False
        self.lost = 0  # error counter once the connection is gone
        self.received = 0

    def __call__(self) -> _Conn:  # its own protocol factory
        return self

    def expect(self, waiter: asyncio.Future[int], multi_line: bool) -> None:
        """Wait for a reply; resolves at once if it (or an error line) is already here."""
        self.waiter, self.multi = waiter, multi_line
        if self.buf:
            self._check()
        if self.lost and not waiter.done():
            waiter.set_result(self.lost)

    def data_received(self, data: bytes) -> None:
        self.received += len(data)
        self.buf = self.buf + data if self.buf else data
        if self.waiter is not None:
            self._check()

    def _check(self) -> None:
        outcome = classify_reply(self.buf, self.multi)
        if outcome is not None and self.waiter is not None:
            self.buf = b""
            if not self.waiter.done():
                self.waiter.set_result(outcome)
            self.waiter = None

    def eof_received(self) -> None:
        self._lose(_CLOSED)

    def connection_lost(self, exc: Exception | None) -> None:
        self._lose(_CLOSED if exc is None else classify_error(exc))

    def _lose(self, outcome: int) -> None:
        if not self.lost:
            self.lost = outcome
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(outcome)


class _Slot:
    """A coroutine's deadline bookkeeping, read by the sweep."""

    __slots__ = ("deadline", "expired", "phase", "task", "waiter")

    def __init__(self) -> None:
        self.task: asyncio.Task[None] | None = None
        self.phase = _IDLE
        self.deadline = 0.0
        self.waiter: asyncio.Future[int] | None = None
        self.expired = False  # the sweep cancelled the connect


class Runner:
    """The event-loop side of one worker process."""

    def __init__(
        self,
        config: FloodConfig,
        index: int,
        row_writer: Callable[[list[int]], None],
        read_command: Callable[[], int],
        parent_pid: int,
    ) -> None:
        self.config = config
        self.write_row = row_writer
        self.read_command = read_command
        self.parent_pid = parent_pid
        coroutines, self.budget = config.share(index)
        self.slots = [_Slot() for _ in range(coroutines)]
        self.schedule: list[Request] = build_schedule(
            config.mix,
            key_space=config.key_space,
            value_size=config.value_size,
            rng=random.Random(config.seed + index),
        )
        self.c: MutableSequence[int] = [0] * N_FIELDS  # local counters, flushed each tick
        self.live = 0  # coroutines still looping
        self.paused = False
        self.draining = False
        self.unexpected = 0
        self.loop: asyncio.AbstractEventLoop | None = None
        self.groups: GroupProcess | None = None
        self.group_tasks: list[asyncio.Task[None]] = []
        if config.groups:
            self.groups = GroupProcess(
                config.groups,
                index,
                config.process_count,
                config.host,
                config.port,
                config.report_dir,
                config.seed,
                self._answered,
                self._spend,
                tls_port=config.tls_port,
                tls_ca=config.tls_ca,
            )

    def _answered(self, n: int) -> None:
        self.c[_OPS] += n

    def _spend(self) -> bool:
        """One unit of the cycle budget for a group client; False once spent or stopping."""
        if self.budget <= 0 or self.draining:
            return False
        self.budget -= 1  # not a connection cycle: CYCLES stays the churn's own count
        return True

    async def run(self) -> None:
        loop = self.loop = asyncio.get_running_loop()
        c = self.c
        c[Field.UVLOOP] = int(type(loop).__module__.startswith("uvloop"))
        c[Field.STATE] = ProcState.RUNNING
        self._start_workers()
        last = loop.time()
        active_s = 0.0
        try:
            while True:
                self.write_row(list(c))
                await asyncio.sleep(TICK_S)
                now = loop.time()
                if not self.paused:
                    active_s += now - last
                    c[Field.ACTIVE_MS] = int(active_s * 1000)
                last = now
                command, seq = decode_command(self.read_command())
                if command == CMD_STOP or os.getppid() != self.parent_pid:
                    break
                if command == CMD_PAUSE and not self.paused:
                    await self._drain()
                    self.paused = True
                    c[Field.STATE] = ProcState.PAUSED
                elif command == CMD_RUN and self.paused:
                    self.paused = False
                    c[Field.STATE] = ProcState.RUNNING
                    self._start_workers()
                c[Field.ACK] = seq
                if self.groups is not None:
                    self.groups.flush()
                if not self.paused:
                    if active_s >= self.config.duration_s or self.live == 0:
                        break
                    self._sweep(now)
        finally:
            await self._drain()
            if self.groups is not None:
                self.groups.close()
            c[Field.STATE] = ProcState.DONE
            self.write_row(list(c))

    def _start_workers(self) -> None:
        assert self.loop is not None
        n = len(self.schedule)
        for j, slot in enumerate(self.slots):
            slot.phase, slot.expired = _IDLE, False
            slot.task = self.loop.create_task(self._worker(slot, (j * 7919) % n))
            self.live += 1  # here, not in the coroutine: the tick may look before it runs
        if self.groups is not None and self.groups.clients:
            self.group_tasks.append(self.loop.create_task(self.groups.sweep()))
        for client in self.groups.clients if self.groups is not None else ():
            self.group_tasks.append(self.loop.create_task(self._group_client(client.run)))
            self.live += 1

    async def _group_client(self, body: Callable[[], Coroutine[Any, Any, None]]) -> None:
        try:
            await body()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._unexpected(exc)
        finally:
            self.live -= 1

    async def _drain(self) -> None:
        """Cancel every coroutine; each closes its socket on the way out."""
        tasks = [slot.task for slot in self.slots if slot.task is not None]
        tasks += self.group_tasks
        self.group_tasks = []
        self.draining = True
        try:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            self.draining = False
        for slot in self.slots:
            slot.task, slot.phase, slot.waiter = None, _IDLE, None

    def _sweep(self, now: float) -> None:
        """Time out connects (cancel) and reply waits (resolve) past their deadline."""
        for slot in self.slots:
            if slot.phase and slot.deadline <= now:
                if slot.phase == _CONNECT:
                    slot.expired = True
                    if slot.task is not None:
                        slot.task.cancel()
                elif slot.waiter is not None and not slot.waiter.done():
                    slot.waiter.set_result(_REPLY_TIMEOUT)
                slot.phase = _IDLE

    def _unexpected(self, exc: BaseException) -> None:
        self.unexpected += 1
        if self.unexpected <= 3:  # a bug, not load: say so, but keep flooding
            print("flood worker: unexpected error:", file=sys.stderr)
            traceback.print_exception(exc, file=sys.stderr)

    async def _worker(self, slot: _Slot, offset: int) -> None:
        loop = self.loop
        assert loop is not None
        c = self.c
        cfg = self.config
        host, port = cfg.host, cfg.port
        connect_timeout, reply_timeout = cfg.connect_timeout_s, cfg.reply_timeout_s
        ops_per_connection, linger = cfg.ops_per_connection, cfg.linger_rst
        schedule = self.schedule
        n, i = len(schedule), offset
        try:
            while self.budget > 0:
                self.budget -= 1
                conn = _Conn()
                transport: asyncio.BaseTransport | None = None
                outcome = 0
                c[_ACTIVE] += 1
                try:
                    slot.deadline = loop.time() + connect_timeout
                    slot.phase = _CONNECT
                    try:
                        transport, _ = await loop.create_connection(conn, host, port)
                    except asyncio.CancelledError:
                        if self.draining or not slot.expired:
                            raise
                        slot.expired = False
                        asyncio.current_task().uncancel()  # type: ignore[union-attr]
                        outcome = _CONNECT_TIMEOUT
                    except OSError as exc:
                        outcome = classify_error(exc)
                    finally:
                        slot.phase = _IDLE
                    if transport is not None:
                        c[_CONNECTS] += 1
                        if linger:
                            sock = transport.get_extra_info("socket")
                            if sock is not None:
                                with contextlib.suppress(OSError):
                                    sock.setsockopt(SOL_SOCKET, SO_LINGER, _LINGER_RST)
                        for _ in range(ops_per_connection):
                            request, multi_line = schedule[i]
                            i = i + 1 if i + 1 < n else 0
                            waiter: asyncio.Future[int] = loop.create_future()
                            conn.expect(waiter, multi_line)
                            if not waiter.done():
                                transport.write(request)  # type: ignore[attr-defined]
                                c[_BYTES_OUT] += len(request)
                                slot.waiter = waiter
                                slot.deadline = loop.time() + reply_timeout
                                slot.phase = _REPLY
                                try:
                                    result = await waiter
                                finally:
                                    slot.phase = _IDLE
                                    slot.waiter = None
                            else:
                                result = waiter.result()
                            if result != OK:
                                outcome = result
                                break
                            c[_OPS] += 1
                except asyncio.CancelledError:
                    self.budget += 1  # drained mid-cycle: not counted, not spent
                    raise
                except Exception as exc:
                    self._unexpected(exc)
                    outcome = _OTHER
                finally:
                    c[_ACTIVE] -= 1
                    if transport is not None:
                        c[_BYTES_IN] += conn.received
                        # abort(): nothing is left to flush, and it is cheaper than close().
                        # Without SO_LINGER 0 the kernel still ends with a FIN.
                        transport.abort()  # type: ignore[attr-defined]
                c[_CYCLES] += 1
                if outcome:
                    c[outcome] += 1
        finally:
            self.live -= 1


def _loop_factory(use_uvloop: bool) -> Callable[[], asyncio.AbstractEventLoop] | None:
    if use_uvloop:
        try:
            import uvloop
        except ImportError:
            return None
        return uvloop.new_event_loop
    return None


def process_main(
    config: FloodConfig,
    index: int,
    counters: ctypes.Array[ctypes.c_uint64],
    control: ctypes.c_uint64,
    parent_pid: int,
) -> None:
    """Entry point of worker process ``index`` (``counters``: shared rows; ``control``: the
    parent's command word, a ``RawValue``)."""
    die_with_parent()  # SIGKILL when the parent dies, even by SIGKILL
    if os.getppid() != parent_pid:  # it died before prctl
        os._exit(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the parent, which stops us
    raise_nofile_limit()
    base = index * N_FIELDS

    def write_row(values: list[int]) -> None:
        counters[base : base + N_FIELDS] = values

    def read_command() -> int:
        return int(control.value)

    try:
        runner = Runner(config, index, write_row, read_command, parent_pid)
        with asyncio.Runner(loop_factory=_loop_factory(config.use_uvloop)) as loop_runner:
            loop_runner.run(runner.run())
    except BaseException:
        counters[base + Field.STATE] = ProcState.FAILED
        raise
