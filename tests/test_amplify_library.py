"""libamplify.so for real: tiny C programs compiled here, run with the library preloaded."""

from __future__ import annotations

import errno
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from verifier.amplify.counters import (
    AmplifierStatus,
    mute_rules,
    parse_load_bias,
    pause_stretches,
    read_status,
    require_armed,
)
from verifier.amplify.library import build_library, preload_env
from verifier.amplify.spec import (
    InterposeRule,
    LockRule,
    Rule,
    WatchRule,
    encode_rules,
    parse_rules,
    resolve_rules,
    resolve_symbol,
)
from verifier.errors import BadInput, EnvironmentMissing, HarnessError, NotApplicable

DELAY_US = 20_000
DELAY_MS = DELAY_US / 1000

# Same shape as memcached's flag. Prints "key value" lines: milliseconds spent in N stores.
WATCH_C = r"""
#define _GNU_SOURCE
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static volatile bool allow_new_conns = true;
static int n;

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}
static double store_many(bool v, int count) {
    double t0 = now_ms();
    for (int i = 0; i < count; i++) allow_new_conns = v;
    return now_ms() - t0;
}
static void *worker(void *out) {
    *(double *)out = store_many(false, n);
    printf("worker_tid %d\n", gettid());
    return NULL;
}
int main(int argc, char **argv) {
    n = argc > 1 ? atoi(argv[1]) : 5;
    int spin = argc > 2 ? atoi(argv[2]) : 0;
    printf("main_tid %d\n", gettid());
    printf("main_false_ms %.3f\n", store_many(false, n));
    printf("main_true_ms %.3f\n", store_many(true, n));
    if (spin) printf("spin_true_ns %.1f\n", store_many(true, spin) * 1e6 / spin);
    double w = 0;
    pthread_t t;
    pthread_create(&t, NULL, worker, &w);
    pthread_join(t, NULL);
    printf("worker_false_ms %.3f\n", w);
    fflush(stdout);
    if (argc > 3 && !strcmp(argv[3], "fork")) {
        pid_t pid = fork();
        if (pid == 0) {
            printf("child_false_ms %.3f\n", store_many(false, n));
            fflush(stdout);
            _exit(0);
        }
        waitpid(pid, NULL, 0);
    }
    return 0;
}
"""

# accept()/accept4() with a pending connection but no free fd: EMFILE. Optional words:
# "thread" (accept from a worker thread), "pause" (print ready and wait to be killed).
ACCEPT_C = r"""
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static int ls, use4;

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}
static void *accepts(void *arg) {
    (void)arg;
    for (int i = 0; i < 3; i++) {
        double t0 = now_ms();
        int fd = use4 ? accept4(ls, NULL, NULL, SOCK_CLOEXEC) : accept(ls, NULL, NULL);
        int err = errno;
        printf("accept ret=%d errno=%s ms=%.3f\n", fd, strerrorname_np(err), now_ms() - t0);
    }
    return NULL;
}
int main(int argc, char **argv) {
    use4 = !strcmp(argv[1], "accept4");
    int thread = 0, stop = 0;
    for (int i = 2; i < argc; i++) {
        thread |= !strcmp(argv[i], "thread");
        stop |= !strcmp(argv[i], "pause");
    }
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    ls = socket(AF_INET, SOCK_STREAM, 0);
    if (bind(ls, (struct sockaddr *)&a, sizeof a) || listen(ls, 8)) return 2;
    getsockname(ls, (struct sockaddr *)&a, &len);
    int c = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(c, (struct sockaddr *)&a, sizeof a)) return 3;
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = 64;
    setrlimit(RLIMIT_NOFILE, &rl);
    while (dup(ls) >= 0) {
    }
    if (errno != EMFILE) return 4;
    if (thread) {
        pthread_t t;
        pthread_create(&t, NULL, accepts, NULL);
        pthread_join(t, NULL);
    } else {
        accepts(NULL);
    }
    double t0 = now_ms();
    close(c);
    printf("close ms=%.3f\n", now_ms() - t0);
    if (stop) {
        printf("ready\n");
        fflush(stdout);
        pause();
    }
    return 0;
}
"""

