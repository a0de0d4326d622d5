"""The workload's client groups inside one flood process: coroutines that speak ascii,
meta or binary through the codecs, in long-lived or churned connections, pipelined,
paced, slow-reading (or leaving the replies unread), or holding ``watch`` streams, and
that record what they saw.

Each client walks a pre-drawn schedule (``shapes.schedule``), sends ``pipeline`` requests,
then reads their replies in order with the codec's incremental parser. A reply that does
not come within the reply timeout, or a connection that dies, makes every request still
in flight indeterminate (the checker's "may or may not have happened") and drops the
connection; a long-lived connection whose replies timed out is kept open instead, idle,
as a stall (``stalls.py``) the harness reads the server's side of, and the client goes on
on a new connection. Groups with ``tls = true`` connect to the server's TLS port, trusting the
harness's throwaway CA (the context is built here, in the flood process, from its path).
Checked groups write unique values ("<client>:<seq>") so a read names the
write it saw, and append an ``Op`` per request to the process's history file.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import ssl
import time
from collections.abc import Callable
from pathlib import Path

from verifier.check.history import Op, OpKind, Result, write_history
from verifier.stress.protocol.base import Codec, Command, ProtocolError, Reply, Status
from verifier.stress.protocol.codecs import codec_for
from verifier.stress.shapes import Pick, extra_keys, schedule
from verifier.stress.stalls import MAX_KEPT, Stall, stall_path, write_stalls
from verifier.stress.tally import (
    ABANDONED,
    CLOSED,
    CONNECT_FAILED,
    TIMEOUT,
    Tally,
    tally_path,
    write_tallies,
)
from verifier.stress.workload_file import Connection, Group, GroupKind

GROUP_REPLY_TIMEOUT_S = 5.0  # longer than the churn's 1 s: metadump and flush_all are slow
CONNECT_TIMEOUT_S = 1.0
TLS_CONNECT_TIMEOUT_S = 3.0  # the handshake too, on a loaded machine
RECONNECT_BACKOFF_S = 0.05  # a refused or full server is retried this much later
HISTORY_FLUSH_S = 1.0
SWEEP_S = 0.05  # reply timeouts are seen this late at most

# command -> (OpKind, writes a value)
_OPS: dict[str, OpKind] = {
    "get": OpKind.GET, "bin_get": OpKind.GET, "bin_getk": OpKind.GET, "mg": OpKind.GET,
    "gets": OpKind.GETS,
    "set": OpKind.SET, "bin_set": OpKind.SET, "ms": OpKind.SET,
    "add": OpKind.ADD, "bin_add": OpKind.ADD,
    "replace": OpKind.REPLACE, "bin_replace": OpKind.REPLACE,
    "append": OpKind.APPEND, "prepend": OpKind.PREPEND, "cas": OpKind.CAS,
    "incr": OpKind.INCR, "ma": OpKind.INCR, "bin_incr": OpKind.INCR,
    "decr": OpKind.DECR, "bin_decr": OpKind.DECR,
    "delete": OpKind.DELETE, "bin_delete": OpKind.DELETE, "md": OpKind.DELETE,
    "touch": OpKind.TOUCH, "bin_touch": OpKind.TOUCH,
}  # fmt: skip
_WRITES = {OpKind.SET, OpKind.ADD, OpKind.REPLACE, OpKind.APPEND, OpKind.PREPEND, OpKind.CAS}
_RESULTS = {
    Status.HIT: Result.HIT, Status.MISS: Result.MISS, Status.STORED: Result.STORED,
    Status.NOT_STORED: Result.NOT_STORED, Status.EXISTS: Result.EXISTS,
    Status.NOT_FOUND: Result.NOT_FOUND, Status.DELETED: Result.DELETED,
    Status.TOUCHED: Result.TOUCHED, Status.NUMBER: Result.NUMBER,
}  # fmt: skip
_MULTI = {"mget", "mgets", "bin_getq", "bin_getkq", "bin_setq"}


class _Gone(Exception):
    """The connection died or timed out: what is in flight is indeterminate."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


