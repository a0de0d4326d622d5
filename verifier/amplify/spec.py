"""Amplifier rules as typed data, and their wire form in ``$VERIFIER_AMPLIFY``.

Grammar (parsed again by libamplify.c; keep both in step)::

    VERIFIER_AMPLIFY := rule (";" rule)*
    rule  := ("watch:" | "interpose:" | "lock:") kv ("," kv)*
    watch keys:     sym=NAME (label) symoff=N | addr=N  len=1|2|4|8  cond=eq|ne|any  value=N
                    delay_us=N  thread=main|all  every=N  max=N
    interpose keys: fn=NAME("|"NAME)*  ret=N|any  errno=NAME|N|any  delay_us=N
                    when=after|before  thread=main|any  every=N  max=N
    lock keys:      sym=NAME (label) [symoff=N | addr=N  len=N]  [site=N]  delay_us=N
                    thread=main|any  every=N  max=N   (no symoff/addr/site: any mutex)

Numbers are decimal or 0x-hex. ``encode_rules`` validates everything first, so the
library never sees a malformed rule (if it does, it disables all rules and says so).
"""

from __future__ import annotations

import errno
import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from verifier.errors import BadInput, EnvironmentMissing, NotApplicable

ENV_RULES = "VERIFIER_AMPLIFY"
ENV_STATUS = "VERIFIER_AMPLIFY_STATUS"
ENV_MUTED = "VERIFIER_AMPLIFY_MUTED"  # mask of rules that start muted (auto's sweep)
ENV_EXE = "VERIFIER_AMPLIFY_EXE"  # optional: only this executable takes the rules
MAX_RULES = 16
MAX_WATCH = 4  # x86 has four debug registers
MAX_DELAY_US = 3_600_000_000
# Compiled into libamplify.c (fn_names[]); calls through the PLT only.
INTERPOSABLE = (
    "accept",
    "accept4",
    "close",
    "read",
    "write",
    "recv",
    "send",
    "connect",
    "epoll_wait",
    "poll",
    "pthread_mutex_lock",
    "epoll_ctl",
)
_SYMBOL_RE = re.compile(r"[A-Za-z_.$][A-Za-z0-9_.$]*")
_ERRNO_NAMES = frozenset(
    name for name in dir(errno) if name.startswith("E") and isinstance(getattr(errno, name), int)
)


def _check_common(delay_us: int, every: int, max_triggers: int) -> None:
    if not 0 <= delay_us <= MAX_DELAY_US:
        raise BadInput(f"amplifier delay_us={delay_us} out of range 0..{MAX_DELAY_US}")
    if every < 1:
        raise BadInput(f"amplifier every={every} must be >= 1")
    if max_triggers < 0:
        raise BadInput(f"amplifier max={max_triggers} must be >= 0 (0 = no limit)")


@dataclass(frozen=True)
class WatchRule:
    """Sleep ``delay_us`` right after a watched thread stores a matching value in ``symbol``."""

    symbol: str  # label (and the name resolve_rules looks up)
    symoff: int | None = None  # st_value in the main executable; the library adds the load bias
    addr: int | None = None  # absolute address instead of symoff
    length: int = 1  # bytes watched: 1, 2, 4 or 8
    cond: str = "eq"  # eq / ne: compare the stored value with ``value``; any: every store
    value: int = 0
    delay_us: int = 20000
    thread: str = "main"  # main: the thread that loads the library; all: also its later threads
    every: int = 1  # sleep on every Nth match only
    max_triggers: int = 0  # stop sleeping after this many (0 = no limit)

    def __post_init__(self) -> None:
        if not _SYMBOL_RE.fullmatch(self.symbol):
            raise BadInput(f"watch: bad symbol name {self.symbol!r}")
        if self.symoff is not None and self.addr is not None:
            raise BadInput(f"watch {self.symbol}: give symoff or addr, not both")
        if self.length not in (1, 2, 4, 8):
            raise BadInput(f"watch {self.symbol}: len must be 1, 2, 4 or 8, not {self.length}")
        for where in (self.symoff, self.addr):
            if where is not None and (where < 0 or where % self.length):
                raise BadInput(f"watch {self.symbol}: address {where:#x} not aligned to len")
        if self.cond not in ("eq", "ne", "any"):
            raise BadInput(f"watch {self.symbol}: cond must be eq, ne or any, not {self.cond!r}")
        if not -(1 << 63) <= self.value < (1 << 64):
            raise BadInput(f"watch {self.symbol}: value {self.value} does not fit 64 bits")
        if self.thread == "any":
            object.__setattr__(self, "thread", "all")
        if self.thread not in ("main", "all"):
            raise BadInput(f"watch {self.symbol}: thread must be main or all, not {self.thread!r}")
        _check_common(self.delay_us, self.every, self.max_triggers)

    @property
    def resolved(self) -> bool:
        return self.symoff is not None or self.addr is not None


