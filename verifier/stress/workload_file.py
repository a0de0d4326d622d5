"""Workload files: what the clients do, as data (``recipes/workloads/*.toml``).

A workload is one or more client groups running at once, each flat and readable at a
glance (mc-crusher's one line per connection template, memtier's names), plus server
settings and events on a schedule::

    name = "incr-race"
    summary = "many clients incr a few counters whose values gain a digit"
    [server]
    options = ["lru_crawler"]                 # -o items (a build lacking one leaves it out)
    memory_mb = 64                            # -m
    [[group]]
    name = "counters"
    protocol = "ascii"                        # ascii | meta | binary
    clients = 16                              # connections, split across flood processes
    connection = "long"                       # long (kept open) | churn (one per batch)
    pipeline = 1                              # requests sent before the replies are read
    rate = 0                                  # requests/s of the whole group; 0: flat out
    check = true                              # record a history for the checker
    tls = false                               # speak TLS (a build with --tls; else left out)
    keys = { count = 4, prefix = "ctr:" }      # popularity "uniform" or "zipf" (zipf_s)
    values = { numbers = [9, 99, 999] }
    commands = { incr = 10, set = 1, get = 1 }
    [[event]]
    at_s = 5                                  # or every_s
    action = "signal"      # signal | shutdown | shutdown-graceful | pause | disconnect-storm
    signal = "SIGUSR1"

Everything is checked here, before anything is built: an unknown key, command,
protocol, option or distribution, a rate or size out of range, a key memcached would
reject is one line (``BadInput``, exit 2). Workload files are code paths like scenario
files: server settings pass the harness's refusal of options that would move the server
out of it, and traffic only ever goes to the harness's own 127.0.0.1 server.
"""

from __future__ import annotations

import enum
import math
import re
import signal
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from verifier.errors import BadInput
from verifier.harness_options import refuse_harness_options
from verifier.resources import recipes_dir

# Command names per protocol (the codecs in verifier/stress/protocol/ speak exactly these).
ASCII_COMMANDS = frozenset(
    {
        "get", "gets", "mget", "mgets", "set", "add", "replace", "append", "prepend", "cas",
        "incr", "decr", "delete", "touch", "gat", "gats", "flush_all", "verbosity", "stats",
        "slabs_reassign", "slabs_automove", "lru_crawler_crawl", "lru_crawler_metadump",
        "lru_crawler_enable", "lru_crawler_disable", "version", "debugtime",
    }
)  # fmt: skip
META_COMMANDS = frozenset({"mg", "ms", "md", "ma", "mn"})
BINARY_COMMANDS = frozenset(
    {
        "bin_get", "bin_getk", "bin_getq", "bin_getkq", "bin_set", "bin_add", "bin_replace",
        "bin_setq", "bin_incr", "bin_decr", "bin_delete", "bin_noop", "bin_touch", "bin_gat",
        "bin_version", "bin_stats",
    }
)  # fmt: skip
# Commands whose answers the checker can judge (history.OpKind), by protocol.
CHECKABLE = frozenset(
    {
        "get", "gets", "set", "add", "replace", "append", "prepend", "cas", "incr", "decr",
        "delete", "touch", "bin_get", "bin_getk", "bin_set", "bin_add", "bin_replace",
        "bin_incr", "bin_decr", "bin_delete", "bin_touch", "mg", "ms", "md", "ma",
    }
)  # fmt: skip
# Commands that take a key (the rest are admin/global: stats, flush_all, slabs ...).
KEYED = CHECKABLE | frozenset({"mget", "mgets", "gat", "gats", "bin_getq", "bin_getkq",
                               "bin_setq", "bin_gat"})  # fmt: skip
# Admin commands take their argument from the group's ``arg`` table (a string or a list).
DEFAULT_ARGS: dict[str, tuple[str, ...]] = {
    "stats": ("", "items", "slabs", "sizes", "settings", "conns"),
    "flush_all": ("", "2"),
    "verbosity": ("0", "1"),
    "slabs_reassign": ("-1 1", "1 -1", "-1 5"),
    "slabs_automove": ("1", "0"),
    "lru_crawler_crawl": ("all",),
    "lru_crawler_metadump": ("all",),
}


