"""The wire codecs against the real memcached 1.6.18: every command is sent and answered,
and the server's own ``stats`` counters show it did what the command says; replies split at
every byte, pipelined and in quiet batches parse the same."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from verifier.run.server import HOST, MemcachedServer, ServerConfig
from verifier.stress.protocol import ProtocolError, protocol_of
from verifier.stress.protocol.ascii import AsciiCodec
from verifier.stress.protocol.base import Codec, Command, Reply, Status
from verifier.stress.protocol.binary import BinaryCodec
from verifier.stress.protocol.meta import MetaCodec


class Client:
    """A blocking client: one command, its whole reply (the codec decides where it ends)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sock = socket.create_connection((HOST, port), timeout=10)
        self.buf = b""

    def close(self) -> None:
        self.sock.close()

    def read_replies(self, codec: Codec, commands: Sequence[Command]) -> list[Reply]:
        replies: list[Reply] = []
        pos = 0
        for command in commands:
            while True:
                reply, end = codec.parse(command, self.buf, pos)
                if reply is not None:
                    replies.append(reply)
                    pos = end
                    break
                data = self.sock.recv(65536)
                if not data:
                    eof = getattr(codec, "eof_reply", lambda c: None)(command)
                    assert eof is not None, f"connection closed during {command}"
                    replies.append(eof)
                    break
                self.buf += data
        self.buf = self.buf[pos:]
        return replies

    def call(self, codec: Codec, command: Command) -> Reply:
        self.sock.sendall(codec.encode(command))
        return self.read_replies(codec, [command])[0]

    def pipeline(self, codec: Codec, commands: Sequence[Command]) -> list[Reply]:
        self.sock.sendall(b"".join(codec.encode(c) for c in commands))
        return self.read_replies(codec, commands)

    def stats(self, arg: str = "") -> dict[str, str]:
        """On a connection of its own: memcached fixes a connection's protocol by its
        first byte, so ascii stats never share the binary or meta client's."""
        other = Client(self.port)
        try:
            return other.call(ASCII, Command("stats", arg=arg)).stats
        finally:
            other.close()


ASCII = AsciiCodec()
BINARY = BinaryCodec()
META = MetaCodec()


def _start(binary: Path, tmp_path: Path, *args: str) -> MemcachedServer:
    config = ServerConfig(binary=binary, threads=2, maxconns=64, extra_args=args)
    server = MemcachedServer(config, tmp_path / "memcached.log")
    server.start()
    return server


@pytest.fixture
def server(pristine, tmp_path: Path) -> Iterator[MemcachedServer]:  # type: ignore[no-untyped-def]
    srv = _start(pristine.binary, tmp_path, "-A")
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def client(server: MemcachedServer) -> Iterator[Client]:
    c = Client(server.port)
    try:
        yield c
    finally:
        c.close()


def _grew(before: dict[str, str], after: dict[str, str]) -> dict[str, int]:
    return {
        k: int(after[k]) - int(before[k])
        for k in after
        if k in before and before[k].isdigit() and after[k].isdigit() and after[k] != before[k]
    }


def _counted(client: Client, codec: Codec, commands: Sequence[Command]) -> tuple[list[Reply], dict]:
    before = client.stats()
    replies = [client.call(codec, c) for c in commands]
    return replies, _grew(before, client.stats())


# -- ascii --------------------------------------------------------------------------------


