"""Steady speed under load (issue 15): the two-core step falls back to one core while another
process holds the second, and returns when it is free.

The fused step on two cores (:mod:`fastnet.training.fused`) splits every step in two halves
and waits for both. When another CPU-bound process takes one of the two cores, the half on
the shared core runs at a fraction of its speed, and the whole step with it: measured on
2 cores, a 3-layer epoch took 13.7x longer beside one competing process
(``scripts/bench_load.py``). Two
halves on *one* thread, one after the other, do the same products -- the same bits -- at the
one core's full speed. So the guard only chooses how many threads run the two halves, and a
run's results never depend on the load. It watches the one-core step that gathers the next
batch on a second thread beside it (``Stepper.beside``) alike: there one thread gathers after
the step, on the step's own thread (measured on the AMX Xeon beside one spinning process: the
guard kept one thread, and the competitor ran as fast as beside the Python-thread prefetch).

The choice is made from the step's own wall time (no load average, which lags by a minute),
as medians of :data:`WINDOW` steps:

* on two threads, once the median is :data:`SLOWER` times the best seen on two threads, one
  thread is tried -- or once the last :data:`LONG` steps took :data:`STALLED` times as long as
  that many at the best median: a shared core can also show as a normal median with a tail of
  stalls (on AMD Zen 5 beside one spinning process, a tenth of the steps took ~70x the median,
  as the scheduler gave the spinner the core our second thread waited for, and the epoch took
  4.6x its idle time with the median unchanged), which only a sum sees; a lone stall (a page
  fault, an evaluation's tail) stays far inside that budget;
* after the run's first window on two threads, one thread is tried once: a run that starts
  beside a busy core has no idle median to compare with, and the split's two halves waiting
  for each other there can look like its normal speed;
* every :data:`PROBE_EVERY` steps on one thread (four times that on two), the other count is
  tried;
* a try lasts one window, and the faster of the two medians is kept; it ends at its first
  step if that step is :data:`ABORT` times the other count's median, and every failed try
  doubles the steps to the next (up to :data:`MAX_BACKOFF` times). What a count left behind
  is its median, or the mean of its last :data:`LONG` steps where stalls raise it above the
  median, or where the stall rule moved it; over fewer steps one stall would raise the mean
  too much (a 5 ms stall in the first window of 0.5 ms steps doubled it, and kept an idle run
  on one thread for 256 steps). A try of two threads is judged by its window's mean where
  that is above its median: judged by the median alone, tries beside a stalling core kept two
  threads until the stalls moved the step again (the AMX Xeon: 8x the idle epoch);
* the run's first :data:`WARMUP` steps are not observed (one-time costs).

On an idle machine this costs the first try and then one window of one-thread steps in every
4 x PROBE_EVERY or more (under 1 % of the steps, at ~1.6x a step's time). A switch costs nothing but a different thread count
on the next call.
"""
from __future__ import annotations

import statistics
from collections import deque

#: Steps per median: enough that a single slow step (a page fault, an evaluation's tail) does
#: not switch, few enough to react within a fraction of a second on small networks.
WINDOW = 16
#: How much slower than its best the two-core step must get before one core is tried.
SLOWER = 1.5
#: Steps on one core between two tries of two cores.
PROBE_EVERY = 256
#: The steps of the sum that sees stalls, and how much longer than LONG steps at the best
#: two-thread median they may take before one thread is tried.
LONG, STALLED = 128, 2.0
#: A try ends at once on a step this many times slower than the other count's median.
ABORT = 1.5
#: Failed tries in a row stretch the steps between tries up to this factor.
MAX_BACKOFF = 16
#: The run's first steps, not observed: they pay one-time costs (first touches of the buffers,
#: the BLAS library setting itself up: 10 ms for the first 3-layer step on the AMX Xeon against
#: 0.5 ms for the next).
WARMUP = 2


class LoadGuard:
    """Which thread count (2 or 1) the next two-core step should run on: call
    :meth:`threads` before a step and :meth:`observe` with its wall time after it.
    ``one_core_steps``: the steps taken on one thread so far; ``switches``: how often the
    count changed."""

    def __init__(self, window: int = WINDOW, slower: float = SLOWER, probe_every: int = PROBE_EVERY):
        self.window, self.slower, self.probe_every = window, slower, probe_every
        self.current = 2
        self.recent: deque[float] = deque(maxlen=window)
        self.long: deque[float] = deque(maxlen=LONG)  # the current count's last steps, for stalls
        self.median: dict[int, float] = {}  # the last median measured on each thread count
        self.best_two: float | None = None  # the best median seen on two threads
        self.since_switch = 0
        self.trying = False  # the current count is a try: after one window, keep the faster
        self.backoff = 1  # tries that failed in a row double the steps to the next (up to MAX_BACKOFF)
        self.tried_one = False  # the first try of one thread, after the first window on two
        self.one_core_steps = 0
        self.switches = 0
        self.warmup = WARMUP  # steps still to pass unobserved

    def threads(self) -> int:
        return self.current

    def observe(self, seconds: float) -> None:
        """Record the wall time of the step just taken on :meth:`threads` threads."""
        self.one_core_steps += self.current == 1
        if self.warmup:
            self.warmup -= 1
            return
        self.since_switch += 1
        other = 3 - self.current
        if self.trying and other in self.median and seconds > ABORT * self.median[other]:
            # a try that is plainly slower ends at its first step, and the next one waits longer:
            # under load, each two-thread step costs many one-thread ones
            self.backoff = min(self.backoff * 2, MAX_BACKOFF)
            self._switch(other, trying=False)
            return
        self.recent.append(seconds)
        self.long.append(seconds)
        if self.current == 2 and not self.trying and self.best_two is not None and sum(self.long) > STALLED * LONG * self.best_two:
            self._switch(1, trying=True, stalled=True)  # a tail of stalls under a normal median
            return
        if len(self.recent) < self.window:
            return
        now = statistics.median(self.recent)
        if self.trying and self.current == 2:  # a try of two threads pays for its stalls too
            now = max(now, statistics.fmean(self.recent))
        self.median[self.current] = now
        if self.trying:
            self.trying = False
            if other in self.median and now >= self.median[other]:
                self.backoff = min(self.backoff * 2, MAX_BACKOFF)
                self._switch(other, trying=False)
            else:
                self.backoff = 1
            return
        if self.current == 2:
            self.best_two = now if self.best_two is None else min(self.best_two, now)
            if now > self.slower * self.best_two or not self.tried_one:
                self.tried_one = True
                self._switch(1, trying=True)
                return
        if self.since_switch >= self.probe_every * self.backoff * (4 if self.current == 2 else 1):
            self._switch(other, trying=True)

    def _switch(self, threads: int, trying: bool, stalled: bool = False) -> None:
        if stalled or len(self.long) == LONG:  # what a step on the count left cost: its median, or its mean where stalls raise it
            self.median[self.current] = max(self.median.get(self.current, 0.0), statistics.fmean(self.long))
        self.current, self.trying = threads, trying
        self.recent.clear()
        self.long.clear()
        self.since_switch = 0
        self.switches += 1