@dataclass(frozen=True)
class InterposeRule:
    """Sleep ``delay_us`` around calls of libc ``functions`` whose result matches.

    ``ret`` / ``errno_name`` None match anything; ``when="before"`` sleeps before every call.
    """

    functions: tuple[str, ...]
    ret: int | None = -1
    errno_name: str | None = "EMFILE"
    delay_us: int = 50000
    when: str = "after"
    thread: str = "any"  # main: only calls made on the main thread
    every: int = 1
    max_triggers: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.functions, str):
            object.__setattr__(self, "functions", (self.functions,))
        if not self.functions:
            raise BadInput("interpose: no functions given")
        unknown = [f for f in self.functions if f not in INTERPOSABLE]
        if unknown:
            raise BadInput(
                f"interpose: cannot interpose {', '.join(unknown)} "
                f"(supported: {', '.join(INTERPOSABLE)})"
            )
        if self.errno_name is not None:
            if self.errno_name not in _ERRNO_NAMES:
                raise BadInput(f"interpose: unknown errno name {self.errno_name!r}")
            # one spelling per number (EWOULDBLOCK -> EAGAIN), so rules round-trip exactly
            canonical = errno.errorcode[getattr(errno, self.errno_name)]
            object.__setattr__(self, "errno_name", canonical)
        if self.when not in ("after", "before"):
            raise BadInput(f"interpose: when must be after or before, not {self.when!r}")
        if self.when == "before" and (self.ret is not None or self.errno_name is not None):
            raise BadInput("interpose: when=before cannot match ret/errno (set both to None)")
        if self.thread == "all":
            object.__setattr__(self, "thread", "any")
        if self.thread not in ("main", "any"):
            raise BadInput(f"interpose: thread must be main or any, not {self.thread!r}")
        _check_common(self.delay_us, self.every, self.max_triggers)

    @property
    def errno_value(self) -> int | None:
        return None if self.errno_name is None else int(getattr(errno, self.errno_name))


@dataclass(frozen=True)
class LockRule:
    """Sleep ``delay_us`` right after a *contended* acquisition of a matching mutex.

    The library wraps pthread_mutex_lock (calls through the PLT) with a trylock-first
    probe; only an acquisition whose trylock said EBUSY counts. A mutex matches when it
    lies in ``[symoff + load bias, +length)`` (or ``[addr, +length)``: a whole array of
    mutexes when ``length`` is the symbol's size); ``site`` (the return address's offset
    in the main executable) also requires that call site, for mutexes on the heap.
    Nothing given: any mutex. The new owner sleeps holding the mutex.
    """

    symbol: str = "any"  # label
    symoff: int | None = None
    addr: int | None = None
    length: int = 1
    site: int | None = None
    delay_us: int = 20000
    thread: str = "any"  # main: only acquisitions on the main thread
    every: int = 1
    max_triggers: int = 0

    def __post_init__(self) -> None:
        if not _SYMBOL_RE.fullmatch(self.symbol):
            raise BadInput(f"lock: bad symbol name {self.symbol!r}")
        if self.symoff is not None and self.addr is not None:
            raise BadInput(f"lock {self.symbol}: give symoff or addr, not both")
        for where in (self.symoff, self.addr, self.site):
            if where is not None and where <= 0:
                raise BadInput(f"lock {self.symbol}: addresses must be > 0")
        if not 1 <= self.length <= 1 << 30:
            raise BadInput(f"lock {self.symbol}: len {self.length} out of range 1..2^30")
        if self.thread == "all":
            object.__setattr__(self, "thread", "any")
        if self.thread not in ("main", "any"):
            raise BadInput(f"lock {self.symbol}: thread must be main or any, not {self.thread!r}")
        _check_common(self.delay_us, self.every, self.max_triggers)

    @property
    def any_mutex(self) -> bool:
        return self.symoff is None and self.addr is None and self.site is None


