"""Hang signatures from gdb output (recorded shapes, written by hand for the tests)."""

from __future__ import annotations

import dataclasses

from verifier.evidence.classify import Diagnosis, Evidence, classify
from verifier.evidence.gdb import parse_backtraces, parse_variables, thread_excerpt
from verifier.evidence.procfs import FdUsage, SocketInfo, ThreadState
from verifier.vocabulary import HangClass, Liveness

SELF_DEADLOCK, LOST_WAKEUP, UNKNOWN = (
    HangClass.SELF_DEADLOCK,
    HangClass.LOST_WAKEUP,
    HangClass.UNKNOWN,
)
WORKERS_ALIVE, FROZEN = Liveness.WORKERS_ALIVE, Liveness.FROZEN

DEADLOCK = """\
Thread 3 (Thread 0x7f0000000700 (LWP 102) "mc-worker"):
#0  0x00007f in epoll_wait (epfd=7, events=0x5, maxevents=32, timeout=-1) at epoll_wait.c:30
#1  0x00007f in event_base_loop () from /lib/libevent-2.1.so.7
#2  0x000055 in worker_libevent (arg=0x55) at thread.c:380
Thread 1 (Thread 0x7f0000000740 (LWP 100) "memcached"):
#0  futex_wait (private=0, expected=2, futex_word=0x55 <conn_lock>) at futex-internal.h:146
#1  __GI___lll_lock_wait (futex=futex@entry=0x55 <conn_lock>, private=0) at lowlevellock.c:49
#2  0x00007f in lll_mutex_lock_optimized (mutex=0x55 <conn_lock>) at pthread_mutex_lock.c:48
#3  ___pthread_mutex_lock (mutex=0x55 <conn_lock>) at pthread_mutex_lock.c:93
#4  0x000055 in accept_new_conns (do_accept=do_accept@entry=true) at thread.c:183
#5  0x000055 in maxconns_handler (fd=<optimized out>, which=0, arg=0x0) at memcached.c:140
#6  maxconns_handler (fd=<optimized out>, which=0, arg=0x0) at memcached.c:130
#7  0x000055 in accept_new_conns (do_accept=do_accept@entry=false) at thread.c:184
#8  0x000055 in drive_machine (c=0x55) at memcached.c:3483
#9  0x00007f in event_base_loop () from /lib/libevent-2.1.so.7
#10 0x000055 in main (argc=1, argv=0x7ffe) at memcached.c:5000
VAR allow_new_conns =1
"""

POLLING = """\
Thread 1 (Thread 0x7f0000000740 (LWP 100) "memcached"):
#0  0x00007f in epoll_wait (epfd=4, events=0x5, maxevents=32, timeout=10) at epoll_wait.c:30
#1  0x00007f in ?? () from /lib/libevent-2.1.so.7
#2  0x00007f in event_base_loop () from /lib/libevent-2.1.so.7
#3  0x000055 in main (argc=1, argv=0x7ffe) at memcached.c:6221
Thread 2 (Thread 0x7f0000000700 (LWP 101) "mc-worker"):
#0  0x00007f in epoll_wait (epfd=7, events=0x5, maxevents=32, timeout=-1) at epoll_wait.c:30
VAR allow_new_conns =0
"""

LISTEN = SocketInfo(15, "LISTEN", "127.0.0.1:5000", "0.0.0.0:0")
HELD = SocketInfo(16, "ESTABLISHED", "127.0.0.1:5000", "127.0.0.1:40000")
CLIENT = SocketInfo(17, "ESTABLISHED", "127.0.0.1:5000", "127.0.0.1:40001")


def _evidence(text: str, sockets: list[SocketInfo], held: dict[str, str] | None) -> Evidence:
    return Evidence(
        pid=100,
        stacks=parse_backtraces(text),
        threads=[ThreadState(100, "memcached", "S", "epoll_wait", (), "do_epoll_wait")],
        variables=parse_variables(text),
        sockets=sockets,
        held_stats=held,
        held_local_port=40000,
    )


def test_self_deadlock_names_the_lock_and_the_functions() -> None:
    signature = classify(_evidence(DEADLOCK, [LISTEN, HELD, CLIENT], {"accepting_conns": "0"}))
    assert signature.hang_class == SELF_DEADLOCK and signature.liveness == WORKERS_ALIVE
    assert signature.details["lock"] == "conn_lock"
    assert signature.details["chain"] == [
        "accept_new_conns",
        "maxconns_handler",
        "accept_new_conns",
    ]
    assert signature.bug_key == (
        "self-deadlock:conn_lock:accept_new_conns>maxconns_handler>accept_new_conns"
        "|listener dead, workers alive"
    )
    assert signature.hung_tid == 100
    assert Diagnosis.from_json(signature.to_json()) == signature


