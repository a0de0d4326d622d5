"""Feature detection from the build itself: Debian's 1.6.18 (real build), and tiny programs
of our own that print a memcached-like ``-h`` and have, or lack, a symbol or a string."""

from __future__ import annotations

import shutil
import socket
import subprocess
import textwrap
from pathlib import Path

import pytest

from verifier.run.server import HOST, MemcachedServer, ServerConfig
from verifier.stress.features import FeatureTable, command_key, detect, settings_gaps
from verifier.stress.protocol.ascii import AsciiCodec
from verifier.stress.protocol.base import Command, Reply, Status
from verifier.stress.protocol.binary import BinaryCodec
from verifier.stress.protocol.meta import MetaCodec
from verifier.vocabulary import FeaturePresence


def test_debian_1_6_18_has_every_codec_command_but_debugtime(pristine) -> None:  # type: ignore[no-untyped-def]
    features = detect(pristine.binary)
    assert features.version == (1, 6, 18) and features.symbol_table
    for name in ("meta", "meta_arithmetic", "binary", "watch", "lru_crawler", "shutdown"):
        assert features.has(name), (name, features.evidence[name])
    assert features.has("shutdown_graceful") and features.has("gat")
    assert not features.has("tls")  # Debian's build has no --enable-tls: no -Z in its -h
    commands = AsciiCodec.commands | BinaryCodec.commands | MetaCodec.commands
    commands |= {"stats conns", "stats sizes", "stats detail", "shutdown graceful"}
    assert features.missing_for(sorted(commands - {"debugtime"}), ["-A", "ext_path=/x:1G"]) == []
    (reason,) = features.missing_for(["debugtime"])
    assert reason.startswith("debugtime: debugtime") and "not in this build" in reason
    (reason,) = features.missing_for([], ["-Z"])
    assert reason.startswith("-Z: TLS") and "-h lacks" in reason


def test_command_key_names_the_subcommand() -> None:
    assert command_key(Command("stats", arg="conns")) == "stats conns"
    assert command_key(Command("shutdown", arg="graceful")) == "shutdown graceful"
    assert command_key(Command("stats")) == "stats"
    assert command_key(Command("mg", arg="v c")) == "mg"


_PROGRAM = """
#include <stdio.h>
#include <string.h>
{extra}
int main(int argc, char **argv) {{
    if (argc > 1 && strcmp(argv[1], "-h") == 0) {{
        printf("memcached {version}\\n-p <num>      TCP port\\n{help}");
        return 0;
    }}
    return 0;
}}
"""


def _program(tmp_path: Path, name: str, *, version: str = "1.4.5", help_: str = "",
             extra: str = "") -> Path:  # fmt: skip
    cc = shutil.which("cc")
    if cc is None:
        pytest.skip("no C compiler")
    source = tmp_path / f"{name}.c"
    source.write_text(_PROGRAM.format(version=version, help=help_, extra=textwrap.dedent(extra)))
    binary = tmp_path / name
    subprocess.run([cc, "-O2", "-o", str(binary), str(source)], check=True)
    return binary


_ANCHOR = "void *conn_new(void) { return 0; }\n"  # any memcached's symbol table has it
_WATCH = """
volatile int watchers;
void process_watch_command(void) { watchers++; }
const char *busy = "BUSY currently processing crawler request";
"""


def _table(tmp_path: Path) -> FeatureTable:
    path = tmp_path / "features.toml"
    path.write_text(
        textwrap.dedent("""
        [features.by_symbol]
        what = "only a symbol tells"
        symbols = ["process_watch_command"]
        [features.by_string]
        what = "a string literal"
        strings = ["BUSY currently processing crawler request"]
        [features.by_help]
        what = "a -h phrase"
        help = "enable ascii \\"shutdown\\" command"
        [features.by_version]
        what = "a release"
        since = "1.4.18"
        [commands]
        watch = ["by_symbol"]
        lru_crawler_crawl = ["by_string"]
        shutdown = ["by_help"]
        [prefixes]
        [options]
        "-A" = ["by_help"]
        """)
    )
    return FeatureTable.load(path)


def test_each_kind_of_evidence_decides(tmp_path: Path) -> None:
    table = _table(tmp_path)
    has = _program(
        tmp_path,
        "has",
        version="1.4.26",
        help_='-A            enable ascii \\"shutdown\\" command\\n',
        extra=_ANCHOR + _WATCH,
    )
    lacks = _program(tmp_path, "lacks", extra=_ANCHOR)
    present = detect(has, table=table)
    assert {name: present.presence[name] for name in table.rules} == dict.fromkeys(
        table.rules, FeaturePresence.PRESENT
    )
    absent = detect(lacks, table=table)
    assert set(absent.presence.values()) == {FeaturePresence.ABSENT}
    reasons = absent.missing_for(["get", "watch", "lru_crawler_crawl", "shutdown"], ["-A"])
    assert [r.split(":")[0] for r in reasons] == ["watch", "lru_crawler_crawl", "shutdown", "-A"]
    assert "no symbol process_watch_command" in reasons[0]
    assert present.missing_for(["get", "watch", "lru_crawler_crawl", "shutdown"], ["-A"]) == []


