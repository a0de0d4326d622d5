"""Which command families and server options a memcached build has, decided from the build
itself, never by sending a command blindly.

Evidence per feature (``recipes/features.toml``): a phrase of ``memcached -h``, a string
literal in the binary's file, a name in its symbol table, the first release (from the
version ``-h`` prints). String literals come first: they survive ``strip`` and inlining,
while symbols may not (1.6.18's -O2 build has no ``process_mget_command``: inlined, so a
symbol-only rule would call meta absent). Measured on upstream 1.4.5 (built here): meta,
meta_arithmetic, gat, touch, lru_crawler, metadump, watch, slabs_reassign/automove,
shutdown, shutdown_graceful, stats_conns absent; binary, stats sizes/detail, verbosity
present. On Debian's 1.6.18: all present but tls and debugtime. On upstream 1.4.26 (built
with -fcommon), each ascii command sent by hand was refused exactly where this said absent
(gat, metadump, mg, shutdown graceful: ERROR) and answered where it said present (touch,
stats conns, watch, slabs automove, shutdown).

A build may have what its server was started without: ``settings_gaps`` reads the server's
``stats settings`` (1.4.26 starts with lru_crawler and slab_reassign off; 1.6.18 without -A
has shutdown_command off; -B ascii refuses binary).
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from verifier.build.help import binary_version, help_text
from verifier.build.symbols import defined_symbols
from verifier.build.versions import Version, parse_version
from verifier.errors import BadInput
from verifier.resources import recipes_dir
from verifier.stress.protocol.base import Command
from verifier.vocabulary import FeaturePresence as Presence

_KINDS = frozenset({"what", "help", "strings", "symbols", "since"})
# names any memcached defines globally: without them the symbol table is absent (stripped)
_SYMTAB_ANCHORS = ("conn_new", "item_alloc", "do_item_alloc")


@dataclass(frozen=True)
class FeatureRule:
    name: str
    what: str
    help: tuple[str, ...] = ()
    strings: tuple[bytes, ...] = ()
    symbols: tuple[str, ...] = ()
    since: Version | None = None


@dataclass(frozen=True)
class SettingRule:
    """A ``stats settings`` line that, reading ``off``, disables ``commands``."""

    name: str
    off: str
    enable: str
    commands: tuple[str, ...]


@dataclass(frozen=True)
class FeatureTable:
    rules: Mapping[str, FeatureRule]
    commands: Mapping[str, tuple[str, ...]]
    prefixes: Mapping[str, tuple[str, ...]]
    options: Mapping[str, tuple[str, ...]]
    settings: Mapping[str, SettingRule] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path | None = None) -> FeatureTable:
        path = path or recipes_dir() / "features.toml"
        try:
            data = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise BadInput(f"feature table {path}: {exc}") from None
        rules: dict[str, FeatureRule] = {}
        for name, spec in data.get("features", {}).items():
            unknown = set(spec) - _KINDS
            if unknown:
                raise BadInput(f"{path}: feature {name}: unknown keys {sorted(unknown)}")
            since = parse_version(spec["since"]) if "since" in spec else None
            rules[name] = FeatureRule(
                name,
                spec.get("what", name),
                _strs(spec.get("help", ())),
                tuple(s.encode() for s in _strs(spec.get("strings", ()))),
                _strs(spec.get("symbols", ())),
                since,
            )
        maps = [
            {k: tuple(v) for k, v in data.get(table, {}).items()}
            for table in ("commands", "prefixes", "options")
        ]
        for table, mapping in zip(("commands", "prefixes", "options"), maps, strict=True):
            for key, needs in mapping.items():
                for need in needs:
                    if need not in rules:
                        raise BadInput(f"{path}: [{table}] {key!r} needs unknown feature {need!r}")
        settings: dict[str, SettingRule] = {}
        for name, spec in data.get("settings", {}).items():
            if set(spec) != {"off", "enable", "commands"}:
                raise BadInput(f"{path}: [settings.{name}] needs exactly off, enable, commands")
            settings[name] = SettingRule(name, spec["off"], spec["enable"], tuple(spec["commands"]))
        return cls(rules, *maps, settings=settings)


def _strs(value: str | Sequence[str]) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else tuple(value)


@dataclass(frozen=True)
class Features:
    """What one build has: ``presence`` per feature, with the evidence that decided it."""

    binary: Path
    version: Version | None
    symbol_table: bool  # False: stripped (symbol-only features are "unknown")
    presence: Mapping[str, Presence]
    evidence: Mapping[str, str]
    table: FeatureTable = field(repr=False)

    def has(self, feature: str) -> bool:
        if feature not in self.presence:
            raise BadInput(f"unknown feature {feature!r} (see recipes/features.toml)")
        return self.presence[feature] == Presence.PRESENT

    def needs(self, command: str) -> tuple[str, ...]:
        """Features ``command`` needs: "stats conns", "shutdown graceful", "bin_get", "mg"."""
        needs = list(self.table.commands.get(command, ()))
        head = command.split(" ", 1)[0]
        if head != command:
            needs += self.table.commands.get(head, ())
        for prefix, more in self.table.prefixes.items():
            if head.startswith(prefix):
                needs += more
        return tuple(dict.fromkeys(needs))

    def option_needs(self, option: str) -> tuple[str, ...]:
        """Features a server argument needs: "-Z", "--enable-ssl=x", "ext_path=/f:1G,..."."""
        needs: list[str] = []
        for part in option.split(","):
            needs += self.table.options.get(part.split("=", 1)[0].strip(), ())
        return tuple(dict.fromkeys(needs))

    def missing_for(self, commands: Iterable[str], options: Iterable[str] = ()) -> list[str]:
        """One reason per command or option this build lacks (or cannot be shown to have)."""
        reasons: list[str] = []
        items = [(c, self.needs(c)) for c in dict.fromkeys(commands)]
        items += [(o, self.option_needs(o)) for o in dict.fromkeys(options)]
        for item, needs in items:
            for need in needs:
                state = self.presence[need]
                if state == Presence.PRESENT:
                    continue
                what = self.table.rules[need].what
                if state == Presence.ABSENT:
                    reasons.append(f"{item}: {what} not in this build ({self.evidence[need]})")
                else:
                    reasons.append(f"{item}: {what} unknown ({self.evidence[need]})")
                break
        return reasons


def settings_gaps(
    commands: Iterable[str], settings: Mapping[str, str], table: FeatureTable | None = None
) -> list[str]:
    """One reason per command the running server refuses by its configuration, read from
    its ``stats settings`` (``Reply.stats``): the build has it, the server was started
    without it. ``binding_protocol`` ascii / binary (-B) refuses the other protocols."""
    table = table or FeatureTable.load()
    reasons: list[str] = []
    binding = settings.get("binding_protocol", "")
    for command in dict.fromkeys(commands):
        head = command.split(" ", 1)[0]
        binary = head.startswith("bin_")
        if (binding == "ascii" and binary) or (binding == "binary" and not binary):
            reasons.append(f"{command}: the server speaks only {binding} (-B {binding})")
            continue
        for rule in table.settings.values():
            if command in rule.commands and settings.get(rule.name) == rule.off:
                reasons.append(
                    f"{command}: off in this server (stats settings {rule.name} {rule.off}); "
                    f"start it with {rule.enable}"
                )
                break
    return reasons


def command_key(command: Command) -> str:
    """The name ``Features.needs`` looks up: "stats conns", "shutdown graceful", "mg"."""
    if command.arg and command.name in ("stats", "shutdown"):
        return f"{command.name} {command.arg.split()[0]}"
    return command.name


def detect(
    binary: Path, symbols: Path | None = None, table: FeatureTable | None = None
) -> Features:
    """Read ``binary`` (its -h, file bytes, symbol table or ``symbols``' for a stripped one)."""
    if not binary.is_file():
        raise BadInput(f"no such binary: {binary}")
    table = table or FeatureTable.load()
    help_ = help_text(binary)
    blob = binary.read_bytes()
    names = defined_symbols(symbols or binary)
    has_symtab = any(anchor in names for anchor in _SYMTAB_ANCHORS)
    version = binary_version(binary)
    presence: dict[str, Presence] = {}
    evidence: dict[str, str] = {}
    for name, rule in table.rules.items():
        presence[name], evidence[name] = _decide(rule, help_, blob, names, has_symtab, version)
    return Features(binary, version, has_symtab, presence, evidence, table)


def _decide(
    rule: FeatureRule,
    help_: str,
    blob: bytes,
    names: set[str],
    has_symtab: bool,
    version: Version | None,
) -> tuple[Presence, str]:
    """Present if any readable evidence says so; absent if every readable one says not."""
    said_no: list[str] = []
    for phrase in rule.help:
        if phrase in help_:
            return Presence.PRESENT, f"-h mentions {phrase!r}"
        said_no.append(f"-h lacks {phrase!r}")
    for literal in rule.strings:
        if literal in blob:
            return Presence.PRESENT, f"string {literal.decode()!r} in the binary"
    if rule.strings:
        said_no.append("no string " + " / ".join(repr(s.decode()) for s in rule.strings))
    if rule.symbols and has_symtab:
        found = [s for s in rule.symbols if s in names]
        if found:
            return Presence.PRESENT, f"symbol {found[0]}"
        said_no.append("no symbol " + " / ".join(rule.symbols))
    if rule.since is not None and version is not None:
        if version >= rule.since:
            return Presence.PRESENT, f"version {_v(version)} >= {_v(rule.since)}"
        said_no.append(f"version {_v(version)} < {_v(rule.since)}")
    if said_no:
        return Presence.ABSENT, "; ".join(said_no)
    if rule.symbols:
        return Presence.UNKNOWN, "no symbol table (stripped binary): symbols unreadable"
    return Presence.UNKNOWN, "no version printed and no other evidence"


def _v(version: Version) -> str:
    return ".".join(map(str, version))