# Contention on a global mutex and a heap one, made certain with semaphores: the worker
# posts right before it locks conn_lock (held by main for 5 ms more), then holds the heap
# mutex while main locks it. Marked lines are looked up for the call sites.
LOCK_C = r"""
#define _GNU_SOURCE
#include <pthread.h>
#include <semaphore.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

pthread_mutex_t conn_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t *heap_lock;
static sem_t about_to_lock, holds_heap, main_waits;

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}
/* Contention made certain, not timed: glibc stores 2 in __lock only once a thread waits
 * in the kernel, i.e. after the shim's trylock said EBUSY. */
static void wait_for_waiter(pthread_mutex_t *m) {
    while (__atomic_load_n(&m->__data.__lock, __ATOMIC_ACQUIRE) != 2) usleep(50);
}
static void *worker(void *arg) {
    (void)arg;
    printf("worker_tid %d\n", gettid());
    sem_post(&about_to_lock);
    double t0 = now_ms();
    pthread_mutex_lock(&conn_lock); /* SITE worker_conn */
    printf("worker_conn_ms %.3f\n", now_ms() - t0);
    pthread_mutex_unlock(&conn_lock);
    pthread_mutex_lock(heap_lock);
    sem_post(&holds_heap);
    sem_wait(&main_waits);
    wait_for_waiter(heap_lock);
    usleep(5000);
    pthread_mutex_unlock(heap_lock);
    return NULL;
}
int main(void) {
    heap_lock = malloc(sizeof *heap_lock);
    pthread_mutex_init(heap_lock, NULL);
    sem_init(&about_to_lock, 0, 0);
    sem_init(&holds_heap, 0, 0);
    sem_init(&main_waits, 0, 0);
    printf("main_tid %d\n", gettid());
    double t0 = now_ms();
    pthread_mutex_lock(&conn_lock);
    printf("main_uncontended_ms %.3f\n", now_ms() - t0);
    pthread_t t;
    pthread_create(&t, NULL, worker, NULL);
    sem_wait(&about_to_lock);
    wait_for_waiter(&conn_lock);
    usleep(5000);
    pthread_mutex_unlock(&conn_lock);
    sem_wait(&holds_heap);
    sem_post(&main_waits);
    t0 = now_ms();
    pthread_mutex_lock(heap_lock); /* SITE main_heap */
    printf("main_heap_ms %.3f\n", now_ms() - t0);
    pthread_mutex_unlock(heap_lock);
    pthread_join(t, NULL);
    fflush(stdout);
    return 0;
}
"""

CRASH_C = r"""
#include <stdlib.h>
__attribute__((noinline)) void crash_here(int segv) {
    if (segv) *(volatile int *)0 = 1;
    abort();
}
int main(int argc, char **argv) {
    crash_here(argc > 1 && argv[1][0] == 's');
    return 0;
}
"""