class _Stream(asyncio.Protocol):
    """A connection's receive buffer; ``wait`` blocks until more bytes (or the end)."""

    def __init__(self) -> None:
        self.buf = b""
        self.pos = 0
        self.lost = False
        self.received = 0
        self.transport: asyncio.Transport | None = None
        self._waiter: asyncio.Future[None] | None = None
        self.deadline = 0.0
        self.timed_out = False
        self.kept: Stall | None = None  # a stalled connection kept open: bytes only counted

    def __call__(self) -> _Stream:
        return self

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.kept is not None:  # a late reply: the stall was not the server's
            self.kept.late_bytes += len(data)
            return
        self.received += len(data)
        self.buf = self.buf[self.pos :] + data if self.pos else self.buf + data
        self.pos = 0
        self._wake()

    def eof_received(self) -> None:
        self.lost = True
        self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def wait(self, loop: asyncio.AbstractEventLoop, deadline: float) -> None:
        """Until more bytes, the end, or ``deadline`` (loop time). No timer per wait: the
        owner's sweep wakes waiters past their deadline (a timer per reply cost about a
        tenth of a request's CPU here)."""
        self.deadline = deadline
        self._waiter = loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None
        if self.timed_out:
            self.timed_out = False
            raise _Gone(TIMEOUT)

    def sweep(self, now: float) -> None:
        if self._waiter is not None and not self._waiter.done() and self.deadline <= now:
            self.timed_out = True
            self._waiter.set_result(None)

    async def reply(
        self, loop: asyncio.AbstractEventLoop, codec: Codec, command: Command, deadline: float
    ) -> Reply:
        while True:
            reply, end = codec.parse(command, self.buf, self.pos)
            if reply is not None:
                self.pos = end
                return reply
            if self.lost:
                raise _Gone(CLOSED)
            if deadline <= loop.time():
                raise _Gone(TIMEOUT)
            await self.wait(loop, deadline)