class Protocol(enum.StrEnum):
    ASCII = "ascii"
    META = "meta"
    BINARY = "binary"

    @property
    def commands(self) -> frozenset[str]:
        return {
            Protocol.ASCII: ASCII_COMMANDS,
            Protocol.META: META_COMMANDS,
            Protocol.BINARY: BINARY_COMMANDS,
        }[self]


class Connection(enum.StrEnum):
    LONG = "long"  # one connection per client, reopened only when it dies
    CHURN = "churn"  # a new connection for every batch of `pipeline` requests


class GroupKind(enum.StrEnum):
    CLIENTS = "clients"  # send commands, read replies
    WATCH = "watch"  # open `watch`, read its stream for a while, drop it, again


class Popularity(enum.StrEnum):
    UNIFORM = "uniform"
    ZIPF = "zipf"


class EventAction(enum.StrEnum):
    SIGNAL = "signal"
    SHUTDOWN = "shutdown"  # the `shutdown` command (the server gets -A)
    SHUTDOWN_GRACEFUL = "shutdown-graceful"  # `shutdown graceful` (1.6+)
    PAUSE = "pause"  # the clients stop for duration_s
    DISCONNECT_STORM = "disconnect-storm"  # every client connection is dropped at once


# Signals a workload may send: the ones memcached handles or that stop it. SIGKILL/SIGSTOP
# and friends would make the crash or hang the harness then reports: refused.
SIGNALS = ("SIGUSR1", "SIGUSR2", "SIGHUP", "SIGTERM", "SIGINT")
# every release exits on these (SIGUSR1 gracefully from 1.5.18, by its default action before;
# SIGUSR2 by its default action); SIGHUP too before 1.5.15, so a build without the handler
# leaves a SIGHUP event out (verifier/run/workload_fit.py)
STOPPING_SIGNALS = frozenset({"SIGTERM", "SIGINT", "SIGUSR1", "SIGUSR2"})

_KEY_BAD = re.compile(r"[\x00-\x20\x7f]")
MAX_KEY_LEN = 250  # memcached's KEY_MAX_LENGTH
MAX_CLIENTS = 5000  # per group; the server's -c must also hold them
MAX_RATE = 1_000_000
MAX_VALUE = 64 * 1024 * 1024  # -I can go to 1 GB; a flood value above 64 MB is a mistake
MAX_KEYS = 50_000_000
MAX_PIPELINE = 1024


@dataclass(frozen=True)
class Keys:
    count: int = 1024
    prefix: str = "wk:"
    popularity: Popularity = Popularity.UNIFORM
    zipf_s: float = 0.99

    def name(self, index: int) -> str:
        return f"{self.prefix}{index}"


@dataclass(frozen=True)
class Values:
    """Value sizes: fixed, uniform, a weighted list, or heavy-tailed (generalised Pareto,
    mutilate's ETC fit is scale 214.5, shape 0.348); or decimal numbers (counters)."""

    size: int = 64
    min: int | None = None
    max: int | None = None
    weighted: tuple[tuple[int, float], ...] = ()
    pareto: tuple[float, float] | None = None
    numbers: tuple[int, ...] = ()

    @property
    def largest(self) -> int:
        if self.numbers:
            return max(len(str(n)) for n in self.numbers)
        if self.weighted:
            return max(size for size, _ in self.weighted)
        if self.pareto or self.min is not None:
            return int(self.max or self.size)
        return self.size