Rule = WatchRule | InterposeRule | LockRule


def _tail(rule: Rule) -> str:
    extra = f",every={rule.every}" if rule.every != 1 else ""
    return extra + (f",max={rule.max_triggers}" if rule.max_triggers else "")


def encode_rule(rule: Rule) -> str:
    if isinstance(rule, WatchRule):
        if rule.symoff is not None:
            where = f"symoff={rule.symoff:#x}"
        elif rule.addr is not None:
            where = f"addr={rule.addr:#x}"
        else:
            raise BadInput(f"watch {rule.symbol}: address not resolved (call resolve_rules)")
        return (
            f"watch:sym={rule.symbol},{where},len={rule.length},cond={rule.cond},"
            f"value={rule.value},delay_us={rule.delay_us},thread={rule.thread}{_tail(rule)}"
        )
    if isinstance(rule, LockRule):
        where = ""
        if rule.symoff is not None:
            where = f",symoff={rule.symoff:#x},len={rule.length}"
        elif rule.addr is not None:
            where = f",addr={rule.addr:#x},len={rule.length}"
        if rule.site is not None:
            where += f",site={rule.site:#x}"
        return (
            f"lock:sym={rule.symbol}{where},delay_us={rule.delay_us},"
            f"thread={rule.thread}{_tail(rule)}"
        )
    ret = "any" if rule.ret is None else str(rule.ret)
    err = "any" if rule.errno_value is None else str(rule.errno_value)
    return (
        f"interpose:fn={'|'.join(rule.functions)},ret={ret},errno={err},"
        f"delay_us={rule.delay_us},when={rule.when},thread={rule.thread}{_tail(rule)}"
    )


def check_rules(rules: Sequence[Rule]) -> None:
    """The limits that concern the whole set (each rule checks itself)."""
    if len(rules) > MAX_RULES:
        raise BadInput(f"{len(rules)} amplifier rules; at most {MAX_RULES}")
    watches = sum(isinstance(r, WatchRule) for r in rules)
    if watches > MAX_WATCH:
        raise BadInput(f"{watches} watch rules; at most {MAX_WATCH} (hardware debug registers)")


def encode_rules(rules: Sequence[Rule]) -> str:
    """The ``$VERIFIER_AMPLIFY`` value; every WatchRule needs symoff or addr."""
    check_rules(rules)
    return ";".join(encode_rule(r) for r in rules)