def test_the_hung_threads_stack_is_cut_from_the_dump() -> None:
    stack = thread_excerpt(DEADLOCK, 100)
    assert stack.splitlines()[0].startswith("    Thread 1 (Thread")
    assert "accept_new_conns (do_accept=do_accept@entry=true)" in stack
    assert "mc-worker" not in stack and "epoll_wait" not in stack
    assert thread_excerpt(DEADLOCK, 999) == ""


def test_lost_wakeup_needs_no_client_left() -> None:
    quiet = classify(_evidence(POLLING, [LISTEN, HELD], {"accepting_conns": "0"}))
    assert quiet.hang_class == LOST_WAKEUP
    assert quiet.details["allow_new_conns"] == "0"
    busy = classify(_evidence(POLLING, [LISTEN, HELD, CLIENT], {"accepting_conns": "0"}))
    assert busy.hang_class == UNKNOWN  # a client could still close and wake it
    assert busy.details["client_sockets"] == 1


def test_a_single_inlined_repeat_is_not_a_self_deadlock() -> None:
    inlined = DEADLOCK.replace(
        "#7  0x000055 in accept_new_conns (do_accept=do_accept@entry=false) at thread.c:184\n", ""
    )
    signature = classify(_evidence(inlined, [LISTEN], None))
    assert signature.hang_class == UNKNOWN and signature.liveness == FROZEN
    assert signature.details["waiting_on_lock"] is True


def test_unreadable_variables_are_left_out_not_taken_as_values() -> None:
    text = 'VAR allow_new_conns =No symbol "allow_new_conns" in current context.\nVAR x =0\n'
    assert parse_variables(text) == {"x": "0"}


def test_a_server_with_every_descriptor_taken_is_full_not_a_lost_wakeup() -> None:
    base = _evidence(POLLING, [LISTEN, HELD], {"accepting_conns": "0"})
    assert classify(base).hang_class == LOST_WAKEUP
    full = dataclasses.replace(base, fds=FdUsage(open=16, limit=16))
    signature = classify(full)
    assert signature.hang_class == UNKNOWN and "16 of 16" in signature.summary
    assert classify(dataclasses.replace(base, fds=FdUsage(open=16, limit=24))).hang_class == (
        LOST_WAKEUP
    )


def test_the_lost_wakeup_sentence_names_only_what_this_build_has() -> None:
    """1.6.18 has the 10 ms maxconns timer and allow_new_conns; 1.4.5 has neither: its
    sentence must not name the timer, nor print ``?`` for the flag it could not read."""
    modern = dataclasses.replace(
        _evidence(POLLING, [LISTEN, HELD], {"accepting_conns": "0"}),
        build_symbols=frozenset({"maxconns_handler", "allow_new_conns"}),
    )
    assert classify(modern).summary == (
        "listener polls its 10 ms maxconns timer forever: allow_new_conns=0, "
        "accepting_conns=0, no client connection left that could re-enable accepting"
    )
    no_flag = POLLING.replace("VAR allow_new_conns =0\n", "")
    assert "allow_new_conns" not in no_flag
    old = dataclasses.replace(
        _evidence(no_flag, [LISTEN, HELD], {"accepting_conns": "0"}), build_symbols=frozenset()
    )
    signature = classify(old)
    assert signature.hang_class == LOST_WAKEUP
    assert signature.summary == (
        "listener sleeps in its event loop forever with accepting off: accepting_conns=0, "
        "no client connection left that could re-enable accepting"
    )
    assert "allow_new_conns" not in signature.details
    # symbols not looked up: the timer is not named either; no held answer: no accepting_conns
    unknown = classify(_evidence(POLLING, [LISTEN, HELD], None))
    assert unknown.summary == (
        "listener sleeps in its event loop forever with accepting off: allow_new_conns=0, "
        "no client connection left that could re-enable accepting"
    )
    assert all("?" not in d.summary for d in (signature, unknown))


def test_a_server_exit_is_named_by_its_last_fatal_line_not_the_flood_noise() -> None:
    from verifier.evidence.last_words import last_words

    log = (
        "Too many open connections\n"
        "[err] event_queue_remove_active: 0x55cc19887c08 not on queue 8\n"
        "Too many open connections\n"
    )
    assert last_words(log) == "[err] event_queue_remove_active: 0x55cc19887c08 not on queue 8"
    assert last_words("Too many open connections\n" * 3) is None
    assert last_words("Failed to write, and not due to blocking: Broken pipe\n") is None
    assert last_words("memcached: items.c:12: do_item_link: Assertion `x' failed.\n") == (
        "memcached: items.c:12: do_item_link: Assertion `x' failed."
    )
