"""``--amplify auto``: find, stretch and name races nobody has named.

Every other amplifier is told where the race is (a scenario names the variable to watch
or the call to stretch). ``auto`` learns it, on an unmodified build, from the binary's
own symbol table and debug info, in three steps:

1. **Discover** (``verifier.run.discovery``, a few seconds of unstretched flood): the
   executable's data objects stored to by two or more threads (counting hardware write
   breakpoints opened from outside on every thread, four objects at a time), the
   wrapped libc calls that fail and with which errno on which kind of thread, and the
   mutexes whose acquisition is contended (a trylock-first probe in libamplify).
2. **Stretch** (``planner``): each trial sleeps right after one to three of these
   points (a store, a failing call, a contended acquisition), for 1 to 50 ms, chosen
   at random with a bias to points hit often, from a deck that covers every point.
3. **Learn and name** (``memory``, ``planner``): after a hang, the point whose stretch
   came last before it is named (variable or call, thread, ``file:line``) and credited
   for that hang class in a JSON memory keyed by stable names, so the next trials, and
   the next commits of a bisect, stretch it first.

How auto relates to the tools it learns from (``shared/ANCHORS.md``):

- **DataCollider** (OSDI 2010) samples code locations, sets a data breakpoint on the
  address accessed and stalls the thread; a trap during the stall is a race. auto uses
  the same hardware (x86 debug registers, on an unmodified binary) twice: counting
  breakpoints find which variables several threads store to, and a trapping
  breakpoint stalls the storing thread right after its store. It samples data objects
  rather than code locations (a few dozen globals, not thousands of instructions), and
  it does not report the racing access: the hang is the report, the stall the cause.
- **KCSAN** (Linux 5.8+) puts compiler-inserted watchpoints on accesses and delays the
  task (80 us by default) to catch a concurrent access. auto needs no compiler pass and
  delays far longer (1-50 ms): it must widen a window enough for a *hang* to happen
  under a real flood, not just for a second access to be observed.
- **TSVD** (SOSP 2019) finds near-miss pairs of conflicting calls, injects delays
  exactly there and learns across runs. auto's discovery is the near-miss step (a
  variable stored by two threads within one short window; a lock found taken), its
  stretches are TSVD's delays, and the memory is its cross-run learning, kept per hang
  class so that a stretch is credited only for the bug hunted, not for any hang.
- **PCT** (ASPLOS 2010) perturbs d-1 random change points and finds a depth-d bug with
  probability >= 1/(n k^(d-1)). A trial of auto stretches d-1 in 1..3 points; the
  deck gives the bound in ``planner`` (>= w_p/W for a depth-2 bug in the first trial,
  and every point within N trials), instead of PCT's k^(d-1) over all steps.
- **rr chaos mode** starves one thread at a time at random (1 ms-2 s) and runs one
  thread at a time; it needs hardware performance counters, which these machines lack,
  and misses races that need true parallelism. auto keeps all threads running in
  parallel and starves only the thread at a chosen point, for a bounded time.
- Lockset (Eraser) and happens-before (TSan) detectors report data races; the lost
  wake-up has none (its accesses are all locked). auto perturbs the schedule instead,
  so it can stretch a locked window (after the listener's failed accept()) as well as
  an unlocked store.
"""

from verifier.amplify.auto.discovery import Discovery
from verifier.amplify.auto.memory import AutoMemory
from verifier.amplify.auto.planner import Attribution, AutoPlanner, Selection, SelectionMode
from verifier.amplify.auto.points import Point, PointKind, ThreadKind

__all__ = [
    "Attribution",
    "AutoMemory",
    "AutoPlanner",
    "Discovery",
    "Point",
    "PointKind",
    "Selection",
    "SelectionMode",
    "ThreadKind",
]
