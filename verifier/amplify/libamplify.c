/*
 * libamplify: a generic LD_PRELOAD race amplifier, configured only by data.
 *
 * Build: cc -shared -fPIC -O2 -pthread -o libamplify.so libamplify.c -ldl
 *
 * VERIFIER_AMPLIFY holds ';'-separated rules "kind:key=value,key=value,...":
 *
 *   watch:symoff=N|addr=N,len=1|2|4|8,cond=eq|ne|any,value=N,delay_us=N,
 *         thread=main|all,every=N,max=N,sym=NAME
 *     A hardware write watchpoint (perf_event_open, PERF_TYPE_BREAKPOINT,
 *     sigtrap=1) on one variable. symoff is the symbol's st_value in the main
 *     executable (the load bias is added here); addr is absolute. After each
 *     store by a watched thread, SIGTRAP arrives; when the stored value meets
 *     cond/value, the storing thread sleeps delay_us. thread=main watches the
 *     thread that loads the library (the main thread); thread=all also every
 *     thread it creates afterwards (inherit + inherit_thread). At most 4.
 *     Rules on the same (address, len) share one event (and debug register);
 *     overlapping but different ranges may lose a trap (SIGTRAPs merge).
 *
 *   interpose:fn=NAME|NAME...,ret=N|any,errno=NAME|N|any,delay_us=N,
 *             when=after|before,thread=main|any,every=N,max=N
 *     Wraps libc functions from FUNCTIONS below. when=after (default): call
 *     the real function, then sleep when its result (and errno) match.
 *     when=before: sleep before every call (ret/errno must be any).
 *     pthread_mutex_lock returns an error number instead of -1 and errno:
 *     its errno= matches that number (ret= the same).
 *
 *   lock:symoff=N|addr=N,len=N,site=N,delay_us=N,thread=main|any,every=N,
 *        max=N,sym=NAME
 *     Wraps pthread_mutex_lock with a trylock-first probe: trylock, and only
 *     when that says EBUSY (the acquisition is contended) the real lock,
 *     timed. Right after a contended acquisition that matches, the new owner
 *     sleeps delay_us holding the mutex. A mutex matches when it lies in
 *     [symoff + load bias, +len) (or [addr, +len)); with neither, any mutex.
 *     site=N (code offset in the main executable of the return address, as
 *     in the status file's pc minus the load bias) also requires that call
 *     site (for mutexes on the heap). len defaults to 1.
 *
 *   Numbers are decimal or 0x-hex, optionally negative. every=N sleeps on
 *   every Nth match only; max=N stops after N sleeps (0 = no limit). sym= is
 *   a label only. Defaults: len=1 cond=eq value=0 delay_us=0 thread=main
 *   (watch) / any (interpose, lock) ret=any errno=any when=after every=1 max=0.
 *
 * A malformed rule disables ALL rules (never a partial set): one line
 * "amplify: bad rule ..." goes to stderr and the status file records it. The
 * Python side (verifier/amplify/spec.py) validates before launching.
 *
 * VERIFIER_AMPLIFY_STATUS=/path: a fixed binary struct (amp_status below,
 * read by counters.py) mmapped MAP_SHARED in the constructor, so it stays
 * valid after SIGKILL and after a later setuid. Besides the per-rule counters
 * it records, for naming the point that was stretched last before a hang,
 * each rule's last trigger (CLOCK_MONOTONIC ns, tid, code address: the
 * trapping RIP for a watch, the return address for a wrapped call), and two
 * tables for discovery: failures (ret -1, or an error number from
 * pthread_mutex_lock) of every wrapped call that has a rule, per (function,
 * errno, main thread or not); and contended mutex acquisitions per (mutex,
 * call site) while any lock rule is active. Both tables are lock-free
 * open-addressing hash tables; a full table counts what it drops.
 *
 * VERIFIER_AMPLIFY_EXE=/path (optional): the rules belong to that executable
 * only (same inode as /proc/self/exe); other processes, e.g. a wrapper that
 * execs it, leave all three variables in place. The process that takes the
 * rules removes the variables, so the programs it execs do not reuse them.
 *
 * Always on, with or without rules: a crash reporter for SIGSEGV, SIGBUS,
 * SIGABRT, SIGFPE and SIGILL (skipped for a signal that already has a
 * handler). It prints "amplify: load-bias 0x..." and a backtrace to stderr,
 * then re-raises with SIG_DFL so the process still dies by that signal.
 *
 * Limits: a program that installs its own SIGTRAP handler disables the
 * watches; interposition sees only calls made through the PLT (not libc's
 * internal calls, not _FORTIFY_SOURCE's __read_chk/__recv_chk/__poll_chk);
 * each watched address keeps one (close-on-exec) fd open; the alternate signal
 * stack exists on the main thread only. After fork() the child re-arms the
 * watches for itself; counters are shared with the parent.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <sys/prctl.h>
#include <errno.h>
#include <execinfo.h>
#include <fcntl.h>
#include <link.h>
#include <linux/hw_breakpoint.h>
#include <linux/perf_event.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>

#ifndef TRAP_PERF
#define TRAP_PERF 6
#endif

#define AMP_MAX_RULES 16
#define AMP_MAX_WATCH 4
#define AMP_STATUS_VERSION 3
#define AMP_FAIL_SLOTS 64
#define AMP_MUTEX_SLOTS 256

enum { KIND_NONE = 0, KIND_WATCH = 1, KIND_INTERPOSE = 2, KIND_LOCK = 3 };
enum { COND_EQ, COND_NE, COND_ANY };

/* The interposable functions: index = bit in a rule's function mask. */
enum {
    FN_ACCEPT, FN_ACCEPT4, FN_CLOSE, FN_READ, FN_WRITE, FN_RECV, FN_SEND,
    FN_CONNECT, FN_EPOLL_WAIT, FN_POLL, FN_PTHREAD_MUTEX_LOCK, FN_EPOLL_CTL, FN_COUNT
};
static const char *const fn_names[FN_COUNT] = {
    "accept", "accept4", "close", "read", "write", "recv", "send",
    "connect", "epoll_wait", "poll", "pthread_mutex_lock", "epoll_ctl",
};