def _int(key: str, text: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        raise BadInput(f"amplifier rule: {key}={text!r} is not a number") from None


def _errno_name(text: str) -> str | None:
    if text == "any":
        return None
    if text in _ERRNO_NAMES:
        return text
    number = _int("errno", text)
    if number not in errno.errorcode:
        raise BadInput(f"amplifier rule: unknown errno {text}")
    return errno.errorcode[number]


def parse_rule(text: str) -> Rule:
    """One rule from its wire form (the inverse of ``encode_rule``)."""
    kind, sep, body = text.partition(":")
    if not sep or kind not in ("watch", "interpose", "lock"):
        raise BadInput(f"amplifier rule {text!r}: expected watch:..., interpose:... or lock:...")
    fields: dict[str, str] = {}
    for item in body.split(","):
        key, eq, value = item.partition("=")
        if not eq or key in fields:
            raise BadInput(f"amplifier rule {text!r}: bad or repeated item {item!r}")
        fields[key] = value
    common = {
        "delay_us": _int("delay_us", fields.pop("delay_us", "0")),
        "every": _int("every", fields.pop("every", "1")),
        "max_triggers": _int("max", fields.pop("max", "0")),
    }
    rule: Rule
    if kind == "watch":
        symoff, addr = fields.pop("symoff", None), fields.pop("addr", None)
        rule = WatchRule(
            symbol=fields.pop("sym", "unnamed"),
            symoff=None if symoff is None else _int("symoff", symoff),
            addr=None if addr is None else _int("addr", addr),
            length=_int("len", fields.pop("len", "1")),
            cond=fields.pop("cond", "eq"),
            value=_int("value", fields.pop("value", "0")),
            thread=fields.pop("thread", "main"),
            **common,
        )
        if not rule.resolved:
            raise BadInput(f"amplifier rule {text!r}: watch needs symoff= or addr=")
    elif kind == "lock":
        symoff, addr, site = (
            fields.pop("symoff", None),
            fields.pop("addr", None),
            fields.pop("site", None),
        )
        rule = LockRule(
            symbol=fields.pop("sym", "any"),
            symoff=None if symoff is None else _int("symoff", symoff),
            addr=None if addr is None else _int("addr", addr),
            length=_int("len", fields.pop("len", "1")),
            site=None if site is None else _int("site", site),
            thread=fields.pop("thread", "any"),
            **common,
        )
    else:
        ret = fields.pop("ret", "any")
        rule = InterposeRule(
            functions=tuple(fields.pop("fn", "").split("|")) if "fn" in fields else (),
            ret=None if ret == "any" else _int("ret", ret),
            errno_name=_errno_name(fields.pop("errno", "any")),
            when=fields.pop("when", "after"),
            thread=fields.pop("thread", "any"),
            **common,
        )
    if fields:
        raise BadInput(f"amplifier rule {text!r}: unknown keys {', '.join(sorted(fields))}")
    return rule


def parse_rules(text: str) -> list[Rule]:
    """All rules of a ``$VERIFIER_AMPLIFY`` value (empty items are skipped)."""
    rules = [parse_rule(part) for part in text.split(";") if part]
    check_rules(rules)
    return rules


def resolve_symbol(binary: Path, name: str) -> int | None:
    """``name``'s st_value in ``binary`` (via binutils' nm); None when absent or stripped.

    Raises NotApplicable when several symbols of that name have different addresses
    (file-local statics of the same name in several objects).
    """
    nm = shutil.which("nm")
    if nm is None:
        raise EnvironmentMissing("'nm' not found (apt-get install binutils)")
    proc = subprocess.run(
        [nm, "--defined-only", str(binary)], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0 and "no symbols" not in proc.stderr:
        raise NotApplicable(f"nm cannot read {binary}: {proc.stderr.strip()[:200]}")
    found = set()
    for line in proc.stdout.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[2] == name:
            found.add(int(parts[0], 16))
    if len(found) > 1:
        where = ", ".join(f"{a:#x}" for a in sorted(found))
        raise NotApplicable(f"symbol {name} is defined {len(found)} times in {binary} ({where})")
    return found.pop() if found else None


def resolve_rules(rules: Sequence[Rule], binary: Path) -> list[Rule]:
    """Fill in each unresolved WatchRule's symoff from ``binary``'s symbol table."""
    out: list[Rule] = []
    for rule in rules:
        if isinstance(rule, WatchRule) and not rule.resolved:
            symoff = resolve_symbol(binary, rule.symbol)
            if symoff is None:
                raise NotApplicable(
                    f"symbol {rule.symbol} not found in {binary} (stripped, or renamed?)"
                )
            rule = replace(rule, symoff=symoff)
        out.append(rule)
    return out