def test_ascii_storage_and_retrieval_counted_by_server(client: Client) -> None:
    n = 5
    sets = [Command("set", key=b"k%d" % i, value=b"v%d" % i, flags=7) for i in range(n)]
    replies, grew = _counted(client, ASCII, sets)
    assert [r.status for r in replies] == [Status.STORED] * n and grew["cmd_set"] == n

    replies, grew = _counted(client, ASCII, [Command("get", key=b"k1"), Command("get", key=b"no")])
    assert replies[0].status is Status.HIT and replies[0].value == b"v1"
    assert replies[1].status is Status.MISS
    assert grew["get_hits"] == 1 and grew["get_misses"] == 1

    mget = Command("mget", keys=(b"k0", b"k1", b"k0", b"absent", b"k4"))
    (reply,), grew = _counted(client, ASCII, [mget])
    assert [(k, v) for k, v, _ in reply.values] == [
        (b"k0", b"v0"),
        (b"k1", b"v1"),
        (b"k0", b"v0"),
        (b"k4", b"v4"),
    ]
    assert grew["cmd_get"] == 5 and grew["get_hits"] == 4 and grew["get_misses"] == 1

    (reply,) = client.call(ASCII, Command("mgets", keys=(b"k2", b"k3"))).values[:1]
    assert reply[2] is not None

    verbs = [
        (Command("add", key=b"k0", value=b"x"), Status.NOT_STORED),
        (Command("add", key=b"new", value=b"x"), Status.STORED),
        (Command("replace", key=b"absent", value=b"x"), Status.NOT_STORED),
        (Command("replace", key=b"k0", value=b"r"), Status.STORED),
        (Command("append", key=b"k0", value=b"A"), Status.STORED),
        (Command("prepend", key=b"k0", value=b"P"), Status.STORED),
        (Command("append", key=b"absent", value=b"A"), Status.NOT_STORED),
    ]
    replies, grew = _counted(client, ASCII, [c for c, _ in verbs])
    assert [r.status for r in replies] == [s for _, s in verbs]
    assert grew["cmd_set"] == len(verbs)
    assert client.call(ASCII, Command("get", key=b"k0")).value == b"PrA"


def test_ascii_cas_with_own_gets_token(client: Client) -> None:
    client.call(ASCII, Command("set", key=b"c", value=b"1"))
    token = client.call(ASCII, Command("gets", key=b"c")).cas
    assert token
    replies, grew = _counted(
        client,
        ASCII,
        [
            Command("cas", key=b"c", value=b"2", cas=token),
            Command("cas", key=b"c", value=b"3", cas=token),  # stale now
            Command("cas", key=b"absent", value=b"3", cas=token),
        ],
    )
    assert [r.status for r in replies] == [Status.STORED, Status.EXISTS, Status.NOT_FOUND]
    assert grew["cas_hits"] == 1 and grew["cas_badval"] == 1 and grew["cas_misses"] == 1
    assert client.call(ASCII, Command("gets", key=b"c")).cas != token


def test_ascii_arithmetic_delete_touch_gat_counted(client: Client) -> None:
    client.call(ASCII, Command("set", key=b"n", value=b"10"))
    cmds = [Command("incr", key=b"n", delta=5)] * 3 + [Command("decr", key=b"n", delta=2)] * 2
    cmds += [Command("incr", key=b"absent"), Command("decr", key=b"absent")]
    replies, grew = _counted(client, ASCII, cmds)
    assert [r.number for r in replies[:5]] == [15, 20, 25, 23, 21]
    assert replies[5].status is replies[6].status is Status.NOT_FOUND
    assert grew["incr_hits"] == 3 and grew["decr_hits"] == 2
    assert grew["incr_misses"] == 1 and grew["decr_misses"] == 1

    cmds = [
        Command("touch", key=b"n", exptime=100),
        Command("touch", key=b"absent", exptime=100),
        Command("gat", key=b"n", exptime=100),
        Command("gats", key=b"n", exptime=100),
        Command("gat", key=b"absent", exptime=100),
    ]
    replies, grew = _counted(client, ASCII, cmds)
    assert [r.status for r in replies] == [
        Status.TOUCHED,
        Status.NOT_FOUND,
        Status.HIT,
        Status.HIT,
        Status.MISS,
    ]
    assert replies[2].value == b"21" and replies[3].cas is not None
    assert grew["cmd_touch"] == 5 and grew["touch_hits"] == 3 and grew["touch_misses"] == 2

    replies, grew = _counted(
        client, ASCII, [Command("delete", key=b"n"), Command("delete", key=b"n")]
    )
    assert [r.status for r in replies] == [Status.DELETED, Status.NOT_FOUND]
    assert grew["delete_hits"] == 1 and grew["delete_misses"] == 1