@pytest.fixture(scope="session")
def lib(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_library(tmp_path_factory.mktemp("amplify-cache"))


def compile_c(tmp_path: Path, name: str, source: str, *flags: str) -> Path:
    src = tmp_path / f"{name}.c"
    src.write_text(source)
    out = tmp_path / name
    subprocess.run(
        ["cc", "-O2", "-g", "-pthread", *flags, "-o", str(out), str(src)],
        check=True,
        capture_output=True,
    )
    return out


def run(
    prog: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(prog), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=20,
        stdin=subprocess.DEVNULL,
    )


def values(stdout: str) -> dict[str, float]:
    return {k: float(v) for k, v in re.findall(r"^(\w+) ([-\d.]+)$", stdout, re.MULTILINE)}


def source_line(source: str, marker: str) -> int:
    """1-based line of ``marker`` in a C source above."""
    return next(i for i, line in enumerate(source.splitlines(), 1) if marker in line)


def where(prog: Path, status: AmplifierStatus, pc: int) -> tuple[str, int]:
    """(function, line) of a code address from the status file: addr2line on pc - bias - 1."""
    out = subprocess.run(
        ["addr2line", "-f", "-e", str(prog), f"{pc - status.load_bias - 1:#x}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\n")
    return out[0], int(out[1].rsplit(":", 1)[1].split()[0])


def watch_status(status_file: Path, rules: list[Rule]) -> AmplifierStatus:
    """The status, or a skip (with the reason) after checking the failure is reported."""
    status = read_status(status_file)
    rule = status.rules[0]
    if rule.armed != 1:
        assert rule.armed == -1 and rule.arm_errno > 0
        with pytest.raises(EnvironmentMissing, match="--amplify gdb"):
            require_armed(status, rules)
        pytest.skip(f"hardware watchpoints refused here: {errno.errorcode[rule.arm_errno]}")
    require_armed(status, rules)
    return status


# ---- spec ----


def test_rules_round_trip_and_validate() -> None:
    rules: list[Rule] = [
        WatchRule("allow_new_conns", symoff=0x4C2A0, value=0, every=2, max_triggers=9),
        WatchRule("x", addr=0x7000, length=8, cond="ne", value=-1, thread="any"),
        InterposeRule(("accept", "accept4"), errno_name="EWOULDBLOCK", thread="main"),
        InterposeRule(("close",), ret=None, errno_name=None, when="before", delay_us=7),
        LockRule("conn_lock", symoff=0x48A60, length=40, delay_us=5, thread="main"),
        LockRule(site=0x1234, every=3),
        LockRule(max_triggers=2),
    ]
    text = encode_rules(rules)
    assert text.startswith("watch:sym=allow_new_conns,symoff=0x4c2a0,len=1,cond=eq,value=0,")
    assert "fn=accept|accept4,ret=-1,errno=11," in text
    assert "lock:sym=conn_lock,symoff=0x48a60,len=40,delay_us=5,thread=main;" in text
    assert text.endswith(";lock:sym=any,delay_us=20000,thread=any,max=2")
    assert parse_rules(text) == rules
    assert rules[-1].any_mutex and not rules[-2].any_mutex
    assert rules[1].thread == "all" and rules[2].errno_name == "EAGAIN"
    for bad in (
        lambda: WatchRule("a b"),
        lambda: WatchRule("v", symoff=3, length=2),
        lambda: WatchRule("v", cond="lt"),
        lambda: InterposeRule(("malloc",)),
        lambda: InterposeRule(("close",), when="before"),
        lambda: InterposeRule(("close",), errno_name="ENOPE"),
        lambda: encode_rules([WatchRule("unresolved")]),
        lambda: encode_rules([WatchRule("v", addr=8 * i) for i in range(5)]),
        lambda: parse_rules("watch:symoff=0x10,colour=red"),
        lambda: parse_rules("interpose:ret=-1"),
        lambda: LockRule(symoff=8, addr=16),
        lambda: LockRule(length=0),
        lambda: LockRule(site=0),
        lambda: LockRule(thread="workers"),
        lambda: parse_rules("lock:fn=accept"),
    ):
        with pytest.raises(BadInput):
            bad()


def test_resolve_symbol(tmp_path: Path) -> None:
    prog = compile_c(tmp_path, "watch", WATCH_C)
    symoff = resolve_symbol(prog, "allow_new_conns")
    assert symoff is not None and symoff > 0
    assert resolve_symbol(prog, "no_such_symbol") is None
    (rule,) = resolve_rules([WatchRule("allow_new_conns")], prog)
    assert isinstance(rule, WatchRule) and rule.symoff == symoff
    with pytest.raises(NotApplicable):
        resolve_rules([WatchRule("no_such_symbol")], prog)


def test_library_is_built_once(tmp_path: Path) -> None:
    first = build_library(tmp_path)
    mtime = first.stat().st_mtime_ns
    assert build_library(tmp_path) == first and first.stat().st_mtime_ns == mtime
    assert [p.name for p in tmp_path.glob("*.so")] == [first.name]  # no temp files left


# ---- no rules / bad rules ----


def test_no_rules_leaves_the_program_alone(lib: Path, tmp_path: Path) -> None:
    prog = compile_c(tmp_path, "watch", WATCH_C)
    status_file = tmp_path / "status"
    result = run(prog, env=preload_env(lib, [], status_file))
    assert result.returncode == 0 and result.stderr == ""
    v = values(result.stdout)
    assert v["main_false_ms"] < DELAY_MS and v["worker_false_ms"] < DELAY_MS
    status = read_status(status_file)
    assert status.rules == () and status.config_error == 0 and status.crash_signal == 0
    # and with no amplifier variable at all
    result = run(prog, env={**os.environ, "LD_PRELOAD": str(lib)})
    assert result.returncode == 0 and result.stderr == ""


def test_malformed_rules_disable_all_rules(lib: Path, tmp_path: Path) -> None:
    prog = compile_c(tmp_path, "watch", WATCH_C)
    status_file = tmp_path / "status"
    env = preload_env(lib, [], status_file)
    symoff = resolve_symbol(prog, "allow_new_conns")
    assert symoff is not None
    env["VERIFIER_AMPLIFY"] = f"watch:symoff={symoff:#x},delay_us={DELAY_US};watch:bogus=1"
    result = run(prog, env=env)
    assert result.returncode == 0
    assert "amplify: bad rule 2 (watch:bogus=1): unknown key" in result.stderr
    assert values(result.stdout)["main_false_ms"] < DELAY_MS  # rule 1 not active either
    status = read_status(status_file)
    assert status.config_error == 2 and status.rules == ()
    with pytest.raises(HarnessError, match="unknown key"):
        require_armed(status)


# ---- watch ----


@pytest.mark.parametrize("pie", [True, False], ids=["pie", "no-pie"])
def test_watch_delays_matching_stores_on_main_thread_only(
    lib: Path, tmp_path: Path, pie: bool
) -> None:
    flags = ("-fPIE", "-pie") if pie else ("-fno-pie", "-no-pie")
    prog = compile_c(tmp_path, "watch", WATCH_C, *flags)
    rules = resolve_rules([WatchRule("allow_new_conns", value=0, delay_us=DELAY_US)], prog)
    status_file = tmp_path / "status"
    before_ns = time.monotonic_ns()
    result = run(prog, "5", "2000", env=preload_env(lib, rules, status_file))
    after_ns = time.monotonic_ns()
    assert result.returncode == 0, result.stderr
    status = watch_status(status_file, rules)
    v = values(result.stdout)
    assert v["main_false_ms"] >= 5 * DELAY_MS * 0.95  # every store of 0 slept
    assert v["main_true_ms"] < DELAY_MS  # stores of 1 trapped but did not sleep
    assert v["worker_false_ms"] < DELAY_MS  # the worker is not watched
    assert v["spin_true_ns"] < 200_000  # cost of one trapped, non-matching store
    assert (status.load_bias != 0) == pie
    (rule,) = status.rules
    assert (rule.kind, rule.events, rule.matches, rule.triggers) == ("watch", 2010, 5, 5)
    assert rule.main_triggers == 5 and rule.last_tid == v["main_tid"] == status.main_tid
    assert rule.slept_ns >= 5 * DELAY_US * 1000 * 0.95
    # the last trigger is named: when (CLOCK_MONOTONIC, as time.monotonic_ns), where (the
    # trapping RIP: the store's line), and the same on the main thread
    assert before_ns < rule.first_ns < rule.last_ns < after_ns
    assert rule.last_ns - rule.first_ns >= 4 * DELAY_US * 1000 * 0.95
    assert (rule.main_last_ns, rule.main_last_pc) == (rule.last_ns, rule.last_pc)
    function, line = where(prog, status, rule.last_pc)
    assert function == "store_many" or function.startswith("main")
    assert line == source_line(WATCH_C, "allow_new_conns = v;")


def test_watch_all_threads_every_and_max(lib: Path, tmp_path: Path) -> None:
    prog = compile_c(tmp_path, "watch", WATCH_C)
    rules = resolve_rules(
        [
            WatchRule("allow_new_conns", delay_us=DELAY_US, thread="all"),
            WatchRule("allow_new_conns", cond="ne", delay_us=0, every=2, max_triggers=1),
        ],
        prog,
    )
    status_file = tmp_path / "status"
    result = run(prog, "4", env=preload_env(lib, rules, status_file))
    assert result.returncode == 0, result.stderr
    status = watch_status(status_file, rules)
    v = values(result.stdout)
    assert v["main_false_ms"] >= 4 * DELAY_MS * 0.95
    assert v["worker_false_ms"] >= 4 * DELAY_MS * 0.95  # created after arming: inherited
    all_threads, every = status.rules
    assert (all_threads.events, all_threads.matches, all_threads.triggers) == (12, 8, 8)
    assert all_threads.main_triggers == 4 and all_threads.last_tid == v["worker_tid"]
    assert 0 < all_threads.main_last_ns < all_threads.last_ns  # the worker stored last
    # thread=main: 8 stores on main, 4 of them != 0, every 2nd -> 2, capped at 1
    assert (every.events, every.matches, every.triggers) == (8, 4, 1)


def test_watch_rearmed_in_forked_child(lib: Path, tmp_path: Path) -> None:
    prog = compile_c(tmp_path, "watch", WATCH_C)
    rules = resolve_rules([WatchRule("allow_new_conns", delay_us=DELAY_US)], prog)
    status_file = tmp_path / "status"
    result = run(prog, "3", "0", "fork", env=preload_env(lib, rules, status_file))
    assert result.returncode == 0, result.stderr
    status = watch_status(status_file, rules)
    assert values(result.stdout)["child_false_ms"] >= 3 * DELAY_MS * 0.95
    assert status.rules[0].triggers == 6  # counters are shared with the parent


def test_rules_skip_a_wrapper_when_the_target_is_named(lib: Path, tmp_path: Path) -> None:
    prog = compile_c(tmp_path, "watch", WATCH_C)
    rules = resolve_rules([WatchRule("allow_new_conns", delay_us=DELAY_US)], prog)
    status_file = tmp_path / "status"
    env = preload_env(lib, rules, status_file, target=prog)
    result = subprocess.run(
        ["sh", "-c", f"exec {prog} 2"], env=env, capture_output=True, text=True, timeout=20
    )
    assert result.returncode == 0, result.stderr
    status = watch_status(status_file, rules)
    assert values(result.stdout)["main_false_ms"] >= 2 * DELAY_MS * 0.95
    assert status.pid == values(result.stdout)["main_tid"] and status.rules[0].triggers == 2


def test_watch_arm_failure_is_reported(lib: Path, tmp_path: Path) -> None:
    prog = compile_c(tmp_path, "watch", WATCH_C)
    # A kernel address: perf_event_open refuses a user-only breakpoint there (EINVAL).
    rules: list[Rule] = [WatchRule("kernel_thing", addr=0xFFFFFFFF81000000, delay_us=DELAY_US)]
    status_file = tmp_path / "status"
    result = run(prog, "2", env=preload_env(lib, rules, status_file))
    assert result.returncode == 0
    assert "amplify: watch rule 1 not armed: perf_event_open:" in result.stderr
    (rule,) = read_status(status_file).rules
    assert rule.armed == -1 and rule.arm_errno > 0 and rule.events == 0
    with pytest.raises(EnvironmentMissing, match=r"kernel_thing not armed.*--amplify gdb"):
        require_armed(read_status(status_file), rules)


# ---- interpose ----


def accept_results(stdout: str) -> list[tuple[int, str, float]]:
    found = re.findall(r"^accept ret=(-?\d+) errno=(\w+) ms=([\d.]+)$", stdout, re.MULTILINE)
    return [(int(r), e, float(ms)) for r, e, ms in found]


@pytest.mark.parametrize("fn", ["accept", "accept4"])
def test_interpose_delays_emfile_and_keeps_errno(lib: Path, tmp_path: Path, fn: str) -> None:
    prog = compile_c(tmp_path, "accept", ACCEPT_C)
    rules: list[Rule] = [
        InterposeRule(("accept", "accept4"), ret=-1, errno_name="EMFILE", delay_us=DELAY_US),
        InterposeRule(("accept", "accept4"), ret=-1, errno_name="EAGAIN", delay_us=DELAY_US),
    ]
    status_file = tmp_path / "status"
    result = run(prog, fn, env=preload_env(lib, rules, status_file))
    assert result.returncode == 0, result.stderr
    calls = accept_results(result.stdout)
    assert len(calls) == 3
    for ret, err, ms in calls:
        assert (ret, err) == (-1, "EMFILE") and DELAY_MS * 0.95 <= ms < 10 * DELAY_MS
    status = read_status(status_file)
    require_armed(status, rules)
    emfile, eagain = status.rules
    assert (emfile.events, emfile.matches, emfile.triggers, emfile.main_triggers) == (3, 3, 3, 3)
    assert (eagain.events, eagain.matches, eagain.triggers) == (3, 0, 0)
    function, line = where(prog, status, emfile.last_pc)  # the return address: the call
    assert function == "accepts" or function.startswith("main")
    assert line == source_line(ACCEPT_C, "int fd = use4 ?")
    assert eagain.last_ns == 0 and eagain.last_pc == 0  # never triggered
    # every failure of a wrapped call is counted per (function, errno, thread kind)
    assert [(f.function, f.errno_name, f.main, f.count) for f in status.failures] == [
        (fn, "EMFILE", True, 3)
    ]
    assert status.failures[0].last_pc == emfile.last_pc


def test_interpose_thread_main_skips_workers(lib: Path, tmp_path: Path) -> None:
    prog = compile_c(tmp_path, "accept", ACCEPT_C)
    rules: list[Rule] = [InterposeRule(("accept",), delay_us=DELAY_US, thread="main")]
    status_file = tmp_path / "status"
    result = run(prog, "accept", "thread", env=preload_env(lib, rules, status_file))
    assert result.returncode == 0, result.stderr
    calls = accept_results(result.stdout)
    assert len(calls) == 3
    assert all(ms < DELAY_MS and err == "EMFILE" for _, err, ms in calls)
    status = read_status(status_file)
    assert status.rules[0].events == 0
    # the failures are still counted, on a thread that is not the main one
    assert [(f.function, f.errno_name, f.main, f.count) for f in status.failures] == [
        ("accept", "EMFILE", False, 3)
    ]


def test_interpose_before_and_status_survives_sigkill(lib: Path, tmp_path: Path) -> None:
    prog = compile_c(tmp_path, "accept", ACCEPT_C)
    rules: list[Rule] = [
        InterposeRule(("accept",), every=2, delay_us=DELAY_US),
        InterposeRule(("close",), ret=None, errno_name=None, when="before", delay_us=DELAY_US),
    ]
    status_file = tmp_path / "status"
    proc = subprocess.Popen(
        [str(prog), "accept", "pause"],
        env=preload_env(lib, rules, status_file),
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        lines = []
        while (line := proc.stdout.readline()) and line != "ready\n":
            lines.append(line)
        assert line == "ready\n"
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=10) == -signal.SIGKILL
    finally:
        proc.kill()
        proc.wait()
    slept = [ms >= DELAY_MS * 0.95 for _, _, ms in accept_results("".join(lines))]
    assert slept == [False, True, False]  # every=2
    assert float(re.findall(r"close ms=([\d.]+)", "".join(lines))[0]) >= DELAY_MS * 0.95
    status = read_status(status_file)
    assert status.pid == proc.pid
    accept_rule, close_rule = status.rules
    assert (accept_rule.events, accept_rule.matches, accept_rule.triggers) == (3, 3, 1)
    assert (close_rule.events, close_rule.triggers) == (1, 1)


def test_failure_histogram_counts_every_errno(lib: Path, tmp_path: Path) -> None:
    """Discovery's probe: ret=-1, errno=any, no delay; close() on a bad fd fails with EBADF."""
    prog = compile_c(tmp_path, "accept", ACCEPT_C)
    rules: list[Rule] = [
        InterposeRule(("accept", "accept4", "close"), ret=-1, errno_name=None, delay_us=0)
    ]
    status_file = tmp_path / "status"
    env = preload_env(lib, rules, status_file)
    result = run(prog, "accept4", env=env)
    assert result.returncode == 0, result.stderr
    status = read_status(status_file)
    (rule,) = status.rules
    assert rule.triggers == rule.matches == 3 and rule.slept_ns < DELAY_US * 1000
    counts = {(f.function, f.errno_name, f.main): f.count for f in status.failures}
    assert counts == {("accept4", "EMFILE", True): 3}  # close() succeeded
    assert status.failures_dropped == 0


# ---- lock ----


@pytest.fixture
def lock_prog(tmp_path: Path) -> Path:
    return compile_c(tmp_path, "lock", LOCK_C)


def lock_values(lib: Path, prog: Path, rules: list[Rule], status_file: Path) -> dict[str, float]:
    result = run(prog, env=preload_env(lib, rules, status_file))
    assert result.returncode == 0, result.stderr
    return values(result.stdout)


def test_lock_probe_counts_contended_acquisitions(
    lib: Path, lock_prog: Path, tmp_path: Path
) -> None:
    """Any mutex, no delay: the discovery probe. Two contended acquisitions, named."""
    status_file = tmp_path / "status"
    v = lock_values(lib, lock_prog, [LockRule(delay_us=0)], status_file)
    status = read_status(status_file)
    require_armed(status, [LockRule(delay_us=0)])
    (rule,) = status.rules
    assert rule.kind == "lock" and (rule.events, rule.matches, rule.triggers) == (2, 2, 2)
    conn_off = resolve_symbol(lock_prog, "conn_lock")
    assert conn_off is not None
    by_mutex = {m.mutex - status.load_bias == conn_off: m for m in status.mutexes}
    assert len(status.mutexes) == 2 and set(by_mutex) == {True, False}
    conn, heap = by_mutex[True], by_mutex[False]
    assert (conn.contended, conn.main_contended, heap.contended, heap.main_contended) == (
        1,
        0,
        1,
        1,
    )
    assert conn.wait_ns >= 4_000_000  # main held it 5 ms after the worker's trylock failed
    assert where(lock_prog, status, conn.site)[1] == source_line(LOCK_C, "SITE worker_conn")
    assert where(lock_prog, status, heap.site)[1] == source_line(LOCK_C, "SITE main_heap")
    assert status.lock_calls >= 4 and status.lock_contended == 2
    assert v["main_uncontended_ms"] < DELAY_MS


def test_lock_rule_sleeps_after_a_contended_acquisition_of_its_mutex(
    lib: Path, lock_prog: Path, tmp_path: Path
) -> None:
    conn_off = resolve_symbol(lock_prog, "conn_lock")
    assert conn_off is not None
    rules: list[Rule] = [LockRule("conn_lock", symoff=conn_off, length=40, delay_us=DELAY_US)]
    status_file = tmp_path / "status"
    v = lock_values(lib, lock_prog, rules, status_file)
    assert v["worker_conn_ms"] >= 5 * 0.9 + DELAY_MS * 0.95  # waited, then slept holding it
    assert v["main_uncontended_ms"] < DELAY_MS  # uncontended: no sleep
    assert v["main_heap_ms"] < DELAY_MS  # contended, but another mutex
    status = read_status(status_file)
    (rule,) = status.rules
    assert (rule.events, rule.matches, rule.triggers, rule.main_triggers) == (2, 1, 1, 0)
    assert rule.last_tid == v["worker_tid"] and rule.main_last_ns == 0
    assert where(lock_prog, status, rule.last_pc)[1] == source_line(LOCK_C, "SITE worker_conn")
    # thread=main: the worker's acquisition is not seen; main's (of the heap mutex) is
    main_only: list[Rule] = [LockRule("conn_lock", symoff=conn_off, length=40, thread="main")]
    lock_values(lib, lock_prog, main_only, status_file)
    (rule,) = read_status(status_file).rules
    assert (rule.events, rule.matches, rule.triggers) == (1, 0, 0)


def test_lock_rule_by_call_site_for_a_heap_mutex(
    lib: Path, lock_prog: Path, tmp_path: Path
) -> None:
    """A heap mutex has no stable address: the rule matches the call site instead."""
    status_file = tmp_path / "status"
    lock_values(lib, lock_prog, [LockRule(delay_us=0)], status_file)
    probe = read_status(status_file)
    conn_off = resolve_symbol(lock_prog, "conn_lock")
    (heap,) = [m for m in probe.mutexes if m.mutex - probe.load_bias != conn_off]
    site = heap.site - probe.load_bias  # an offset: valid in the next run despite ASLR
    rules: list[Rule] = [LockRule(site=site, delay_us=DELAY_US)]
    v = lock_values(lib, lock_prog, rules, status_file)
    assert v["main_heap_ms"] >= DELAY_MS * 0.95
    assert v["worker_conn_ms"] < 5 + DELAY_MS * 0.9  # the worker's site does not match
    (rule,) = read_status(status_file).rules
    assert (rule.matches, rule.triggers, rule.main_triggers) == (1, 1, 1)


# ---- crash reporter ----


@pytest.mark.parametrize(
    ("pie", "how", "sig"),
    [(True, "abort", signal.SIGABRT), (False, "segv", signal.SIGSEGV)],
    ids=["pie-abort", "no-pie-segv"],
)
def test_crash_reporter(
    lib: Path, tmp_path: Path, pie: bool, how: str, sig: signal.Signals
) -> None:
    flags = ("-fPIE", "-pie") if pie else ("-fno-pie", "-no-pie")
    prog = compile_c(tmp_path, "crash", CRASH_C, *flags)
    status_file = tmp_path / "status"
    result = run(prog, how, env=preload_env(lib, [], status_file))
    assert result.returncode == -sig  # still dies by the signal
    assert f"amplify: fatal signal {int(sig)} ({sig.name[3:]})" in result.stderr
    assert "amplify: end of backtrace" in result.stderr
    bias = parse_load_bias(result.stderr)
    assert bias is not None and (bias != 0) == pie
    assert read_status(status_file).crash_signal == sig
    # The bias turns backtrace addresses into addr2line input for the executable.
    frame_re = rf"^{re.escape(str(prog))}.*\[(0x[0-9a-f]+)\]$"
    addresses = [int(a, 16) for a in re.findall(frame_re, result.stderr, re.MULTILINE)]
    assert addresses
    symbolised = subprocess.run(
        ["addr2line", "-f", "-e", str(prog), *(f"{a - bias - 1:#x}" for a in addresses)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "crash_here" in symbolised and "main" in symbolised


# One accept() per line read on stdin, with the descriptor table full (EMFILE).
ACCEPT_ON_DEMAND_C = r"""
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}
int main(void) {
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int ls = socket(AF_INET, SOCK_STREAM, 0);
    if (bind(ls, (struct sockaddr *)&a, sizeof a) || listen(ls, 8)) return 2;
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = 64;
    setrlimit(RLIMIT_NOFILE, &rl);
    while (dup(ls) >= 0) {
    }
    char line[16];
    while (fgets(line, sizeof line, stdin)) {
        double t0 = now_ms();
        int fd = accept(ls, NULL, NULL);
        printf("accept ret=%d errno=%s ms=%.3f\n", fd, strerrorname_np(errno), now_ms() - t0);
        fflush(stdout);
    }
    return 0;
}
"""


def test_paused_stretches_count_matches_and_do_not_sleep(lib: Path, tmp_path: Path) -> None:
    """The harness pauses the stretches while it judges a failed probe (a stall the
    stretches made must drain): matches go on being counted, nothing sleeps; resumed,
    the rule sleeps again."""
    prog = compile_c(tmp_path, "accept_on_demand", ACCEPT_ON_DEMAND_C)
    rules: list[Rule] = [InterposeRule(("accept",), ret=-1, errno_name="EMFILE", delay_us=DELAY_US)]
    status_file = tmp_path / "status"
    proc = subprocess.Popen(
        [str(prog)],
        env=preload_env(lib, rules, status_file),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdin is not None and proc.stdout is not None

    def accept_once() -> float:
        proc.stdin.write("go\n")  # type: ignore[union-attr]
        proc.stdin.flush()  # type: ignore[union-attr]
        ((ret, err, ms),) = accept_results(proc.stdout.readline())  # type: ignore[union-attr]
        assert (ret, err) == (-1, "EMFILE")
        return ms

    try:
        assert accept_once() >= DELAY_MS * 0.95
        pause_stretches(status_file, True)
        paused = [accept_once() for _ in range(3)]
        assert max(paused) < DELAY_MS / 2, paused
        pause_stretches(status_file, False)
        assert accept_once() >= DELAY_MS * 0.95
    finally:
        proc.stdin.close()
        assert proc.wait(timeout=10) == 0
    (rule,) = read_status(status_file).rules
    assert (rule.matches, rule.paused_matches, rule.triggers) == (5, 3, 2)


def test_a_rule_starts_muted_and_is_switched_in_the_live_process(lib: Path, tmp_path: Path) -> None:
    """Auto's sweep: every rule starts muted (``preload_env(muted=...)``) and the harness
    unmutes one hypothesis at a time through the status file (``mute_rules``), with no
    restart. A muted rule counts its matches (as paused ones) and never sleeps."""
    prog = compile_c(tmp_path, "accept_on_demand", ACCEPT_ON_DEMAND_C)
    rules: list[Rule] = [
        InterposeRule(("accept",), ret=-1, errno_name="EMFILE", delay_us=DELAY_US),
        InterposeRule(("accept",), ret=-1, errno_name="EMFILE", delay_us=DELAY_US),
    ]
    status_file = tmp_path / "status"
    proc = subprocess.Popen(
        [str(prog)],
        env=preload_env(lib, rules, status_file, muted=[0, 1]),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdin is not None and proc.stdout is not None

    def accept_once() -> float:
        proc.stdin.write("go\n")  # type: ignore[union-attr]
        proc.stdin.flush()  # type: ignore[union-attr]
        ((ret, err, ms),) = accept_results(proc.stdout.readline())  # type: ignore[union-attr]
        assert (ret, err) == (-1, "EMFILE")
        return ms

    try:
        assert accept_once() < DELAY_MS / 2  # both muted from the start
        mute_rules(status_file, [False, True])
        assert DELAY_MS * 0.95 <= accept_once() < DELAY_MS * 1.9  # one rule sleeps
        mute_rules(status_file, [True, True])
        assert accept_once() < DELAY_MS / 2
    finally:
        proc.stdin.close()
        assert proc.wait(timeout=10) == 0
    first, second = read_status(status_file).rules
    assert (first.matches, first.paused_matches, first.triggers) == (3, 2, 1)
    assert (second.matches, second.paused_matches, second.triggers) == (3, 3, 0)