@dataclass(frozen=True)
class Group:
    name: str
    protocol: Protocol = Protocol.ASCII
    kind: GroupKind = GroupKind.CLIENTS
    clients: int = 1
    connection: Connection = Connection.LONG
    pipeline: int = 1
    rate: float = 0.0  # requests/s for the whole group; 0: as fast as it can
    check: bool = False
    keys: Keys = field(default_factory=Keys)
    values: Values = field(default_factory=Values)
    ttl: tuple[int, int] = (0, 0)
    commands: tuple[tuple[str, float], ...] = (("get", 9.0), ("set", 1.0))
    args: tuple[tuple[str, tuple[str, ...]], ...] = ()  # admin command -> argument choices
    mget_keys: int = 10  # keys per multi-get / quiet batch
    mget_repeat: bool = False  # a multi-get repeats one key (refcounts on one item)
    read_delay_ms: int = 0  # slow reader: reads nothing for this long after sending
    abandon: bool = False  # after read_delay_ms, drop the connection unread
    watch: str = ""  # watch: its arguments ("fetchers mutations")
    hold_s: tuple[float, float] = (0.5, 2.0)  # watch: how long a watcher stays
    tls: bool = False  # connect to the server's TLS listener (builds with --enable-tls)

    def arg_choices(self, command: str) -> tuple[str, ...]:
        return dict(self.args).get(command) or DEFAULT_ARGS.get(command, ("",))

    @property
    def command_names(self) -> tuple[str, ...]:
        return ("watch",) if self.kind == GroupKind.WATCH else tuple(c for c, _ in self.commands)


@dataclass(frozen=True)
class Event:
    action: EventAction
    at_s: float | None = None
    every_s: float | None = None
    signal: str = ""
    duration_s: float = 1.0

    @property
    def stops_server(self) -> bool:
        """After this event the server must exit (within the harness's shutdown bound)."""
        if self.action in (EventAction.SHUTDOWN, EventAction.SHUTDOWN_GRACEFUL):
            return True
        return self.action == EventAction.SIGNAL and self.signal in STOPPING_SIGNALS

    def describe(self) -> str:
        what = f"{self.action} {self.signal}".strip() if self.signal else str(self.action)
        when = f"at {self.at_s:g} s" if self.at_s is not None else f"every {self.every_s:g} s"
        return f"{what} {when}"


@dataclass(frozen=True)
class ServerNeeds:
    options: tuple[str, ...] = ()  # -o items
    memory_mb: int | None = None  # -m
    item_size_max: str | None = None  # -I
    reqs_per_event: int | None = None  # -R
    protocol: str | None = None  # -B auto|ascii (binary alone would silence the probes)
    enable_shutdown: bool = False  # -A (set by shutdown events too)
    extstore_mb: int | None = None  # -o ext_path=<a file the harness makes>:<N>m

    def args(
        self, options: tuple[str, ...] | None = None, scratch: Path | None = None
    ) -> tuple[str, ...]:
        """memcached arguments; ``options`` replaces the -o list (those the build has);
        ``scratch``: the trial's folder, where the extstore file goes."""
        out: list[str] = []
        chosen = list(self.options if options is None else options)
        if self.extstore_mb is not None:
            folder = scratch if scratch is not None else Path("extstore")
            chosen.append(f"ext_path={folder / 'extstore'}:{self.extstore_mb}m")
        if chosen:
            out += ["-o", ",".join(chosen)]
        if self.memory_mb is not None:
            out += ["-m", str(self.memory_mb)]
        if self.item_size_max is not None:
            out += ["-I", self.item_size_max]
        if self.reqs_per_event is not None:
            out += ["-R", str(self.reqs_per_event)]
        if self.protocol is not None:
            out += ["-B", self.protocol]
        if self.enable_shutdown:
            out += ["-A"]
        return tuple(out)