def test_ascii_noreply_closed_by_mn_and_by_version(client: Client) -> None:
    for codec in (ASCII, AsciiCodec(closer="version")):
        cmds = [Command("set", key=b"q%d" % i, value=b"x", noreply=True) for i in range(4)]
        cmds += [Command("incr", key=b"absent", noreply=True)]
        replies, grew = _counted(client, codec, cmds)
        assert {r.status for r in replies} == {Status.OK}
        assert grew["cmd_set"] == 4 and grew["incr_misses"] == 1


def test_ascii_flush_verbosity_version(client: Client) -> None:
    client.call(ASCII, Command("set", key=b"f", value=b"x"))
    replies, grew = _counted(
        client,
        ASCII,
        [Command("flush_all"), Command("get", key=b"f"), Command("flush_all", arg="3")],
    )
    assert [r.status for r in replies] == [Status.OK, Status.MISS, Status.OK]
    # get_flushed only when the get meets the flushed item itself: the LRU maintainer may
    # reap it first (seen 1 run in 6), a plain miss then
    assert grew["cmd_flush"] == 2 and grew["get_misses"] == 1
    assert client.call(ASCII, Command("verbosity", arg="1")).status is Status.OK
    version = client.call(ASCII, Command("version"))
    assert version.status is Status.OK and version.text == "VERSION 1.6.18"


def test_ascii_stats_subcommands(client: Client) -> None:
    client.call(ASCII, Command("set", key=b"s", value=b"x"))
    assert "items:1:number" in client.stats("items")
    assert "active_slabs" in client.stats("slabs")
    assert "sizes_status" in client.stats("sizes")
    assert any(k.endswith(":state") for k in client.stats("conns"))
    assert client.stats("settings")["maxconns"] == "64"
    assert client.call(ASCII, Command("stats", arg="detail on")).status is Status.OK
    client.call(ASCII, Command("get", key=b"s:1"))
    dump = client.call(ASCII, Command("stats", arg="detail dump"))
    assert dump.status is Status.STATS and "s" in dump.stats  # "PREFIX s get 1 hit 0 ..."
    assert client.call(ASCII, Command("stats", arg="detail off")).status is Status.OK
    bad = client.call(ASCII, Command("stats", arg="detail bogus"))
    assert bad.status is Status.CLIENT_ERROR


def test_ascii_admin_slabs_crawler_metadump(client: Client) -> None:
    for i in range(20):
        client.call(ASCII, Command("set", key=b"m%d" % i, value=b"x" * 10))
    reassign = client.call(ASCII, Command("slabs_reassign", arg="1 2"))
    assert reassign.status in (Status.OK, Status.BUSY, Status.OTHER)  # NOSPARE on a new server
    assert reassign.status is not Status.OTHER or reassign.text.startswith("NOSPARE")
    assert client.call(ASCII, Command("slabs_automove", arg="1")).status is Status.OK
    assert client.call(ASCII, Command("lru_crawler_disable")).status is Status.OK
    deadline = time.monotonic() + 10
    while True:  # right after a disable: "ERROR failed to start lru crawler thread" (1 in 6)
        enable = client.call(ASCII, Command("lru_crawler_enable"))
        if enable.status is not Status.ERROR or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert enable.status is Status.OK, enable.text
    before = client.stats()
    crawl = client.call(ASCII, Command("lru_crawler_crawl", arg="all"))
    assert crawl.status in (Status.OK, Status.BUSY)
    deadline = time.monotonic() + 10
    while True:  # the crawl just started may hold the crawler: BUSY, then the dump
        dump = client.call(ASCII, Command("lru_crawler_metadump", arg="all"))
        if dump.status is not Status.BUSY or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert dump.status is Status.OK and dump.number == 20
    assert dump.value is not None and dump.value.count(b"key=m") == 20
    assert int(client.stats()["lru_crawler_starts"]) > int(before["lru_crawler_starts"])