class GroupProcess:
    """This process's share of every group: the clients, their tallies and history."""

    def __init__(
        self,
        groups: tuple[Group, ...],
        index: int,
        processes: int,
        host: str,
        port: int,
        report_dir: str,
        seed: int,
        count: Callable[[int], None],
        spend: Callable[[], bool],
        *,
        tls_port: int = 0,
        tls_ca: str = "",
    ) -> None:
        self.host, self.port = host, port
        self.tls_port = tls_port
        self.ssl: ssl.SSLContext | None = None
        if any(g.tls for g in groups):
            if not (tls_port and tls_ca):
                raise ValueError("groups with tls = true need the server's TLS port and CA")
            # verified like any TLS client: the throwaway CA, the certificate's 127.0.0.1
            self.ssl = ssl.create_default_context(cafile=tls_ca)
        self.index = index
        self.count = count  # one more answered request (the shared OPS counter)
        self.spend = spend  # take one unit of the process's budget; False when spent
        self.report_dir = Path(report_dir) if report_dir else None
        self.tallies: dict[tuple[str, str, str], Tally] = {}
        self.history: list[Op] = []
        self.history_ops = 0
        self.last_flush = time.monotonic()
        self.clients: list[_Client] = []
        self.stalls: list[Stall] = []
        self.kept: list[asyncio.Transport] = []  # their connections, open until the end
        self.sweeper: asyncio.Task[None] | None = None
        for gi, group in enumerate(groups):
            mine = group.clients // processes + (1 if index < group.clients % processes else 0)
            codec = codec_for(str(group.protocol))
            for ci in range(mine):
                rng = random.Random(seed * 7919 + index * 104_729 + gi * 1009 + ci)
                name = f"p{index}.{group.name}.{ci}"
                self.clients.append(_Client(self, group, codec, name, rng))

    async def sweep(self) -> None:
        """Wake every wait past its deadline, every SWEEP_S (the churn flood's way too)."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(SWEEP_S)
            now = loop.time()
            for client in self.clients:
                if client.stream is not None:
                    client.stream.sweep(now)

    def tally(self, group: Group, command: str) -> Tally:
        key = (group.name, command, str(group.protocol))
        found = self.tallies.get(key)
        if found is None:
            found = self.tallies[key] = Tally()
        return found

    def record(self, op: Op) -> None:
        self.history.append(op)

    def flush(self, force: bool = False) -> None:
        """History and tallies to their files, every second and at the end: a process
        killed while it stops (SIGTERM after the grace) still leaves what it saw."""
        now = time.monotonic()
        if self.report_dir is None or not (force or now - self.last_flush >= HISTORY_FLUSH_S):
            return
        self.last_flush = now
        if self.history:
            path = self.report_dir / f"history-{self.index}.jsonl"
            self.history_ops += write_history(path, self.history)
            self.history.clear()
        write_tallies(tally_path(self.report_dir, self.index), self.tallies, self.history_ops)
        if self.stalls:
            write_stalls(stall_path(self.report_dir, self.index), self.stalls)

    def keep(self, stream: _Stream, stall: Stall) -> None:
        """Keep a stalled connection open for the harness (at most MAX_KEPT; beyond that,
        or with no report folder, it is dropped as any other: ``stream.kept`` stays None)."""
        if len(self.kept) >= MAX_KEPT or stream.transport is None or self.report_dir is None:
            return
        stream.kept = stall
        self.stalls.append(stall)
        self.kept.append(stream.transport)
        self.flush(force=True)  # the harness may look before the next tick

    def close(self) -> None:
        self.flush(force=True)
        for transport in self.kept:
            transport.abort()
        self.kept.clear()


class _Client:
    def __init__(
        self, owner: GroupProcess, group: Group, codec: Codec, name: str, rng: random.Random
    ) -> None:
        self.owner, self.group, self.codec, self.name, self.rng = owner, group, codec, name, rng
        self.picks: list[Pick] = schedule(group, rng)
        self.i = rng.randrange(len(self.picks))
        self.seq = 0
        self.tokens: dict[bytes, int] = {}  # cas tokens from this client's own gets
        share = group.rate / group.clients if group.rate else 0.0
        self.interval = 1.0 / share if share else 0.0
        self.next_at = 0.0
        self.values: dict[int, bytes] = {}
        self.stream: _Stream | None = None  # the open connection (the sweep looks at it)
        self.tallies: dict[str, Tally] = {}  # this client's view of the owner's tallies

    # -- building requests -------------------------------------------------------------
    def _value(self, pick: Pick) -> bytes:
        numbers = self.group.values.numbers
        if numbers:
            return str(numbers[pick.size]).encode()
        if self.group.check:
            self.seq += 1
            unique = f"{self.name}:{self.seq}".encode()
            return unique + PAD * (pick.size - len(unique))  # the workload's size, as sent
        found = self.values.get(pick.size)
        if found is None:
            found = self.values[pick.size] = b"x" * pick.size
        return found

    def _command(self, pick: Pick) -> Command:
        group, name = self.group, pick.command
        key = group.keys.name(pick.key).encode()
        keys: tuple[bytes, ...] = ()
        if name in _MULTI:
            keys = tuple(group.keys.name(k).encode() for k in extra_keys(group, self.rng, pick.key))
        kind = _OPS.get(name)
        value = self._value(pick) if kind in _WRITES or name in ("bin_setq",) else b""
        initial = None
        if name in ("bin_incr", "bin_decr"):
            numbers = group.values.numbers
            initial = numbers[pick.size] if numbers else 0
        return Command(
            name=name,
            key=key,
            keys=keys,
            value=value,
            exptime=pick.ttl,
            initial=initial,
            cas=self.tokens.get(key, 1) if name == "cas" else 0,
            arg=pick.arg,
        )

    def _next(self) -> Command:
        pick = self.picks[self.i]
        self.i = self.i + 1 if self.i + 1 < len(self.picks) else 0
        return self._command(pick)

    # -- the loop ----------------------------------------------------------------------
    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        # The first batch goes at once, then one request per interval: a crawl at
        # "rate = 0.05" comes at 0, 20, 40 s, not first at 20 s (lru-crawler-idle needs it
        # early). _pace charges a batch before it is sent, so start one batch back.
        self.next_at = loop.time() - self.group.pipeline * self.interval
        while self.owner.spend():
            if self.group.kind == GroupKind.WATCH:
                await self._watch_once(loop)
                continue
            stream = await self._connect(loop)
            if stream is None:
                continue
            try:
                while True:
                    batch = [self._next() for _ in range(self.group.pipeline)]
                    await self._pace(loop, len(batch))
                    alive = await self._exchange(loop, stream, batch)
                    if not alive or self.group.connection == Connection.CHURN:
                        break
                    if not self.owner.spend():
                        return
            finally:
                if stream.transport is not None and stream.kept is None:
                    stream.transport.abort()

    async def _pace(self, loop: asyncio.AbstractEventLoop, n: int) -> None:
        if not self.interval:
            return
        now = loop.time()
        self.next_at = max(self.next_at + n * self.interval, now - 1.0)
        if self.next_at > now:
            await asyncio.sleep(self.next_at - now)

    async def _connect(self, loop: asyncio.AbstractEventLoop) -> _Stream | None:
        stream = _Stream()
        owner = self.owner
        try:
            if self.group.tls:
                async with asyncio.timeout(TLS_CONNECT_TIMEOUT_S):
                    host = owner.host
                    await loop.create_connection(
                        stream, host, owner.tls_port, ssl=owner.ssl, server_hostname=host
                    )
            else:
                async with asyncio.timeout(CONNECT_TIMEOUT_S):
                    await loop.create_connection(stream, owner.host, owner.port)
        except (OSError, TimeoutError):
            self.owner.tally(self.group, "connect").failed(CONNECT_FAILED)
            await asyncio.sleep(RECONNECT_BACKOFF_S * (1 + self.rng.random()))
            return None
        self.stream = stream
        return stream

    async def _exchange(
        self, loop: asyncio.AbstractEventLoop, stream: _Stream, batch: list[Command]
    ) -> bool:
        """Send the batch, read its replies in order; False when the connection is gone."""
        assert stream.transport is not None
        called = time.monotonic_ns()
        sent = b"".join(self.codec.encode(c) for c in batch)
        try:
            stream.transport.write(sent)
        except RuntimeError:  # uvloop: the transport closed under us (the server died)
            for command in batch:  # never sent: failed, and nothing for the history
                self._tally(command.name).failed(CLOSED)
            return False
        answered = 0
        try:
            delay = self.group.read_delay_ms / 1000.0
            if delay:  # a slow reader: the server's writes pile up in its buffers
                stream.transport.pause_reading()
                await asyncio.sleep(delay)
                if self.group.abandon:  # gone unread: the server drops every reply at once
                    for lost in batch:
                        self._tally(lost.name).failed(ABANDONED)
                        self._record(lost, None, called, None)
                    return False
                stream.transport.resume_reading()
            deadline = loop.time() + GROUP_REPLY_TIMEOUT_S
            tallies, check = self.tallies, self.group.check
            for command in batch:
                try:
                    reply = await stream.reply(loop, self.codec, command, deadline)
                except (_Gone, ProtocolError) as error:
                    why = error.why if isinstance(error, _Gone) else "protocol-error"
                    for lost in batch[answered:]:
                        self._tally(lost.name).failed(why)
                        self._record(lost, None, called, None)
                    self.owner.count(answered)
                    if why == TIMEOUT and self.group.connection == Connection.LONG:
                        self._keep(stream, len(batch), answered, len(sent), called)
                    return False
                returned = time.monotonic_ns()
                tally = tallies.get(command.name) or self._tally(command.name)
                tally.answered(reply.status, (returned - called) // 1000)
                if check or reply.cas is not None:
                    self._record(command, reply, called, returned)
                answered += 1
        except asyncio.CancelledError:
            # The flood paused or stopped (the harness pauses it to judge a failed probe):
            # what was sent may still be done by the server, so it goes into the history as
            # indeterminate. Dropped instead, a write nobody recorded made later reads
            # unexplainable: WRONG RESULTs on upstream 1.5.19, 1.6.24 and 1.6.45 under
            # --amplify auto (a read of 'p0.registers.2:594', whose set was in flight at a
            # pause and missing from the history).
            for lost in batch[answered:]:
                self._record(lost, None, called, None)
            raise
        self.owner.count(len(batch))
        return True

    def _keep(self, stream: _Stream, requests: int, answered: int, size: int, called: int) -> None:
        """A timed-out long-lived connection: kept open as a stall if the owner has room."""
        transport = stream.transport
        assert transport is not None
        name = transport.get_extra_info("sockname")
        peer = transport.get_extra_info("peername")
        if not name or not peer:
            return
        stall = Stall(
            group=self.group.name,
            client=self.name,
            local_port=int(name[1]),
            server_port=int(peer[1]),
            tls=self.group.tls,
            requests=requests,
            answered=answered,
            bytes_sent=size,
            unsent=transport.get_write_buffer_size(),
            waited_s=round((time.monotonic_ns() - called) / 1e9, 3),
            at=time.time(),
        )
        self.owner.keep(stream, stall)

    def _tally(self, command: str) -> Tally:
        found = self.tallies[command] = self.owner.tally(self.group, command)
        return found

    def _record(
        self, command: Command, reply: Reply | None, called: int, returned: int | None
    ) -> None:
        if reply is not None and reply.cas is not None and reply.status == Status.HIT:
            self.tokens[command.key] = reply.cas
        if not self.group.check:
            return
        op = history_op(self.name, command, reply, called, returned, str(self.group.protocol))
        if op is not None:
            self.owner.record(op)

    async def _watch_once(self, loop: asyncio.AbstractEventLoop) -> None:
        """Open a watcher, read its stream for a while, drop it."""
        stream = await self._connect(loop)
        if stream is None or stream.transport is None:
            return
        command = Command("watch", arg=self.group.watch)
        tally = self.owner.tally(self.group, "watch")
        called = time.monotonic_ns()
        try:
            stream.transport.write(self.codec.encode(command))
            deadline = loop.time() + GROUP_REPLY_TIMEOUT_S
            reply = await stream.reply(loop, self.codec, command, deadline)
            tally.answered(reply.status, (time.monotonic_ns() - called) // 1000)
            self.owner.count(1)
            low, high = self.group.hold_s
            hold_until = loop.time() + self.rng.uniform(low, high)
            while not stream.lost and loop.time() < hold_until:
                stream.pos = len(stream.buf)  # the log lines are read and dropped
                with contextlib.suppress(_Gone):
                    await stream.wait(loop, hold_until)
        except (_Gone, ProtocolError) as error:
            tally.failed(error.why if isinstance(error, _Gone) else "protocol-error")
        finally:
            stream.transport.abort()


PAD = b"~"  # fills a checked value to its size; no client name or number has one


def unpadded(value: bytes) -> str:
    """A checked value as the history keeps it: without the fill (append and prepend
    concatenate filled values, so every fill goes, not only a trailing one)."""
    return value.replace(PAD, b"").decode(errors="replace")


def history_op(
    client: str,
    command: Command,
    reply: Reply | None,
    called: int,
    returned: int | None,
    protocol: str,
) -> Op | None:
    """The checker's record of one request (None for what it cannot judge)."""
    kind = _OPS.get(command.name)
    if kind is None:
        return None
    if command.name in ("bin_incr", "bin_decr") and command.initial is not None:
        kind = OpKind.INCR_INIT if command.name == "bin_incr" else OpKind.DECR
    if kind == OpKind.GET and reply is not None and reply.cas is not None:
        kind = OpKind.GETS
    key = command.key.decode()
    value = unpadded(command.value) if kind in _WRITES else None
    delta = command.delta if kind in (OpKind.INCR, OpKind.DECR, OpKind.INCR_INIT) else None
    common = {"client": client, "key": key, "call_ns": called, "protocol": protocol}
    if reply is None:  # indeterminate: may or may not have happened
        return Op(kind=kind, return_ns=None, result=Result.UNKNOWN, value=value,
                  cas=command.cas or None, delta=delta, initial=command.initial,
                  **common)  # fmt: skip
    result = _RESULTS.get(reply.status)
    if result is None:
        if reply.status == Status.SERVER_ERROR and kind in _WRITES:
            # memcached unlinks the old item when a store fails to allocate: maybe deleted
            return Op(kind=OpKind.DELETE, return_ns=None, result=Result.UNKNOWN, **common)
        return None  # an error answer changed nothing the checker models
    read = unpadded(reply.value) if reply.value is not None else None
    return Op(
        kind=kind,
        return_ns=returned,
        result=result,
        value=read if result == Result.HIT else value,
        cas=reply.cas if kind == OpKind.GETS else (command.cas or None),
        delta=delta,
        initial=command.initial if kind == OpKind.INCR_INIT else None,
        number=reply.number,
        **common,
    )
