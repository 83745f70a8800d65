"""The load guard (fastnet/training/load_guard.py) on synthetic step times: it keeps two threads
on an idle machine, falls back to one within a window once the second core is taken, and
returns when it is free. (That the fallback changes no bits is tests/training/test_fused.py's.)"""
from __future__ import annotations

from fastnet.training.load_guard import LONG, MAX_BACKOFF, PROBE_EVERY, WARMUP, WINDOW, LoadGuard

IDLE = {2: 1.0, 1: 1.6}  # seconds per step: the split's idle speed-up
LOADED = {2: 6.0, 1: 1.8}  # another process on one core: the two halves wait for the shared one


def run(guard: LoadGuard, machine: dict, steps: int) -> list[int]:
    """The thread counts chosen over ``steps`` steps on a machine with these step times."""
    chosen = []
    for _ in range(steps):
        threads = guard.threads()
        chosen.append(threads)
        guard.observe(machine[threads])
    return chosen


def test_an_idle_machine_keeps_two_threads_but_for_rare_tries():
    guard = LoadGuard()
    chosen = run(guard, IDLE, 20 * PROBE_EVERY)
    # the first try after the warm-up and the first window, ended by its first step (1.6x:
    # plainly slower); then two threads for at least 4 x PROBE_EVERY steps
    first = WARMUP + WINDOW
    assert chosen[: first + 2] == [2] * first + [1, 2]
    assert chosen[first + 1 : 4 * PROBE_EVERY] == [2] * (4 * PROBE_EVERY - first - 1)
    assert chosen.count(1) <= 5 * WINDOW + 5  # one window per try, one try per 4 x PROBE_EVERY steps or more
    assert guard.current == 2 and guard.one_core_steps == chosen.count(1)


def test_a_busy_second_core_moves_the_step_to_one_thread_and_back():
    guard = LoadGuard()
    run(guard, IDLE, 100)
    loaded = run(guard, LOADED, 40 * PROBE_EVERY)
    first_one = loaded.index(1)
    assert first_one <= WINDOW  # within a window of the load's start
    # afterwards one thread but for tries of two, each ended by its first slow step, ever rarer
    tries = loaded[first_one:].count(2)
    assert 1 <= tries <= 8
    idle_again = run(guard, IDLE, MAX_BACKOFF * PROBE_EVERY + 2 * WINDOW)
    assert idle_again[-WINDOW:] == [2] * WINDOW and guard.current == 2
    # and a try that found two threads faster resets the wait: a new load is met in a window
    assert run(guard, LOADED, 2 * WINDOW)[-1] == 1


def test_a_run_that_starts_loaded_finds_one_thread_at_its_first_try():
    """No idle median to compare with: the first try, after the first window, finds one thread
    faster and keeps it."""
    guard = LoadGuard()
    chosen = run(guard, LOADED, 8 * PROBE_EVERY)
    assert chosen[-WINDOW:] == [1] * WINDOW
    assert chosen.index(1) == WARMUP + WINDOW
    assert chosen[WINDOW:].count(1) >= 0.95 * len(chosen[WINDOW:])


def test_a_slow_first_step_and_a_stall_in_the_first_window_leave_an_idle_run_on_two_threads():
    """As measured on the AMX Xeon: the run's first step 10x the others (one-time costs), a
    lone 5x stall in the first window. The first try of one thread must still end at its first
    step, as on a machine without them (it once compared with the window's mean, doubled by
    the stall, and kept one thread for PROBE_EVERY steps)."""
    guard = LoadGuard()
    times = [10.0] + [1.0] * 11 + [5.0] + [1.0] * (4 * PROBE_EVERY)
    chosen = []
    for t in times:
        threads = guard.threads()
        chosen.append(threads)
        guard.observe(t if threads == 2 else IDLE[1])
    assert chosen.count(1) == 1 and guard.current == 2


def test_one_slow_step_does_not_switch():
    guard = LoadGuard()
    run(guard, IDLE, 100)
    before = guard.switches  # (the run's first try)
    guard.observe(50.0)  # one step stalled (page faults, a long evaluation tail)
    assert run(guard, IDLE, WINDOW) == [2] * WINDOW and guard.switches == before


def test_a_tail_of_stalls_under_a_normal_median_moves_to_one_thread():
    """A shared core seen as a tenth of the two-thread steps stalled ~70x, the median unchanged
    (AMD Zen 5 beside a spinning process): the sum of the last LONG steps sees it."""
    guard = LoadGuard()
    run(guard, IDLE, 200)
    chosen = []
    for i in range(LONG):
        threads = guard.threads()
        chosen.append(threads)
        guard.observe(70.0 if threads == 2 and i % 10 == 9 else IDLE[threads])
    assert 1 in chosen[: 5 * 10]  # within a handful of stalls
    assert guard.current == 1


def stalled_machine(threads: int, i: int) -> float:
    """The AMX Xeon beside a spinning process: two-thread steps at their idle median but a
    tenth of them stalled 60x (a scheduler slice); one thread at 2x its idle step."""
    if threads == 2:
        return 60.0 if i % 10 == 9 else IDLE[2]
    return 2 * IDLE[1]


def test_a_tail_of_stalls_keeps_the_run_on_one_thread():
    """Once the stalls moved the step to one thread, the tries of two threads must see them
    too: judged by their median alone (normal), they kept two threads until the stalls moved
    the step again, and the epoch took 8x its idle time (one thread: 2x)."""
    guard = LoadGuard()
    seconds = []
    for i in range(20 * PROBE_EVERY):
        threads = guard.threads()
        seconds.append(stalled_machine(threads, i))
        guard.observe(seconds[-1])
    one_thread_pace = len(seconds) * 2 * IDLE[1]
    assert sum(seconds) <= 1.25 * one_thread_pace
    assert guard.current == 1


def test_lone_stalls_among_idle_steps_do_not_switch():
    guard = LoadGuard()
    run(guard, IDLE, 200)
    before = guard.switches  # (the run's first try)
    for i in range(4 * LONG):
        guard.observe(50.0 if i % LONG == 0 else IDLE[2])  # one stall per LONG steps
    assert guard.switches == before and guard.current == 2