def test_stripped_binary_leaves_symbol_features_unknown(tmp_path: Path) -> None:
    if shutil.which("strip") is None:
        pytest.skip("no strip")
    table = _table(tmp_path)
    full = _program(tmp_path, "full", version="1.4.26", extra=_ANCHOR + _WATCH)
    stripped = tmp_path / "stripped"
    shutil.copy(full, stripped)
    subprocess.run(["strip", str(stripped)], check=True)
    features = detect(stripped, table=table)
    assert not features.symbol_table
    assert features.presence["by_symbol"] == FeaturePresence.UNKNOWN
    assert not features.has("by_symbol")
    assert features.has("by_string")  # string literals survive strip
    (reason,) = features.missing_for(["watch"])
    assert reason.startswith("watch: only a symbol tells unknown") and "stripped" in reason
    # the separate symbol file (here: the unstripped twin) makes it readable again
    assert detect(stripped, symbols=full, table=table).has("by_symbol")


def test_shipped_table_on_an_old_release_lookalike(tmp_path: Path) -> None:
    """A program printing "memcached 1.4.5" with none of the newer strings: the shipped
    table leaves out meta, lru_crawler, watch and gat, one reason each."""
    old = _program(tmp_path, "old", extra=_ANCHOR)
    features = detect(old)
    assert features.version == (1, 4, 5)
    for name in ("meta", "lru_crawler", "watch", "gat", "touch", "shutdown"):
        assert features.presence[name] == FeaturePresence.ABSENT
    reasons = features.missing_for(["get", "mg", "lru_crawler_crawl", "watch", "gat", "set"])
    assert [r.split(":")[0] for r in reasons] == ["mg", "lru_crawler_crawl", "watch", "gat"]
    assert "version 1.4.5 < 1.6.10" in reasons[0]


def test_bad_table_is_bad_input(tmp_path: Path) -> None:
    from verifier.errors import BadInput

    path = tmp_path / "features.toml"
    path.write_text('[features.x]\nwhat = "x"\nsymbol = ["typo"]\n')
    with pytest.raises(BadInput, match="unknown keys"):
        FeatureTable.load(path)
    path.write_text('[features.x]\nwhat = "x"\n[commands]\nmg = ["nope"]\n')
    with pytest.raises(BadInput, match="unknown feature 'nope'"):
        FeatureTable.load(path)


def _ask(port: int, command: Command) -> Reply:
    codec = AsciiCodec()
    with socket.create_connection((HOST, port), timeout=10) as sock:
        sock.sendall(codec.encode(command))
        buf = b""
        while True:
            reply, _ = codec.parse(command, buf, 0)
            if reply is not None:
                return reply
            data = sock.recv(65536)
            assert data, f"closed during {command}"
            buf += data


@pytest.mark.parametrize(
    ("args", "gaps"),
    [
        (("-o", "no_lru_crawler"), ["shutdown", "lru_crawler_crawl"]),
        (("-A", "-B", "ascii"), ["bin_get"]),
    ],
)
def test_settings_gaps_match_what_the_server_refuses(  # type: ignore[no-untyped-def]
    pristine, tmp_path: Path, args: tuple[str, ...], gaps: list[str]
) -> None:
    config = ServerConfig(binary=pristine.binary, threads=2, maxconns=32, extra_args=args)
    server = MemcachedServer(config, tmp_path / "memcached.log")
    server.start()
    try:
        settings = _ask(server.port, Command("stats", arg="settings")).stats
        wanted = ["get", "shutdown", "lru_crawler_crawl", "bin_get", "mg"]
        reasons = settings_gaps(wanted, settings)
        assert [r.split(":")[0] for r in reasons] == gaps
        if "shutdown" in gaps:
            assert "-A" in reasons[0]
            assert _ask(server.port, Command("shutdown")).text == "ERROR: shutdown not enabled"
            crawl = _ask(server.port, Command("lru_crawler_crawl", arg="all"))
            assert crawl.status is Status.CLIENT_ERROR  # "lru crawler disabled"
        else:
            with socket.create_connection((HOST, server.port), timeout=10) as sock:
                # an ascii-only server reads a binary request as a text line: an error
                sock.sendall(BinaryCodec().encode(Command("bin_get", key=b"k")) + b"\r\n")
                assert sock.recv(65536).endswith(b"ERROR\r\n")
    finally:
        server.stop()


def test_server_options_for_reads_the_same_help(pristine) -> None:  # type: ignore[no-untyped-def]
    from verifier.run.server import server_options_for

    options = [(("-o", "ext_path=/x:64m"), "ext_path"), (("-Z",), "enable-ssl"), (("-A",), "")]
    assert server_options_for(pristine.binary, options) == ["-o", "ext_path=/x:64m", "-A"]