@dataclass(frozen=True)
class Workload:
    name: str
    path: Path | None
    summary: str
    server: ServerNeeds = field(default_factory=ServerNeeds)
    groups: tuple[Group, ...] = ()
    events: tuple[Event, ...] = ()

    @property
    def clients(self) -> int:
        """Connections the groups hold at once (the server's -c must leave room)."""
        return sum(g.clients for g in self.groups)

    @property
    def commands(self) -> tuple[str, ...]:
        names = [c for g in self.groups for c in g.command_names]
        names += [str(e.action) for e in self.events if e.action != EventAction.SIGNAL]
        return tuple(dict.fromkeys(names))

    @property
    def checked(self) -> bool:
        return any(g.check for g in self.groups)

    @property
    def tls(self) -> bool:
        """Does some group speak TLS (the server then gets a certificate and a TLS port)?"""
        return any(g.tls for g in self.groups)

    @property
    def needs_scratch(self) -> bool:
        """Does the server need a folder of the harness's files (extstore, TLS certificate)?"""
        return self.server.extstore_mb is not None or self.tls

    @property
    def may_vanish(self) -> bool:
        """Can a stored key disappear with no delete by a checked client (flush_all, TTLs,
        evictions under a small -m, another group's deletes on the same keys)? The checker
        then allows spontaneous deletes (the sound checks stay: duplicate incr answers,
        stale reads, changed cas tokens)."""
        checked_prefixes = {g.keys.prefix for g in self.groups if g.check}
        for g in self.groups:
            names = set(g.command_names)
            if "flush_all" in names or g.ttl != (0, 0):
                return True
            if not g.check and g.keys.prefix in checked_prefixes:
                return True
        return self.server.memory_mb is not None and self.server.memory_mb < 64

    def with_server_args_checked(self) -> Workload:
        refuse_harness_options(self.server.args(), f"workload {self.name}")
        return self


_TOP = {"name", "summary", "server", "group", "event"}
_SERVER = {"options", "memory_mb", "item_size_max", "reqs_per_event", "protocol",
           "enable_shutdown", "extstore_mb"}  # fmt: skip
_GROUP = {"name", "protocol", "kind", "clients", "connection", "pipeline", "rate", "check",
          "keys", "values", "ttl", "commands", "arg", "mget_keys", "mget_repeat",
          "read_delay_ms", "abandon", "watch", "hold_s", "tls"}  # fmt: skip
_KEYS = {"count", "prefix", "popularity", "zipf_s"}
_VALUES = {"size", "min", "max", "list", "pareto", "numbers"}
_EVENT = {"action", "at_s", "every_s", "signal", "duration_s"}
# -o items memcached 1.4-1.6 knows; anything else is a typo or an option of another build
# (a build that lacks one of these leaves it out and says so: verifier/stress/features.py).
_OPTION = re.compile(r"[a-z_]+(=[A-Za-z0-9_.:/,-]+)?")
_REFUSED_OPTIONS = {"ext_path", "ssl_chain_cert", "ssl_key", "ssl_ca_cert"}  # files: harness's