/* ---- status file layout (mirrored by counters.py; change both) ---- */
struct amp_rule_status {        /* 128 bytes */
    uint32_t kind;              /* KIND_* */
    int32_t armed;              /* 1 armed, -1 arming failed, 0 not attempted */
    int32_t arm_errno;          /* errno of the failed perf_event_open / dlsym */
    uint32_t muted;             /* written by the harness: this rule does not stretch */
    uint64_t events;            /* watch: stores trapped; interpose/lock: calls seen */
    uint64_t matches;           /* events whose value / result matched */
    uint64_t triggers;          /* matches that slept (after every/max) */
    uint64_t main_triggers;     /* triggers on the main thread */
    uint64_t slept_ns;          /* total time slept */
    int64_t last_tid;           /* thread id of the latest trigger */
    uint64_t last_ns;           /* CLOCK_MONOTONIC when the latest trigger began */
    uint64_t last_pc;           /* its code address (absolute) */
    uint64_t main_last_ns;      /* the same for the latest trigger on the main thread */
    uint64_t main_last_pc;
    uint64_t first_ns;          /* CLOCK_MONOTONIC of the first trigger */
    uint64_t paused_matches;    /* matches while paused: counted, not toward every=N */
    uint64_t reserved2[2];
};
struct amp_fail_slot {          /* 32 bytes; key 0 = empty */
    uint32_t key;               /* 1 + (fn << 16 | errno << 1 | main) */
    uint32_t reserved;
    uint64_t count;
    uint64_t last_pc;           /* return address of the latest such failure */
    uint64_t last_ns;
};
struct amp_mutex_slot {         /* 48 bytes; mutex 0 = empty */
    uint64_t mutex;             /* address of the pthread_mutex_t */
    uint64_t site;              /* return address of the contended pthread_mutex_lock */
    uint64_t contended;         /* contended acquisitions (trylock said EBUSY) */
    uint64_t main_contended;    /* of them on the main thread */
    uint64_t wait_ns;           /* total time spent waiting in them */
    uint64_t reserved;
};
struct amp_tables {             /* 64 + 64 * 32 + 256 * 48 = 14400 bytes */
    uint32_t fail_slots, mutex_slots;
    uint64_t fail_dropped;      /* failures not counted: table full */
    uint64_t mutex_dropped;
    uint64_t lock_calls;        /* pthread_mutex_lock calls seen by the lock probe */
    uint64_t lock_contended;
    uint64_t reserved[3];
    struct amp_fail_slot fail[AMP_FAIL_SLOTS];
    struct amp_mutex_slot mutex[AMP_MUTEX_SLOTS];
};
struct amp_status {             /* 256 + 16 * 128 + 14400 = 16704 bytes */
    char magic[8];              /* "AMPLIFY\0", written last */
    uint32_t version;
    uint32_t size;              /* sizeof(struct amp_status) */
    int32_t pid;                /* process that armed the rules last */
    int32_t main_tid;
    int32_t config_error;       /* 0 ok, else 1-based index of the bad rule */
    uint32_t nrules;
    uint64_t load_bias;         /* of the main executable */
    int32_t crash_signal;       /* signal caught by the crash reporter, or 0 */
    uint32_t paused;            /* written by the harness: no stretch while nonzero */
    char message[208];          /* config error text, NUL-terminated */
    struct amp_rule_status rules[AMP_MAX_RULES];
    struct amp_tables tables;
};

struct rule {
    int kind;
    /* watch; lock: the mutex range [addr, addr + len), addr 0 = any */
    uint64_t addr;              /* absolute address (bias already added) */
    int len, cond, all_threads;
    uint64_t value;
    int fd;
    unsigned owner;             /* rule whose perf event serves this one */
    /* interpose */
    uint32_t fns;               /* mask of FN_* */
    int any_ret, any_errno, before, main_only;
    long long ret;
    int err;
    /* lock */
    uint64_t site;              /* absolute return address to match; 0 = any */
    /* common */
    long delay_us;
    uint64_t every, max, nmatch, ntaken;
};

_Static_assert(sizeof(struct amp_rule_status) == 128, "layout");
_Static_assert(sizeof(struct amp_fail_slot) == 32, "layout");
_Static_assert(sizeof(struct amp_mutex_slot) == 48, "layout");
_Static_assert(sizeof(struct amp_status) == 16704, "layout");

static struct rule g_rules[AMP_MAX_RULES];
static unsigned g_nrules;
static struct amp_status g_mem_status;          /* used when no status file */
static struct amp_status *g_st = &g_mem_status;
static uint32_t g_fn_rules[FN_COUNT];           /* per function: mask of rules */
static uint32_t g_lock_rules;                   /* mask of lock rules */
static void *g_fn_real[FN_COUNT];
static int (*g_trylock)(pthread_mutex_t *);
static uint64_t g_load_bias;
static struct sigaction g_old_trap;
static __thread int t_is_main __attribute__((tls_model("initial-exec")));

/* ---- async-signal-safe helpers ---- */
static long gettid_(void) { return syscall(SYS_gettid); }

