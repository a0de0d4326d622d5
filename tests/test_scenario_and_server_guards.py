"""Scenario files and server options are code paths: what escapes the harness is refused,
and the server the harness talks to is always its own."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest

from verifier.errors import BadInput, HarnessError
from verifier.run import server as server_module
from verifier.run.amplifier import plan_amplifier
from verifier.run.server import HOST, MemcachedServer, ServerConfig
from verifier.scenario import load_scenario
from verifier.vocabulary import AmplifierKind

BASE = 'name = "t"\nsummary = "s"\nrequires_symbols = []\n[amplify]\ndefault = "none"\n'


def _scenario(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "t.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "arg", ["-d", "-l", "-l0.0.0.0", "--listen=0.0.0.0", "-p", "-U", "-u", "-s", "-P", "-c"]
)
def test_server_args_that_escape_the_harness_are_refused(tmp_path: Path, arg: str) -> None:
    text = BASE.replace("[amplify]", f'[server]\nargs = ["{arg}", "1"]\n[amplify]')
    with pytest.raises(BadInput, match="refused"):
        load_scenario(str(_scenario(tmp_path, text)))
    with pytest.raises(BadInput, match="refused"):
        ServerConfig(binary=Path("/bin/true"), threads=1, maxconns=8, extra_args=(arg,))


def test_harmless_server_args_pass(tmp_path: Path) -> None:
    text = BASE.replace("[amplify]", '[server]\nargs = ["-o", "no_maxconns_fast", "-v"]\n[amplify]')
    assert load_scenario(str(_scenario(tmp_path, text))).server_args[:2] == (
        "-o",
        "no_maxconns_fast",
    )


def test_variables_must_be_c_identifiers(tmp_path: Path) -> None:
    text = BASE + '[evidence]\nvariables = ["allow_new_conns\\necho pwned"]\n'
    with pytest.raises(BadInput, match="not a C identifier"):
        load_scenario(str(_scenario(tmp_path, text)))


def test_an_amplifier_delay_as_long_as_the_confirmation_window_is_refused(
    tmp_path: Path,
) -> None:
    text = BASE.replace('default = "none"', 'default = "interpose"') + (
        '[[amplify.interpose]]\nfunctions = ["accept"]\ndelay_us = 3000000\n'
    )
    with pytest.raises(BadInput, match="hang-confirmation window"):
        load_scenario(str(_scenario(tmp_path, text)))
    scenario = load_scenario("listener-lost-wakeup")
    with pytest.raises(BadInput, match="hang-confirmation window"):
        plan_amplifier(
            AmplifierKind.INTERPOSE, scenario, Path("/bin/true"), tmp_path, delay_us=5_000_000
        )


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ('unless_held = "cache_lock; shell echo pwned"', "unless_held .* is not a C identifier"),
        ("unless_held = 7", "unless_held 7 is not a C identifier"),
        ('hold_at = "items.c:308\\nshell echo pwned"', "hold_at must be one location"),
        ('held = "cache_lock"', "held"),
    ],
)
def test_gdb_hold_filters_are_checked(tmp_path: Path, keys: str, message: str) -> None:
    gdb = '[amplify.gdb]\nlocation = "item_unlink_q"\n' + keys + "\n"
    with pytest.raises(BadInput, match=message) as caught:
        load_scenario(str(_scenario(tmp_path, BASE + gdb)))
    assert "\n" not in caught.value.message
    fine = load_scenario(
        str(_scenario(tmp_path, BASE + gdb.replace(keys, 'unless_held = "cache_lock"')))
    )
    assert fine.gdb is not None and fine.gdb.unless_held == "cache_lock"


def test_the_old_expect_key_and_unknown_keys_are_named(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="hang_class"):
        load_scenario(str(_scenario(tmp_path, 'expect = "unknown"\n' + BASE)))
    with pytest.raises(BadInput, match="unknown key"):
        load_scenario(str(_scenario(tmp_path, 'colour = "red"\n' + BASE)))


@pytest.mark.parametrize("value", ['["unknown"]', '["lost-wakeup"]', '"listener-lost-wakeup"'])
def test_set_aside_takes_named_hang_classes_only(tmp_path: Path, value: str) -> None:
    """An unnamed hang could be the scenario's own bug in another shape: never set aside."""
    with pytest.raises(BadInput, match="set_aside takes hang classes") as caught:
        load_scenario(str(_scenario(tmp_path, f"set_aside = {value}\n" + BASE)))
    assert "\n" not in caught.value.message
    fine = load_scenario(str(_scenario(tmp_path, 'set_aside = ["listener-lost-wakeup"]\n' + BASE)))
    assert [str(c) for c in fine.set_aside] == ["listener-lost-wakeup"]


@pytest.mark.parametrize("value", ['["hang"]', '["hang:unknown"]', '["wrong"]', '"crash"'])
def test_same_bug_takes_a_crash_or_named_hang_classes(tmp_path: Path, value: str) -> None:
    with pytest.raises(BadInput, match="same_bug takes crash or hang:CLASS"):
        load_scenario(str(_scenario(tmp_path, f"same_bug = {value}\n" + BASE)))
    fine = load_scenario(str(_scenario(tmp_path, 'same_bug = ["crash", "hang:livelock"]\n' + BASE)))
    assert fine.same_bug == {"crash", "hang:livelock"}


def test_an_interpose_rule_may_match_any_result(tmp_path: Path) -> None:
    rule = '[[amplify.interpose]]\nfunctions = ["epoll_ctl"]\nret = "any"\nerrno = "any"\n'
    text = BASE.replace('default = "none"', 'default = "interpose"') + rule
    (spec,) = load_scenario(str(_scenario(tmp_path, text))).interpose
    assert spec.functions == ("epoll_ctl",) and spec.ret is None and spec.errno_name is None
    plan = plan_amplifier(AmplifierKind.INTERPOSE, load_scenario(str(tmp_path / "t.toml")),
                          Path("/bin/true"), tmp_path)  # fmt: skip
    assert plan.rules[0].ret is None and plan.rules[0].errno_value is None


def test_the_generic_flood_scenario_is_built_in() -> None:
    flood = load_scenario("flood")
    assert flood.hang_class is None and flood.requires_symbols == ()
    assert AmplifierKind.AUTO in flood.amplifiers()


def test_readiness_checks_the_pid_so_another_server_is_never_ours(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server that is not ours answers on the port (a reused port): the harness must not
    take it for the one it started (which here never listens at all)."""
    impostor = socket.socket()
    impostor.bind((HOST, 0))
    impostor.listen(16)
    stop = threading.Event()

    def answer() -> None:
        impostor.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = impostor.accept()
            except OSError:
                continue
            with conn:
                conn.recv(64)
                conn.sendall(b"VERSION 1.6.18\r\nSTAT pid 1\r\nEND\r\n")

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    silent = tmp_path / "silent-memcached"
    silent.write_text("#!/bin/sh\nexec sleep 30\n")
    silent.chmod(0o755)
    monkeypatch.setattr(server_module, "free_port", lambda: impostor.getsockname()[1])
    monkeypatch.setattr(server_module, "READY_TIMEOUT_S", 2.0)
    server = MemcachedServer(ServerConfig(silent, 1, 8), tmp_path / "server.log")
    try:
        with pytest.raises(HarnessError, match="did not start"):
            server.start(attempts=1)
    finally:
        server.stop()
        stop.set()
        thread.join(2)
        impostor.close()