class _Reader:
    """Typed reads of one table, every problem phrased for the file's author."""

    def __init__(self, where: str, table: Any, allowed: set[str]) -> None:
        if not isinstance(table, dict):
            raise BadInput(f"{where}: expected a table")
        unknown = sorted(set(table) - allowed)
        if unknown:
            known = ", ".join(sorted(allowed))
            raise BadInput(f"{where}: unknown key(s) {', '.join(unknown)} (known: {known})")
        self.where, self.table = where, table

    def get(self, key: str, kind: type, default: Any = None) -> Any:
        if key not in self.table:
            return default
        value = self.table[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise BadInput(f"{self.where}: {key} must be {kind.__name__}, not {value!r}")
        return value

    def number(self, key: str, default: float, low: float, high: float, kind: type = int) -> Any:
        value = self.get(key, float if kind is float else int, default)
        if not (low <= value <= high) or not math.isfinite(value):
            raise BadInput(f"{self.where}: {key} = {value} is out of range ({low:g} to {high:g})")
        return value

    def choice(self, key: str, enum_type: type[enum.StrEnum], default: enum.StrEnum) -> Any:
        value = self.get(key, str, str(default))
        try:
            return enum_type(value)
        except ValueError:
            known = ", ".join(m.value for m in enum_type)
            raise BadInput(f"{self.where}: unknown {key} {value!r} (known: {known})") from None


def _keys(where: str, table: Any) -> Keys:
    r = _Reader(f"{where} keys", table, _KEYS)
    keys = Keys(
        count=r.number("count", 1024, 1, MAX_KEYS),
        prefix=r.get("prefix", str, "wk:"),
        popularity=r.choice("popularity", Popularity, Popularity.UNIFORM),
        zipf_s=r.number("zipf_s", 0.99, 0.01, 10.0, float),
    )
    longest = keys.name(keys.count - 1)
    if _KEY_BAD.search(keys.prefix):
        raise BadInput(f"{where}: key prefix {keys.prefix!r} has a space or control character")
    if len(longest.encode()) > MAX_KEY_LEN:
        raise BadInput(f"{where}: key {longest[:40]}... is longer than memcached's 250 bytes")
    return keys


def _values(where: str, table: Any) -> Values:
    r = _Reader(f"{where} values", table, _VALUES)
    size = r.number("size", 64, 0, MAX_VALUE)
    low, high = r.get("min", int), r.get("max", int)
    weighted = tuple((int(s), float(w)) for s, w in r.get("list", list, []))
    pareto = r.get("pareto", list)
    numbers = tuple(r.get("numbers", list, []))
    if (low is None) != (high is None) and pareto is None:
        raise BadInput(f"{where} values: give both min and max")
    if low is not None and high is not None and not 0 <= low <= high <= MAX_VALUE:
        raise BadInput(f"{where} values: need 0 <= min <= max <= {MAX_VALUE}")
    for s, w in weighted:
        if not (0 <= s <= MAX_VALUE and w >= 0):
            raise BadInput(f"{where} values: list entry [{s}, {w}] out of range")
    if weighted and sum(w for _, w in weighted) <= 0:
        raise BadInput(f"{where} values: list weights sum to 0")
    if pareto is not None:
        if len(pareto) != 2 or not all(isinstance(x, int | float) and x > 0 for x in pareto):
            raise BadInput(f"{where} values: pareto = [scale, shape], both > 0")
        if high is None:
            raise BadInput(f"{where} values: a pareto distribution needs a max")
    if any(not isinstance(n, int) or n < 0 or n >= 2**64 for n in numbers):
        raise BadInput(f"{where} values: numbers must be integers from 0 to 2^64-1")
    return Values(
        size=size,
        min=low,
        max=high,
        weighted=weighted,
        pareto=(float(pareto[0]), float(pareto[1])) if pareto else None,
        numbers=numbers,
    )


def _pair(where: str, value: Any, kind: type, low: float, high: float) -> tuple[Any, Any]:
    if isinstance(value, dict):
        value = [value.get("min", 0), value.get("max", 0)]
    if not (isinstance(value, list) and len(value) == 2):
        raise BadInput(f"{where}: expected [min, max] or {{ min = ., max = . }}")
    a, b = (kind(v) for v in value)
    if not low <= a <= b <= high:
        raise BadInput(f"{where}: need {low:g} <= min <= max <= {high:g}, got [{a}, {b}]")
    return a, b


def _group(index: int, table: Any) -> Group:
    where = f"group {index + 1}"
    r = _Reader(where, table, _GROUP)
    name = r.get("name", str, f"group{index + 1}")
    where = f"group {name!r}"
    r.where = where
    protocol = r.choice("protocol", Protocol, Protocol.ASCII)
    kind = r.choice("kind", GroupKind, GroupKind.CLIENTS)
    commands: tuple[tuple[str, float], ...] = ()
    if kind == GroupKind.CLIENTS:
        raw = r.get("commands", dict, {"get": 9, "set": 1})
        commands = tuple((str(c), float(w)) for c, w in raw.items())
        for command, weight in commands:
            if command not in protocol.commands:
                hint = next((str(p) for p in Protocol if command in p.commands), "")
                also = f" (it is a {hint} command: use protocol = {hint!r})" if hint else ""
                raise BadInput(f"{where}: unknown {protocol} command {command!r}{also}")
            if not (weight >= 0 and math.isfinite(weight)):
                raise BadInput(f"{where}: weight of {command!r} must be >= 0")
        if not commands or sum(w for _, w in commands) <= 0:
            raise BadInput(f"{where}: commands is empty or its weights sum to 0")
    args: dict[str, tuple[str, ...]] = {}
    for command, value in r.get("arg", dict, {}).items():
        choices = (value,) if isinstance(value, str) else tuple(value)
        if any(not isinstance(c, str) or _KEY_BAD.sub("", c.replace(" ", "")) != c.replace(" ", "")
               for c in choices):  # fmt: skip
            raise BadInput(f"{where}: arg of {command!r} must be plain text on one line")
        args[command] = choices
    check = r.get("check", bool, False)
    if check:
        unchecked = sorted({c for c, _ in commands} - CHECKABLE)
        if unchecked:
            raise BadInput(
                f"{where}: check = true, but the checker cannot judge {', '.join(unchecked)} "
                "(put them in a group of their own)"
            )
    group = Group(
        name=name,
        protocol=protocol,
        kind=kind,
        clients=r.number("clients", 1, 1, MAX_CLIENTS),
        connection=r.choice("connection", Connection, Connection.LONG),
        pipeline=r.number("pipeline", 1, 1, MAX_PIPELINE),
        rate=r.number("rate", 0.0, 0.0, MAX_RATE, float),
        check=check,
        keys=_keys(where, r.get("keys", dict, {})),
        values=_values(where, r.get("values", dict, {})),
        ttl=_pair(f"{where} ttl", r.get("ttl", object, [0, 0]), int, 0, 30 * 24 * 3600),
        commands=commands,
        args=tuple(args.items()),
        mget_keys=r.number("mget_keys", 10, 1, 100_000),
        mget_repeat=r.get("mget_repeat", bool, False),
        read_delay_ms=r.number("read_delay_ms", 0, 0, 60_000),
        abandon=r.get("abandon", bool, False),
        watch=r.get("watch", str, ""),
        hold_s=_pair(f"{where} hold_s", r.get("hold_s", object, [0.5, 2.0]), float, 0.0, 600.0),
        tls=r.get("tls", bool, False),
    )
    if group.abandon and not group.read_delay_ms:
        raise BadInput(f"{where}: abandon drops a connection after read_delay_ms: set it too")
    if group.kind == GroupKind.WATCH and protocol != Protocol.ASCII:
        raise BadInput(f"{where}: watch connections speak ascii")
    if _KEY_BAD.sub("", group.watch.replace(" ", "")) != group.watch.replace(" ", ""):
        raise BadInput(f"{where}: watch arguments must be plain text on one line")
    return group


def _event(index: int, table: Any) -> Event:
    where = f"event {index + 1}"
    r = _Reader(where, table, _EVENT)
    action = r.choice("action", EventAction, EventAction.PAUSE)
    at_s = r.get("at_s", float)
    every_s = r.get("every_s", float)
    if (at_s is None) == (every_s is None):
        raise BadInput(f"{where}: give exactly one of at_s and every_s")
    if (at_s is not None and at_s < 0) or (every_s is not None and every_s < 0.1):
        raise BadInput(f"{where}: at_s must be >= 0 and every_s >= 0.1")
    sig = r.get("signal", str, "")
    if action == EventAction.SIGNAL and sig not in SIGNALS:
        raise BadInput(f"{where}: signal must be one of {', '.join(SIGNALS)}, not {sig!r}")
    if action != EventAction.SIGNAL and sig:
        raise BadInput(f"{where}: signal is only for action = 'signal'")
    assert not sig or hasattr(signal, sig)
    return Event(action, at_s, every_s, sig, r.number("duration_s", 1.0, 0.0, 3600.0, float))


def _server(table: Any) -> ServerNeeds:
    r = _Reader("server", table, _SERVER)
    options = tuple(r.get("options", list, []))
    for option in options:
        if not isinstance(option, str) or not _OPTION.fullmatch(option):
            raise BadInput(f"server: bad -o option {option!r}")
        if option.split("=")[0] in _REFUSED_OPTIONS:
            raise BadInput(f"server: -o {option.split('=')[0]} names a file: refused")
    protocol = r.get("protocol", str)
    if protocol not in (None, "auto", "ascii"):
        raise BadInput("server: protocol must be 'auto' or 'ascii' (the probes speak ascii)")
    size = r.get("item_size_max", str)
    if size is not None and not re.fullmatch(r"[0-9]+[kmKM]?", size):
        raise BadInput(f"server: item_size_max {size!r} is not a size (e.g. 1m, 512k)")
    return ServerNeeds(
        options=options,
        memory_mb=r.number("memory_mb", 64, 1, 16_384) if "memory_mb" in table else None,
        item_size_max=size,
        reqs_per_event=r.number("reqs_per_event", 20, 1, 10_000)
        if "reqs_per_event" in table
        else None,
        protocol=protocol,
        enable_shutdown=r.get("enable_shutdown", bool, False),
        extstore_mb=r.number("extstore_mb", 64, 8, 65_536) if "extstore_mb" in table else None,
    )


def parse_workload(data: dict[str, Any], name: str, path: Path | None) -> Workload:
    r = _Reader(f"workload {name}", data, _TOP)
    groups = tuple(_group(i, g) for i, g in enumerate(r.get("group", list, [])))
    events = tuple(_event(i, e) for i, e in enumerate(r.get("event", list, [])))
    if not groups:
        raise BadInput(f"workload {name}: no [[group]]")
    names = [g.name for g in groups]
    if len(set(names)) != len(names):
        raise BadInput(f"workload {name}: two groups share a name")
    server = _server(r.get("server", dict, {}))
    if any(e.action in (EventAction.SHUTDOWN, EventAction.SHUTDOWN_GRACEFUL) for e in events):
        server = ServerNeeds(**{**server.__dict__, "enable_shutdown": True})
    workload = Workload(
        name=r.get("name", str, name),
        path=path,
        summary=r.get("summary", str, ""),
        server=server,
        groups=groups,
        events=events,
    )
    for group in groups:
        if group.values.largest > _item_limit(server):
            raise BadInput(
                f"workload {name}: group {group.name!r} writes values of up to "
                f"{group.values.largest} bytes, above the server's item size limit"
            )
    return workload.with_server_args_checked()


def _item_limit(server: ServerNeeds) -> int:
    if server.item_size_max is None:
        return 1024 * 1024
    text = server.item_size_max.lower()
    scale = {"k": 1024, "m": 1024 * 1024}.get(text[-1], 1)
    return int(text.rstrip("km")) * scale


def workloads_dir() -> Path:
    return recipes_dir() / "workloads"


def list_workloads() -> list[Workload]:
    return [load_workload(str(p)) for p in sorted(workloads_dir().glob("*.toml"))]


def load_workload(name: str) -> Workload:
    """By name from recipes/workloads/, or a path to a workload file."""
    candidate = Path(name)
    if candidate.suffix == ".toml" and candidate.is_file():
        path = candidate
    else:
        path = workloads_dir() / f"{name}.toml"
        if not path.is_file():
            known = ", ".join(sorted(p.stem for p in workloads_dir().glob("*.toml")))
            raise BadInput(f"unknown workload {name!r} (known: {known})")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise BadInput(f"bad workload file {path.name}: {exc}") from None
    try:
        return parse_workload(data, path.stem, path)
    except BadInput as exc:
        raise BadInput(f"bad workload file {path.name}: {exc.message}") from None
    except (TypeError, ValueError, AttributeError) as exc:
        raise BadInput(f"bad workload file {path.name}: {exc}") from None