static void put(const char *s) {
    size_t n = strlen(s);
    while (n > 0) {
        ssize_t w = syscall(SYS_write, 2, s, n);   /* not our write() wrapper */
        if (w <= 0) return;
        s += w;
        n -= (size_t)w;
    }
}

static void put_num(unsigned long long v, int base) {
    char buf[24];
    int i = sizeof buf;
    buf[--i] = 0;
    do {
        buf[--i] = "0123456789abcdef"[v % base];
        v /= base;
    } while (v && i > 0);
    put(buf + i);
}

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

#define ADD(field, n) __atomic_add_fetch(&(field), (n), __ATOMIC_RELAXED)

/* Count a match; decide whether it sleeps (every / max). While the harness has
 * paused stretching (a probe failed: is it a hang, or a stall the stretches made?),
 * matches are counted and nothing sleeps, so a stall of our own making drains. */
static int take(struct rule *r, struct amp_rule_status *s) {
    ADD(s->matches, 1);
    if (__atomic_load_n(&g_st->paused, __ATOMIC_RELAXED) ||
        __atomic_load_n(&s->muted, __ATOMIC_RELAXED)) {
        ADD(s->paused_matches, 1);
        return 0;
    }
    uint64_t m = ADD(r->nmatch, 1);
    if (r->every > 1 && m % r->every != 0) return 0;
    if (r->max && ADD(r->ntaken, 1) > r->max) return 0;
    return 1;
}

#define STORE(field, v) __atomic_store_n(&(field), (v), __ATOMIC_RELAXED)

/* Record the trigger (when, who, where: pc), then sleep delay_us (through
 * EINTR); errno preserved. The last_* fields of one trigger are stored one by
 * one: two threads triggering the same rule at once may mix them. */