def test_ascii_watch_ok_then_stream(server: MemcachedServer, client: Client) -> None:
    watcher = Client(server.port)
    try:
        reply = watcher.call(ASCII, Command("watch", arg="mutations"))
        assert reply.status is Status.OK
        client.call(ASCII, Command("set", key=b"watched", value=b"x"))
        while b"watched" not in watcher.buf:  # the stream the engine reads itself
            watcher.buf += watcher.sock.recv(65536)
        assert b"key=watched" in watcher.buf
    finally:
        watcher.close()


@pytest.mark.parametrize("arg", ["", "graceful"])
def test_ascii_shutdown_closes_the_connection(server: MemcachedServer, arg: str) -> None:
    c = Client(server.port)
    try:
        reply = c.call(ASCII, Command("shutdown", arg=arg))
    finally:
        c.close()
    assert reply.status is Status.OK and reply.text.startswith("connection closed")
    assert server.proc is not None
    assert server.proc.wait(timeout=10) is not None


def test_ascii_shutdown_refused_without_A(pristine, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    srv = _start(pristine.binary, tmp_path)
    try:
        c = Client(srv.port)
        reply = c.call(ASCII, Command("shutdown"))
        c.close()
        assert reply.status is Status.ERROR and "not enabled" in reply.text
        assert srv.exited() is None
    finally:
        srv.stop()


# -- every codec: byte splits and pipelining ----------------------------------------------


def _parse_stream(codec: Codec, commands: Sequence[Command], chunks: Sequence[bytes]) -> list:
    """Feed ``chunks`` as reads arrive, parse replies in order, like the engine does."""
    buf = b""
    pos = 0
    replies: list[Reply] = []
    todo = list(commands)
    for chunk in chunks:
        buf += chunk
        while todo:
            reply, end = codec.parse(todo[0], buf, pos)
            if reply is None:
                assert end == pos
                break
            replies.append(reply)
            todo.pop(0)
            pos = end
    assert pos == len(buf), "bytes left over"
    return replies


def _recorded(client: Client, codec: Codec, commands: Sequence[Command]) -> bytes:
    """The raw bytes the server answers to ``commands`` pipelined in one write."""
    client.sock.sendall(b"".join(codec.encode(c) for c in commands))
    stream = b""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if len(_parse_stream(codec, commands, [stream])) == len(commands):
                return stream
        except AssertionError:
            pass
        stream += client.sock.recv(65536)
    raise AssertionError("no complete answer")


ASCII_PIPELINE = [
    Command("set", key=b"p1", value=b"hello\r\nworld", flags=3),
    Command("set", key=b"p2", value=b""),
    Command("get", key=b"p1"),
    Command("mgets", keys=(b"p1", b"p2", b"p1", b"nope")),
    Command("incr", key=b"nope"),
    Command("set", key=b"n", value=b"1"),
    Command("incr", key=b"n", delta=41),
    Command("set", key=b"q", value=b"x", noreply=True),
    Command("delete", key=b"p2"),
    Command("stats", arg="settings"),
    Command("get", key=b"p2"),
    Command("version"),
]


def test_ascii_split_at_every_byte_and_pipelined(client: Client) -> None:
    stream = _recorded(client, ASCII, ASCII_PIPELINE)
    whole = _parse_stream(ASCII, ASCII_PIPELINE, [stream])
    assert whole[2].value == b"hello\r\nworld" and whole[6].number == 42
    assert [r.status for r in whole][:5] == [
        Status.STORED,
        Status.STORED,
        Status.HIT,
        Status.HIT,
        Status.NOT_FOUND,
    ]
    assert len(whole[3].values) == 3 and whole[-2].status is Status.MISS
    for cut in range(len(stream) + 1):
        assert _parse_stream(ASCII, ASCII_PIPELINE, [stream[:cut], stream[cut:]]) == whole
    one_byte = [stream[i : i + 1] for i in range(len(stream))]
    assert _parse_stream(ASCII, ASCII_PIPELINE, one_byte) == whole


# -- binary -------------------------------------------------------------------------------


def test_binary_storage_and_gets_counted_by_server(client: Client) -> None:
    n = 4
    sets = [Command("bin_set", key=b"b%d" % i, value=b"v%d" % i, flags=9) for i in range(n)]
    replies, grew = _counted(client, BINARY, sets)
    assert [r.status for r in replies] == [Status.STORED] * n and grew["cmd_set"] == n
    cmds = [
        Command("bin_get", key=b"b0"),
        Command("bin_getk", key=b"b1"),
        Command("bin_get", key=b"absent"),
        Command("bin_getk", key=b"absent"),
    ]
    replies, grew = _counted(client, BINARY, cmds)
    assert [r.status for r in replies] == [Status.HIT, Status.HIT, Status.MISS, Status.MISS]
    assert replies[0].value == b"v0" and replies[1].values[0][:2] == (b"b1", b"v1")
    assert grew["get_hits"] == 2 and grew["get_misses"] == 2
    token = replies[0].cas
    cmds = [
        Command("bin_add", key=b"b0", value=b"x"),
        Command("bin_add", key=b"bnew", value=b"x"),
        Command("bin_replace", key=b"absent", value=b"x"),
        Command("bin_replace", key=b"b2", value=b"r"),
        Command("bin_set", key=b"b0", value=b"c1", cas=token or 0),
        Command("bin_set", key=b"b0", value=b"c2", cas=token or 0),  # stale now
        Command("bin_set", key=b"absent", value=b"c2", cas=token or 0),
    ]
    replies, grew = _counted(client, BINARY, cmds)
    assert [r.status for r in replies] == [
        Status.NOT_STORED,
        Status.STORED,
        Status.NOT_STORED,
        Status.STORED,
        Status.STORED,
        Status.EXISTS,
        Status.NOT_FOUND,
    ]
    assert grew["cas_hits"] == 1 and grew["cas_badval"] == 1 and grew["cas_misses"] == 1


def test_binary_arithmetic_with_initial_delete_touch_gat(client: Client) -> None:
    cmds = [
        Command("bin_incr", key=b"ctr", delta=3, initial=None),  # no create: miss
        Command("bin_incr", key=b"ctr", delta=3, initial=100),  # creates with 100
        Command("bin_incr", key=b"ctr", delta=3, initial=100),
        Command("bin_decr", key=b"ctr", delta=50, initial=None),
        Command("bin_decr", key=b"other", delta=1, initial=None),
    ]
    replies, grew = _counted(client, BINARY, cmds)
    assert [r.number for r in replies] == [None, 100, 103, 53, None]
    assert replies[0].status is replies[4].status is Status.NOT_FOUND
    # 1.6.18 counts the refused create as a miss, the autovivify as neither (measured)
    assert grew["incr_hits"] == 1 and grew["incr_misses"] == 1 and grew["decr_misses"] == 1
    assert grew["decr_hits"] == 1
    cmds = [
        Command("bin_touch", key=b"ctr", exptime=100),
        Command("bin_touch", key=b"absent", exptime=100),
        Command("bin_gat", key=b"ctr", exptime=100),
        Command("bin_gat", key=b"absent", exptime=100),
        Command("bin_delete", key=b"ctr"),
        Command("bin_delete", key=b"ctr"),
        Command("bin_noop"),
    ]
    replies, grew = _counted(client, BINARY, cmds)
    assert [r.status for r in replies] == [
        Status.TOUCHED,
        Status.NOT_FOUND,
        Status.HIT,
        Status.MISS,
        Status.DELETED,
        Status.NOT_FOUND,
        Status.OK,
    ]
    assert replies[2].value == b"53 "  # decr shrinks in place, padded with a space
    assert grew["cmd_touch"] == 4 and grew["touch_hits"] == 2 and grew["touch_misses"] == 2
    assert grew["delete_hits"] == 1 and grew["delete_misses"] == 1


def test_binary_quiet_batches_version_stats(client: Client) -> None:
    keys = tuple(b"q%d" % i for i in range(6))
    (stored,), grew = _counted(client, BINARY, [Command("bin_setq", keys=keys, value=b"qv")])
    assert stored.status is Status.STORED and stored.number == 0 and grew["cmd_set"] == 6
    batch = (b"q0", b"absent", b"q5", b"q0")
    replies, grew = _counted(
        client, BINARY, [Command("bin_getkq", keys=batch), Command("bin_getq", keys=batch)]
    )
    for reply in replies:
        assert reply.status is Status.HIT
        assert [(k, v) for k, v, _ in reply.values] == [
            (b"q0", b"qv"),
            (b"q5", b"qv"),
            (b"q0", b"qv"),
        ]
    assert grew["get_hits"] == 6 and grew["get_misses"] == 2
    (miss,) = [client.call(BINARY, Command("bin_getq", keys=(b"absent",)))]
    assert miss.status is Status.MISS
    version = client.call(BINARY, Command("bin_version"))
    assert version.status is Status.OK and version.text == "1.6.18"
    stats = client.call(BINARY, Command("bin_stats"))
    assert stats.status is Status.STATS and int(stats.stats["cmd_get"]) >= 8
    assert client.call(BINARY, Command("bin_stats", arg="settings")).stats["maxconns"] == "64"


BINARY_PIPELINE = [
    Command("bin_set", key=b"p1", value=b"\x81" * 30),
    Command("bin_get", key=b"p1"),
    Command("bin_getkq", keys=(b"p1", b"nope", b"p1")),
    Command("bin_incr", key=b"n", initial=7),
    Command("bin_setq", keys=(b"a", b"b"), value=b"x"),
    Command("bin_stats", arg="slabs"),
    Command("bin_delete", key=b"nope"),
    Command("bin_version"),
]


def test_binary_split_at_every_byte_and_pipelined(client: Client) -> None:
    stream = _recorded(client, BINARY, BINARY_PIPELINE)
    whole = _parse_stream(BINARY, BINARY_PIPELINE, [stream])
    assert [r.status for r in whole] == [
        Status.STORED,
        Status.HIT,
        Status.HIT,
        Status.NUMBER,
        Status.STORED,
        Status.STATS,
        Status.NOT_FOUND,
        Status.OK,
    ]
    assert whole[1].value == b"\x81" * 30 and len(whole[2].values) == 2 and whole[3].number == 7
    for cut in range(len(stream) + 1):
        assert _parse_stream(BINARY, BINARY_PIPELINE, [stream[:cut], stream[cut:]]) == whole
    one_byte = [stream[i : i + 1] for i in range(len(stream))]
    assert _parse_stream(BINARY, BINARY_PIPELINE, one_byte) == whole


# -- meta ---------------------------------------------------------------------------------


def test_meta_commands_counted_by_server(client: Client) -> None:
    cmds = [
        Command("ms", key=b"m1", value=b"one", exptime=100, flags=5),
        Command("ms", key=b"m2", value=b"two"),
        Command("ms", key=b"m1", value=b"x", arg="ME"),  # add mode on an existing key
        Command("mg", key=b"m1"),
        Command("mg", key=b"m2", arg="v k s"),
        Command("mg", key=b"absent"),
        Command("mn"),
    ]
    replies, grew = _counted(client, META, cmds)
    assert [r.status for r in replies] == [
        Status.STORED,
        Status.STORED,
        Status.NOT_STORED,
        Status.HIT,
        Status.HIT,
        Status.MISS,
        Status.OK,
    ]
    hit = replies[3]
    assert hit.value == b"one" and hit.cas and hit.ttl is not None and 0 < hit.ttl <= 100
    assert replies[4].value == b"two" and replies[4].ttl is None
    assert grew["cmd_set"] == 3 and grew["get_hits"] == 2 and grew["get_misses"] == 1

    token = hit.cas
    cmds = [
        Command("ms", key=b"m1", value=b"c1", cas=token or 0),
        Command("ms", key=b"m1", value=b"c2", cas=token or 0),  # stale now
        Command("md", key=b"m2"),
        Command("md", key=b"m2"),
        Command("ma", key=b"ctr"),  # no initial: a miss
        Command("ma", key=b"ctr", delta=5, initial=10),  # autovivify with 10
        Command("ma", key=b"ctr", delta=5),
        Command("ma", key=b"ctr", delta=3, arg="MD"),
    ]
    replies, grew = _counted(client, META, cmds)
    assert [r.status for r in replies] == [
        Status.STORED,
        Status.EXISTS,
        Status.DELETED,
        Status.NOT_FOUND,
        Status.NOT_FOUND,
        Status.NUMBER,
        Status.NUMBER,
        Status.NUMBER,
    ]
    assert [r.number for r in replies[5:]] == [10, 15, 12]
    assert grew["cas_hits"] == 1 and grew["cas_badval"] == 1
    assert grew["delete_hits"] == 1 and grew["delete_misses"] == 1
    assert grew["incr_hits"] == 1 and grew["decr_hits"] == 1 and grew["incr_misses"] >= 1
    bad = client.call(META, Command("mg", key=b"m1", arg="v Z"))
    assert bad.status is Status.CLIENT_ERROR


def test_meta_quiet_batches_closed_by_mn(client: Client) -> None:
    keys = tuple(b"b%d" % i for i in range(5))
    (stored,), grew = _counted(client, META, [Command("ms", keys=keys, value=b"bv")])
    assert stored.status is Status.STORED and stored.number == 0 and grew["cmd_set"] == 5
    batch = (b"b0", b"absent", b"b4", b"b0")
    (got,), grew = _counted(client, META, [Command("mg", keys=batch)])
    assert got.status is Status.HIT
    assert [(k, v) for k, v, _ in got.values] == [(b"b0", b"bv"), (b"b4", b"bv"), (b"b0", b"bv")]
    assert grew["get_hits"] == 3 and grew["get_misses"] == 1
    assert client.call(META, Command("mg", keys=(b"absent",))).status is Status.MISS
    (deleted,), grew = _counted(client, META, [Command("md", keys=(b"b1", b"absent", b"b2"))])
    assert deleted.status is Status.NOT_FOUND and deleted.number == 1
    assert grew["delete_hits"] == 2 and grew["delete_misses"] == 1
    added = client.call(META, Command("ms", keys=(b"b0", b"fresh"), value=b"x", arg="ME"))
    assert added.status is Status.NOT_STORED and added.number == 1
    (counted,), grew = _counted(client, META, [Command("ma", keys=(b"n1", b"n2"), initial=1)])
    assert counted.status is Status.NUMBER and counted.number == 0


META_PIPELINE = [
    Command("ms", key=b"p1", value=b"VA 3\r\nEN\r\n"),
    Command("mg", key=b"p1"),
    Command("mg", keys=(b"p1", b"nope", b"p1")),
    Command("ma", key=b"n", initial=7),
    Command("md", key=b"nope"),
    Command("mn"),
    Command("mg", key=b"nope"),
]


def test_meta_split_at_every_byte_and_pipelined(client: Client) -> None:
    stream = _recorded(client, META, META_PIPELINE)
    whole = _parse_stream(META, META_PIPELINE, [stream])
    assert [r.status for r in whole] == [
        Status.STORED,
        Status.HIT,
        Status.HIT,
        Status.NUMBER,
        Status.NOT_FOUND,
        Status.OK,
        Status.MISS,
    ]
    assert whole[1].value == b"VA 3\r\nEN\r\n" and len(whole[2].values) == 2
    for cut in range(len(stream) + 1):
        assert _parse_stream(META, META_PIPELINE, [stream[:cut], stream[cut:]]) == whole
    one_byte = [stream[i : i + 1] for i in range(len(stream))]
    assert _parse_stream(META, META_PIPELINE, one_byte) == whole


# -- desynchronised streams and unknown names (no server needed) ---------------------------


def test_desync_raises_protocol_error_and_unknown_names_value_error() -> None:
    set_ = Command("set", key=b"k", value=b"v")
    with pytest.raises(ProtocolError):
        ASCII.parse(set_, b"VALUE k 0 1\r\nv\r\nEND\r\n", 0)  # a get's answer to a set
    with pytest.raises(ProtocolError):
        ASCII.parse(Command("get", key=b"k"), b"VALUE k 0 1\r\nvXX", 0)  # block overruns
    with pytest.raises(ProtocolError):
        ASCII.parse(set_, b"x" * 9000, 0)  # no line end where one was due
    with pytest.raises(ProtocolError):
        BINARY.parse(Command("bin_get", key=b"k"), b"\x80" + b"\0" * 23, 0)  # request magic
    reply = BINARY.encode(Command("bin_set", key=b"k"))  # a set's header answering a get
    with pytest.raises(ProtocolError):
        BINARY.parse(Command("bin_get", key=b"k"), b"\x81" + reply[1:], 0)
    with pytest.raises(ProtocolError):
        META.parse(Command("ms", key=b"k", value=b"v"), b"EN\r\n", 0)  # an mg's miss
    for codec, name in ((ASCII, "mg"), (BINARY, "get"), (META, "bin_get")):
        with pytest.raises(ValueError):
            codec.encode(Command(name, key=b"k"))
    assert [protocol_of(n) for n in ("mgets", "bin_getkq", "ma")] == ["ascii", "binary", "meta"]


def test_every_status_word_maps() -> None:
    """Canned answers the server gives only under load or misuse (BUSY, SERVER_ERROR,
    binary status codes), mapped without a server."""
    lines = {
        b"BUSY currently processing reassign request": Status.BUSY,
        b"ERROR": Status.ERROR,
        b"ERROR: shutdown not enabled": Status.ERROR,
        b"CLIENT_ERROR bad data chunk": Status.CLIENT_ERROR,
        b"SERVER_ERROR out of memory storing object": Status.SERVER_ERROR,
        b"NOSPARE source class has no spare pages": Status.OTHER,
    }
    for line, status in lines.items():
        reply, end = ASCII.parse(Command("slabs_reassign", arg="1 2"), line + b"\r\n", 0)
        assert reply is not None and reply.status is status and end == len(line) + 2
        assert reply.text == line.decode() or (status is Status.OTHER and reply.text)
    from verifier.stress.protocol import binary as b

    codes = {
        0x00: Status.STORED,
        0x02: Status.NOT_STORED,  # add on an existing key
        0x04: Status.CLIENT_ERROR,
        0x05: Status.NOT_STORED,
        0x81: Status.ERROR,
        0x82: Status.SERVER_ERROR,
        0x86: Status.SERVER_ERROR,
        0x20: Status.OTHER,  # auth error
    }
    for code, status in codes.items():
        body = b"" if code == 0 else b"msg"
        packet = b.HEADER.pack(b.RES, b.ADD, 0, 0, 0, code, len(body), 0, 0) + body
        reply, end = BINARY.parse(Command("bin_add", key=b"k"), packet, 0)
        assert reply is not None and reply.status is status and end == len(packet)
    meta = {
        ("ms", b"NS"): Status.NOT_STORED,
        ("ms", b"EX"): Status.EXISTS,
        ("ms", b"NF"): Status.NOT_FOUND,
        ("md", b"HD"): Status.DELETED,
        ("mg", b"HD c5"): Status.HIT,
        ("ma", b"NF"): Status.NOT_FOUND,
        ("mn", b"MN"): Status.OK,
        ("mg", b"SERVER_ERROR out of memory"): Status.SERVER_ERROR,
    }
    for (name, line), status in meta.items():
        reply, _ = META.parse(Command(name, key=b"k"), line + b"\r\n", 0)
        assert reply is not None and reply.status is status


def test_large_metadump_split_across_reads(server: MemcachedServer, client: Client) -> None:
    n = 5000
    loader = Client(server.port)
    try:
        keys = tuple(b"dump:%05d" % i for i in range(n))
        assert loader.call(BINARY, Command("bin_setq", keys=keys, value=b"x")).number == 0
    finally:
        loader.close()
    deadline = time.monotonic() + 20
    while True:
        dump = client.call(ASCII, Command("lru_crawler_metadump", arg="all"))
        if dump.status is not Status.BUSY or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert dump.status is Status.OK and dump.number == n and dump.value is not None
    assert len(dump.value) > 65536  # more than one read of the client
    assert dump.value.count(b"key=dump%3A") == n  # keys are URI-encoded in the dump