static void trigger(struct rule *r, struct amp_rule_status *s, uint64_t pc) {
    int saved = errno;
    uint64_t t0 = now_ns();
    uint64_t zero = 0;
    __atomic_compare_exchange_n(&s->first_ns, &zero, t0, 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
    STORE(s->last_ns, t0);
    STORE(s->last_pc, pc);
    STORE(s->last_tid, (int64_t)gettid_());
    if (t_is_main) {
        STORE(s->main_last_ns, t0);
        STORE(s->main_last_pc, pc);
    }
    struct timespec ts = {r->delay_us / 1000000, (r->delay_us % 1000000) * 1000};
    while (r->delay_us > 0 && nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
    ADD(s->triggers, 1);
    if (t_is_main) ADD(s->main_triggers, 1);
    ADD(s->slept_ns, now_ns() - t0);
    errno = saved;
}

/* The code address a signal interrupted (after a write watchpoint: the
 * instruction after the store). */
static uint64_t signal_pc(void *uc) {
#if defined(__x86_64__)
    return (uint64_t)((ucontext_t *)uc)->uc_mcontext.gregs[REG_RIP];
#elif defined(__aarch64__)
    return (uint64_t)((ucontext_t *)uc)->uc_mcontext.pc;
#else
    (void)uc;
    return 0;
#endif
}

/* ---- watchpoints ---- */
static void on_sigtrap(int sig, siginfo_t *si, void *uc) {
    int saved = errno;
    if (si->si_code != TRAP_PERF) {             /* not ours: previous action */
        if (g_old_trap.sa_flags & SA_SIGINFO) {
            g_old_trap.sa_sigaction(sig, si, uc);
        } else if (g_old_trap.sa_handler != SIG_IGN && g_old_trap.sa_handler != SIG_DFL) {
            g_old_trap.sa_handler(sig);
        } else if (g_old_trap.sa_handler == SIG_DFL) {
            signal(SIGTRAP, SIG_DFL);
            raise(SIGTRAP);                     /* pending until we return */
        }
        errno = saved;
        return;
    }
    /* si_perf_data (= attr.sig_data = rule index) follows si_addr; glibc
     * 2.36 does not name it yet. */
    unsigned long owner;
    memcpy(&owner, (const char *)&si->si_addr + sizeof(void *), sizeof owner);
    if (owner >= g_nrules || g_rules[owner].kind != KIND_WATCH) return;
    uint64_t v;
    switch (g_rules[owner].len) {
    case 1: v = *(volatile uint8_t *)g_rules[owner].addr; break;
    case 2: v = *(volatile uint16_t *)g_rules[owner].addr; break;
    case 4: v = *(volatile uint32_t *)g_rules[owner].addr; break;
    default: v = *(volatile uint64_t *)g_rules[owner].addr; break;
    }
    for (unsigned i = owner; i < g_nrules; i++) {   /* every rule sharing the event */
        struct rule *r = &g_rules[i];
        struct amp_rule_status *s = &g_st->rules[i];
        if (r->kind != KIND_WATCH || r->owner != owner || (r->main_only && !t_is_main)) continue;
        ADD(s->events, 1);
        uint64_t want = r->len == 8 ? r->value : r->value & ((1ull << (8 * r->len)) - 1);
        int hit = r->cond == COND_ANY || (r->cond == COND_EQ ? v == want : v != want);
        if (hit && take(r, s)) trigger(r, s, signal_pc(uc));
    }
    errno = saved;
}

/* One perf event per watched (addr, len), shared by the rules on it: two
 * events on one store would raise two SIGTRAPs, and a second pending SIGTRAP
 * is merged into the first (lost). Inherited if any sharing rule wants all
 * threads; the handler filters thread=main rules. */
static void arm_watches(void) {
    for (unsigned i = 0; i < g_nrules; i++) {
        struct rule *r = &g_rules[i];
        if (r->kind != KIND_WATCH) continue;
        r->owner = i;
        for (unsigned j = 0; j < i; j++)
            if (g_rules[j].kind == KIND_WATCH && g_rules[j].addr == r->addr && g_rules[j].len == r->len) {
                r->owner = j;
                g_rules[j].all_threads |= r->all_threads;
                break;
            }
    }
    for (unsigned i = 0; i < g_nrules; i++) {
        struct rule *r = &g_rules[i];
        if (r->kind != KIND_WATCH) continue;
        if (r->owner != i) {
            g_st->rules[i].armed = g_st->rules[r->owner].armed;
            g_st->rules[i].arm_errno = g_st->rules[r->owner].arm_errno;
            continue;
        }
        struct perf_event_attr a;
        memset(&a, 0, sizeof a);
        a.type = PERF_TYPE_BREAKPOINT;
        a.size = sizeof a;
        a.bp_type = HW_BREAKPOINT_W;
        a.bp_addr = r->addr;
        a.bp_len = (uint64_t)r->len;
        a.sample_period = 1;
        a.exclude_kernel = 1;
        a.exclude_hv = 1;
        a.sigtrap = 1;                  /* requires remove_on_exec */
        a.remove_on_exec = 1;
        a.sig_data = i;
        a.inherit = a.inherit_thread = (unsigned)r->all_threads;
        int fd = (int)syscall(SYS_perf_event_open, &a, 0, -1, -1, PERF_FLAG_FD_CLOEXEC);
        r->fd = fd;
        g_st->rules[i].armed = fd >= 0 ? 1 : -1;
        g_st->rules[i].arm_errno = fd >= 0 ? 0 : errno;
        if (fd < 0) {
            put("amplify: watch rule ");
            put_num(i + 1, 10);
            put(" not armed: perf_event_open: errno ");
            put_num((unsigned)g_st->rules[i].arm_errno, 10);   /* strerror: not fork-safe */
            put("\n");
        }
    }
}

/* After fork() the child has no watchpoints (inherit_thread / inherit=0):
 * drop the parent's event fds and arm new ones for the child. */
static void atfork_child(void) {
    t_is_main = 1;
    g_st->pid = getpid();
    g_st->main_tid = (int32_t)gettid_();
    for (unsigned i = 0; i < g_nrules; i++)
        if (g_rules[i].kind == KIND_WATCH && g_rules[i].fd >= 0) syscall(SYS_close, g_rules[i].fd);
    arm_watches();
}

/* ---- interposition ---- */
static void *real_fn(int fn) {
    void *p = __atomic_load_n(&g_fn_real[fn], __ATOMIC_RELAXED);
    if (!p) {
        p = dlsym(RTLD_NEXT, fn_names[fn]);
        __atomic_store_n(&g_fn_real[fn], p, __ATOMIC_RELAXED);
    }
    return p;
}

static uint32_t mix32(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    return (uint32_t)x;
}

/* Count one failure of a wrapped call: (fn, err, main) in the fail table. */
static void count_failure(int fn, int err, uint64_t pc) {
    struct amp_tables *t = &g_st->tables;
    uint32_t key = 1u + ((uint32_t)fn << 16 | (uint32_t)(err & 0x7fff) << 1 | (t_is_main ? 1u : 0u));
    for (unsigned n = 0, i = mix32(key) % AMP_FAIL_SLOTS; n < AMP_FAIL_SLOTS;
         n++, i = (i + 1) % AMP_FAIL_SLOTS) {
        struct amp_fail_slot *s = &t->fail[i];
        uint32_t seen = __atomic_load_n(&s->key, __ATOMIC_ACQUIRE);
        if (seen == 0) {
            uint32_t empty = 0;
            if (__atomic_compare_exchange_n(&s->key, &empty, key, 0, __ATOMIC_ACQ_REL,
                                            __ATOMIC_ACQUIRE))
                seen = key;
            else
                seen = empty;           /* another thread took the slot: check its key */
        }
        if (seen != key) continue;
        ADD(s->count, 1);
        STORE(s->last_pc, pc);
        STORE(s->last_ns, now_ns());
        return;
    }
    ADD(t->fail_dropped, 1);
}

static void interpose_before(int fn, uint64_t pc) {
    uint32_t mask = g_fn_rules[fn];
    for (unsigned i = 0; mask; i++, mask >>= 1) {
        struct rule *r = &g_rules[i];
        if (!(mask & 1) || !r->before || (r->main_only && !t_is_main)) continue;
        ADD(g_st->rules[i].events, 1);
        if (take(r, &g_st->rules[i])) trigger(r, &g_st->rules[i], pc);
    }
}

/* ``err``: errno for the calls that return -1, the result itself for
 * pthread_mutex_lock (which returns an error number). */
static void interpose_after(int fn, long long ret, int err, uint64_t pc) {
    int saved = errno;
    uint32_t mask = g_fn_rules[fn];
    int failed = fn == FN_PTHREAD_MUTEX_LOCK ? ret != 0 : ret == -1;
    if (failed) count_failure(fn, err, pc);
    for (unsigned i = 0; mask; i++, mask >>= 1) {
        struct rule *r = &g_rules[i];
        if (!(mask & 1) || r->before || (r->main_only && !t_is_main)) continue;
        ADD(g_st->rules[i].events, 1);
        if ((r->any_ret || ret == r->ret) && (r->any_errno || err == r->err) &&
            take(r, &g_st->rules[i]))
            trigger(r, &g_st->rules[i], pc);
    }
    errno = saved;
}

/* One wrapper per function; the fast path (no rule) is one extra load. */
#define WRAP(ID, RET, NAME, PARAMS, ARGS)                                   \
    RET NAME PARAMS {                                                       \
        RET(*real) PARAMS = (RET(*) PARAMS)real_fn(ID);                     \
        if (!real) {                                                        \
            errno = ENOSYS;                                                 \
            return (RET)-1;                                                 \
        }                                                                   \
        if (!__atomic_load_n(&g_fn_rules[ID], __ATOMIC_RELAXED))            \
            return real ARGS;                                               \
        uint64_t pc = (uint64_t)(uintptr_t)__builtin_return_address(0);     \
        interpose_before(ID, pc);                                           \
        RET r = real ARGS;                                                  \
        interpose_after(ID, (long long)r, errno, pc);                       \
        return r;                                                           \
    }

WRAP(FN_ACCEPT, int, accept, (int fd, struct sockaddr *a, socklen_t *l), (fd, a, l))
WRAP(FN_ACCEPT4, int, accept4, (int fd, struct sockaddr *a, socklen_t *l, int f), (fd, a, l, f))
WRAP(FN_CLOSE, int, close, (int fd), (fd))
WRAP(FN_READ, ssize_t, read, (int fd, void *b, size_t n), (fd, b, n))
WRAP(FN_WRITE, ssize_t, write, (int fd, const void *b, size_t n), (fd, b, n))
WRAP(FN_RECV, ssize_t, recv, (int fd, void *b, size_t n, int f), (fd, b, n, f))
WRAP(FN_SEND, ssize_t, send, (int fd, const void *b, size_t n, int f), (fd, b, n, f))
WRAP(FN_CONNECT, int, connect, (int fd, const struct sockaddr *a, socklen_t l), (fd, a, l))
WRAP(FN_EPOLL_WAIT, int, epoll_wait, (int fd, struct epoll_event *e, int n, int t), (fd, e, n, t))
WRAP(FN_POLL, int, poll, (struct pollfd *p, nfds_t n, int t), (p, n, t))
/* libevent's own calls: a worker adding an fd to another thread's epoll (1.4.0-1.4.5) */
WRAP(FN_EPOLL_CTL, int, epoll_ctl, (int fd, int op, int f, struct epoll_event *e), (fd, op, f, e))

/* Count one contended acquisition of mutex m at site in the mutex table. */
static void count_contended(uint64_t m, uint64_t site, uint64_t waited) {
    struct amp_tables *t = &g_st->tables;
    ADD(t->lock_contended, 1);
    for (unsigned n = 0, i = mix32(m * 31 + site) % AMP_MUTEX_SLOTS; n < AMP_MUTEX_SLOTS;
         n++, i = (i + 1) % AMP_MUTEX_SLOTS) {
        struct amp_mutex_slot *s = &t->mutex[i];
        uint64_t seen = __atomic_load_n(&s->mutex, __ATOMIC_ACQUIRE);
        if (seen == 0) {
            /* claim: mutex first (0 -> m), then its site */
            uint64_t empty = 0;
            if (__atomic_compare_exchange_n(&s->mutex, &empty, m, 0, __ATOMIC_ACQ_REL,
                                            __ATOMIC_ACQUIRE)) {
                __atomic_store_n(&s->site, site, __ATOMIC_RELEASE);
                seen = m;
            } else {
                seen = empty;
            }
        }
        /* a slot whose site is still being stored does not match: at worst
         * one (mutex, site) gets two slots, which the reader adds up */
        if (seen != m || __atomic_load_n(&s->site, __ATOMIC_ACQUIRE) != site) continue;
        ADD(s->contended, 1);
        if (t_is_main) ADD(s->main_contended, 1);
        ADD(s->wait_ns, waited);
        return;
    }
    ADD(t->mutex_dropped, 1);
}

static void lock_contended(pthread_mutex_t *m, uint64_t site, uint64_t waited) {
    uint64_t a = (uint64_t)(uintptr_t)m;
    count_contended(a, site, waited);
    uint32_t mask = __atomic_load_n(&g_lock_rules, __ATOMIC_ACQUIRE);
    for (unsigned i = 0; mask; i++, mask >>= 1) {
        struct rule *r = &g_rules[i];
        if (!(mask & 1) || (r->main_only && !t_is_main)) continue;
        ADD(g_st->rules[i].events, 1);
        int in = r->addr == 0 || (a >= r->addr && a < r->addr + (uint64_t)r->len);
        if (in && (r->site == 0 || r->site == site) && take(r, &g_st->rules[i]))
            trigger(r, &g_st->rules[i], site);
    }
}

/* pthread_mutex_lock: interpose rules as for the other calls; with a lock
 * rule, trylock first, so a contended acquisition (EBUSY) is known. */
int pthread_mutex_lock(pthread_mutex_t *m) {
    int (*real)(pthread_mutex_t *) = (int (*)(pthread_mutex_t *))real_fn(FN_PTHREAD_MUTEX_LOCK);
    if (!real) return ENOSYS;
    uint32_t imask = __atomic_load_n(&g_fn_rules[FN_PTHREAD_MUTEX_LOCK], __ATOMIC_RELAXED);
    uint32_t lmask = __atomic_load_n(&g_lock_rules, __ATOMIC_RELAXED);
    if (!imask && !lmask) return real(m);
    uint64_t pc = (uint64_t)(uintptr_t)__builtin_return_address(0);
    if (imask) interpose_before(FN_PTHREAD_MUTEX_LOCK, pc);
    int r;
    if (lmask && g_trylock) {
        ADD(g_st->tables.lock_calls, 1);
        r = g_trylock(m);
        if (r == EBUSY) {
            uint64_t t0 = now_ns();
            r = real(m);
            if (r == 0) lock_contended(m, pc, now_ns() - t0);
        }
    } else {
        r = real(m);
    }
    if (imask) interpose_after(FN_PTHREAD_MUTEX_LOCK, r, r, pc);
    return r;
}

/* ---- crash reporter ---- */
static char g_altstack[64 * 1024];

static void on_crash(int sig, siginfo_t *si, void *uc) {
    (void)uc;
    void *frames[64];
    g_st->crash_signal = sig;
    put("amplify: fatal signal ");
    put_num((unsigned)sig, 10);
    put(" (");
    put(sigabbrev_np(sig) ? sigabbrev_np(sig) : "?");
    put(") in tid ");
    put_num((unsigned long long)gettid_(), 10);
    if (si->si_code > 0 && sig != SIGABRT) {    /* a fault: si_addr is meaningful */
        put(" addr 0x");
        put_num((unsigned long long)(uintptr_t)si->si_addr, 16);
    }
    put("\namplify: load-bias 0x");
    put_num(g_load_bias, 16);
    put("\namplify: backtrace:\n");
    int n = backtrace(frames, 64);
    backtrace_symbols_fd(frames, n, 2);
    put("amplify: end of backtrace\n");
    /* Die by the same signal: the raise stays pending until we return. */
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    sigaction(sig, &dfl, NULL);
    raise(sig);
}

static void install_crash_reporter(void) {
    static const int sigs[] = {SIGSEGV, SIGBUS, SIGABRT, SIGFPE, SIGILL};
    stack_t ss, old;
    if (sigaltstack(NULL, &old) == 0 && (old.ss_flags & SS_DISABLE)) {
        ss.ss_sp = g_altstack;
        ss.ss_size = sizeof g_altstack;
        ss.ss_flags = 0;
        sigaltstack(&ss, NULL);
    }
    void *warm[2];
    backtrace(warm, 2);                 /* loads libgcc_s now, not in the handler */
    for (unsigned i = 0; i < sizeof sigs / sizeof sigs[0]; i++) {
        struct sigaction sa, prev;
        if (sigaction(sigs[i], NULL, &prev) == 0 && prev.sa_handler != SIG_DFL) continue;
        memset(&sa, 0, sizeof sa);
        sa.sa_sigaction = on_crash;
        sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
        sigemptyset(&sa.sa_mask);
        sigaction(sigs[i], &sa, NULL);
    }
}

/* ---- configuration ---- */
static int find_bias(struct dl_phdr_info *info, size_t size, void *data) {
    (void)size;
    *(uint64_t *)data = info->dlpi_addr;  /* first object = main executable */
    return 1;
}

static int parse_num(const char *s, uint64_t *out) {
    char *end;
    errno = 0;
    if (!*s) return -1;
    *out = *s == '-' ? (uint64_t)strtoll(s, &end, 0) : strtoull(s, &end, 0);
    return (errno || *end) ? -1 : 0;
}

static const struct { const char *name; int value; } errno_names[] = {
    {"EMFILE", EMFILE}, {"ENFILE", ENFILE}, {"EAGAIN", EAGAIN}, {"EWOULDBLOCK", EWOULDBLOCK},
    {"EINTR", EINTR}, {"EBADF", EBADF}, {"ECONNRESET", ECONNRESET}, {"ECONNABORTED", ECONNABORTED},
    {"ECONNREFUSED", ECONNREFUSED}, {"EPIPE", EPIPE}, {"ETIMEDOUT", ETIMEDOUT},
    {"ENOBUFS", ENOBUFS}, {"ENOMEM", ENOMEM}, {"EINVAL", EINVAL}, {"EINPROGRESS", EINPROGRESS},
};

/* Parse one "kind:k=v,..." rule into *r; return an error text or NULL. */
static const char *parse_rule(char *text, struct rule *r) {
    char *colon = strchr(text, ':'), *save = NULL;
    int has_addr = 0;
    uint64_t n = 0;
    if (!colon) return "expected kind:key=value,...";
    *colon = 0;
    memset(r, 0, sizeof *r);
    r->fd = -1;
    r->every = 1;
    if (!strcmp(text, "watch")) r->kind = KIND_WATCH, r->len = 1, r->cond = COND_EQ;
    else if (!strcmp(text, "interpose")) r->kind = KIND_INTERPOSE, r->any_ret = r->any_errno = 1;
    else if (!strcmp(text, "lock")) r->kind = KIND_LOCK, r->len = 1;
    else return "kind must be watch, interpose or lock";
    for (char *kv = strtok_r(colon + 1, ",", &save); kv; kv = strtok_r(NULL, ",", &save)) {
        char *v = strchr(kv, '=');
        if (!v) return "expected key=value";
        *v++ = 0;
        int w = r->kind == KIND_WATCH, l = r->kind == KIND_LOCK, wl = w || l;
        if (!strcmp(kv, "delay_us")) {
            if (parse_num(v, &n) || n > 3600000000ull) return "bad delay_us";
            r->delay_us = (long)n;
        } else if (!strcmp(kv, "every")) {
            if (parse_num(v, &n) || n < 1) return "bad every";
            r->every = n;
        } else if (!strcmp(kv, "max")) {
            if (parse_num(v, &n)) return "bad max";
            r->max = n;
        } else if (!strcmp(kv, "thread")) {
            if (!strcmp(v, "main")) r->main_only = 1, r->all_threads = 0;
            else if (!strcmp(v, "all") || !strcmp(v, "any")) r->main_only = 0, r->all_threads = 1;
            else return "thread must be main or all/any";
        } else if (wl && (!strcmp(kv, "symoff") || !strcmp(kv, "addr"))) {
            if (parse_num(v, &n) || has_addr) return "bad or repeated symoff/addr";
            r->addr = n + (kv[0] == 's' ? g_load_bias : 0);
            has_addr = 1;
        } else if (w && !strcmp(kv, "len")) {
            if (parse_num(v, &n) || (n != 1 && n != 2 && n != 4 && n != 8)) return "len must be 1/2/4/8";
            r->len = (int)n;
        } else if (l && !strcmp(kv, "len")) {
            if (parse_num(v, &n) || n < 1 || n > (1u << 30)) return "bad len";
            r->len = (int)n;
        } else if (l && !strcmp(kv, "site")) {
            if (parse_num(v, &n) || n == 0) return "bad site";
            r->site = n + g_load_bias;
        } else if (w && !strcmp(kv, "cond")) {
            if (!strcmp(v, "eq")) r->cond = COND_EQ;
            else if (!strcmp(v, "ne")) r->cond = COND_NE;
            else if (!strcmp(v, "any")) r->cond = COND_ANY;
            else return "cond must be eq, ne or any";
        } else if (w && !strcmp(kv, "value")) {
            if (parse_num(v, &r->value)) return "bad value";
        } else if (wl && !strcmp(kv, "sym")) {
            /* label only */
        } else if (!w && !strcmp(kv, "fn")) {
            char *fsave = NULL;
            for (char *f = strtok_r(v, "|", &fsave); f; f = strtok_r(NULL, "|", &fsave)) {
                int k = 0;
                while (k < FN_COUNT && strcmp(f, fn_names[k])) k++;
                if (k == FN_COUNT) return "fn: function not interposable";
                r->fns |= 1u << k;
            }
        } else if (!w && !strcmp(kv, "ret")) {
            r->any_ret = !strcmp(v, "any");
            if (!r->any_ret && parse_num(v, &n)) return "bad ret";
            r->ret = (long long)n;
        } else if (!w && !strcmp(kv, "errno")) {
            r->any_errno = !strcmp(v, "any");
            if (!r->any_errno) {
                unsigned k = 0;
                while (k < sizeof errno_names / sizeof errno_names[0] && strcmp(v, errno_names[k].name)) k++;
                if (k < sizeof errno_names / sizeof errno_names[0]) r->err = errno_names[k].value;
                else if (parse_num(v, &n) || n > 4095) return "bad errno";
                else r->err = (int)n;
            }
        } else if (!w && !strcmp(kv, "when")) {
            if (!strcmp(v, "after")) r->before = 0;
            else if (!strcmp(v, "before")) r->before = 1;
            else return "when must be after or before";
        } else {
            return "unknown key";
        }
    }
    if (r->kind == KIND_WATCH) {
        if (!has_addr) return "watch needs symoff= or addr=";
        if (r->addr % (uint64_t)r->len) return "address not aligned to len";
        r->main_only = !r->all_threads;
    } else if (r->kind == KIND_LOCK) {
        if (has_addr && r->addr == 0) return "lock: mutex address 0";
    } else {
        if (!r->fns) return "interpose needs fn=";
        if (r->before && !(r->any_ret && r->any_errno)) return "when=before needs ret=any,errno=any";
    }
    return NULL;
}

static void config_error(unsigned idx, const char *why, const char *rule) {
    g_st->config_error = (int32_t)idx;
    snprintf(g_st->message, sizeof g_st->message, "rule %u (%.80s): %s", idx, rule, why);
    put("amplify: bad ");
    put(g_st->message);
    put("; all rules disabled\n");
}

/* Parse VERIFIER_AMPLIFY: all rules or none. */
static void parse_config(const char *env) {
    static char buf[4096], orig[4096];
    char *save = NULL;
    unsigned nwatch = 0, n = 0;
    if (strlen(env) >= sizeof buf) {
        config_error(1, "VERIFIER_AMPLIFY longer than 4095 bytes", "");
        return;
    }
    strcpy(buf, env);
    for (char *t = strtok_r(buf, ";", &save); t; t = strtok_r(NULL, ";", &save)) {
        if (!*t) continue;
        if (n == AMP_MAX_RULES) {
            config_error(n + 1, "more than 16 rules", t);
            return;
        }
        snprintf(orig, sizeof orig, "%s", t);
        const char *why = parse_rule(t, &g_rules[n]);
        if (!why && g_rules[n].kind == KIND_WATCH && ++nwatch > AMP_MAX_WATCH)
            why = "more than 4 watch rules";
        if (why) {
            config_error(n + 1, why, orig);
            return;
        }
        n++;
    }
    g_nrules = n;
}

/* Parent-death signal across setuid(). The verifier starts servers with
 * PR_SET_PDEATHSIG so they die with it, but the kernel clears that setting when
 * the credentials change, e.g. memcached's "-u nobody" as root. With
 * VERIFIER_PDEATHSIG=N (and VERIFIER_PARENT_PID), setuid() re-arms it and exits
 * at once if the parent already died in between. Always on, rules or not. */
static int g_pdeathsig;
static pid_t g_parent_pid;

static void rearm_pdeathsig(void) {
    if (g_pdeathsig <= 0) return;
    prctl(PR_SET_PDEATHSIG, g_pdeathsig, 0, 0, 0);
    if (g_parent_pid > 0 && getppid() != g_parent_pid) _exit(128 + g_pdeathsig);
}

int setuid(uid_t uid) {
    static int (*real)(uid_t);
    if (!real) real = (int (*)(uid_t))dlsym(RTLD_NEXT, "setuid");
    int rc = real ? real(uid) : (errno = ENOSYS, -1);
    int saved = errno;
    if (rc == 0) rearm_pdeathsig();
    errno = saved;
    return rc;
}

static void read_pdeathsig_env(void) {
    const char *sig = getenv("VERIFIER_PDEATHSIG");
    const char *parent = getenv("VERIFIER_PARENT_PID");
    g_pdeathsig = sig ? atoi(sig) : 0;
    g_parent_pid = parent ? (pid_t)atoi(parent) : 0;
}

/* VERIFIER_AMPLIFY_EXE names the program the rules are for: a wrapper that
 * execs it (sh, env, setsid, timeout) leaves the variables alone. */
static int is_target(void) {
    const char *exe = getenv("VERIFIER_AMPLIFY_EXE");
    struct stat want, self;
    if (!exe || !*exe) return 1;
    return stat(exe, &want) == 0 && stat("/proc/self/exe", &self) == 0 &&
           want.st_dev == self.st_dev && want.st_ino == self.st_ino;
}

__attribute__((constructor)) static void amp_init(void) {
    int saved = errno;
    t_is_main = 1;
    read_pdeathsig_env();
    dl_iterate_phdr(find_bias, &g_load_bias);
    for (int i = 0; i < FN_COUNT; i++) real_fn(i);
    g_trylock = (int (*)(pthread_mutex_t *))dlsym(RTLD_NEXT, "pthread_mutex_trylock");
    if (!is_target()) {
        install_crash_reporter();
        errno = saved;
        return;
    }

    const char *path = getenv("VERIFIER_AMPLIFY_STATUS");
    if (path && *path) {
        int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        void *p = MAP_FAILED;
        if (fd >= 0 && ftruncate(fd, sizeof(struct amp_status)) == 0)
            p = mmap(NULL, sizeof(struct amp_status), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (p != MAP_FAILED) g_st = p;
        else {
            put("amplify: cannot map status file ");
            put(path);
            put("\n");
        }
        if (fd >= 0) syscall(SYS_close, fd);
    }
    g_st->version = AMP_STATUS_VERSION;
    g_st->size = sizeof(struct amp_status);
    g_st->pid = getpid();
    g_st->main_tid = (int32_t)gettid_();
    g_st->load_bias = g_load_bias;
    g_st->tables.fail_slots = AMP_FAIL_SLOTS;
    g_st->tables.mutex_slots = AMP_MUTEX_SLOTS;

    const char *env = getenv("VERIFIER_AMPLIFY");
    if (env) parse_config(env);
    g_st->nrules = g_nrules;
    /* VERIFIER_AMPLIFY_MUTED=mask: rules that start muted (bit i: rule i); the harness
     * unmutes them one hypothesis at a time through the status file (auto's sweep). */
    const char *muted = getenv("VERIFIER_AMPLIFY_MUTED");
    if (muted && *muted) {
        unsigned long mask = strtoul(muted, NULL, 0);
        for (unsigned i = 0; i < g_nrules; i++)
            if (mask & (1ul << i)) g_st->rules[i].muted = 1;
    }
    int watches = 0;
    for (unsigned i = 0; i < g_nrules; i++) {
        struct rule *r = &g_rules[i];
        g_st->rules[i].kind = (uint32_t)r->kind;
        if (r->kind == KIND_WATCH) {
            watches = 1;
            continue;
        }
        if (r->kind == KIND_LOCK) {
            int ok = g_fn_real[FN_PTHREAD_MUTEX_LOCK] != NULL && g_trylock != NULL;
            g_st->rules[i].armed = ok ? 1 : -1;
            g_st->rules[i].arm_errno = ok ? 0 : ENOSYS;
            continue;
        }
        int ok = 1;
        for (int k = 0; k < FN_COUNT; k++)
            if (r->fns & (1u << k)) ok &= g_fn_real[k] != NULL;
        g_st->rules[i].armed = ok ? 1 : -1;
        g_st->rules[i].arm_errno = ok ? 0 : ENOSYS;
    }
    if (watches) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_sigaction = on_sigtrap;
        sa.sa_flags = SA_SIGINFO | SA_RESTART;
        sigemptyset(&sa.sa_mask);
        sigaction(SIGTRAP, &sa, &g_old_trap);
        arm_watches();
        pthread_atfork(NULL, NULL, atfork_child);
    }
    install_crash_reporter();
    /* Enable the interposers last, once every rule is complete. */
    for (unsigned i = 0; i < g_nrules; i++)
        for (int k = 0; k < FN_COUNT; k++)
            if (g_rules[i].kind == KIND_INTERPOSE && (g_rules[i].fns & (1u << k)))
                __atomic_or_fetch(&g_fn_rules[k], 1u << i, __ATOMIC_RELEASE);
    for (unsigned i = 0; i < g_nrules; i++)
        if (g_rules[i].kind == KIND_LOCK && g_st->rules[i].armed == 1)
            __atomic_or_fetch(&g_lock_rules, 1u << i, __ATOMIC_RELEASE);
    __atomic_thread_fence(__ATOMIC_RELEASE);
    memcpy(g_st->magic, "AMPLIFY", 8);
    unsetenv("VERIFIER_AMPLIFY");
    unsetenv("VERIFIER_AMPLIFY_STATUS");
    unsetenv("VERIFIER_AMPLIFY_MUTED");
    unsetenv("VERIFIER_AMPLIFY_EXE");
    errno = saved;
}
