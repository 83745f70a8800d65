"""How many BLAS threads a run uses.

The products of a training step are skinny (100 x 3072 x 50): two BLAS threads make them ~1.7x
faster on an idle 2-core machine, but when another process holds one of the cores, OpenBLAS's
threads wait on each other and an epoch becomes 5-15x *slower* (measured on this 2-core
machine, scripts/bench_peers.py). So by default a run takes the cores that are idle when it
starts (:func:`idle_cores`), and ``--threads N`` says exactly.
"""
from __future__ import annotations

import os
import time


def idle_cores() -> int:
    """Cores not busy with other processes now, at least 1.

    Others = the smaller of the 1-minute load average (rounded) and the fewest runnable
    threads not this process's own (/proc/loadavg, /proc/self/task) over a few looks 1 ms
    apart: a process running all along counts in both; this process's own share of the load
    average, or a moment's blip (a kernel thread), in only one. This process's threads still
    spinning after its last parallel work (a fit before this one, in a notebook) are its own,
    not another's load."""
    cores = os.cpu_count() or 1
    try:
        load = round(os.getloadavg()[0])
    except (AttributeError, OSError):  # not on this platform
        return cores
    try:
        for look in range(LOOKS):
            if look:
                time.sleep(0.001)
            load = min(load, max(0, runnable_threads() - own_running_threads()))
    except (OSError, ValueError, IndexError):
        pass
    return max(1, min(cores, cores - load))


#: looks at the runnable threads :func:`idle_cores` takes the fewest of
LOOKS = 5


def runnable_threads() -> int:
    """The threads running or runnable on the machine now (/proc/loadavg's fourth field, before
    the slash). OSError where there is no /proc."""
    with open("/proc/loadavg") as f:
        return int(f.read().split()[3].split("/")[0])


def own_running_threads() -> int:
    """This process's threads running or runnable now (state R in /proc/self/task/*/stat), at
    least 1: the one asking. OSError where there is no /proc."""
    running = 0
    for task in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{task}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]  # the name, in parentheses, may hold spaces
        except (OSError, IndexError):  # the thread ended meanwhile
            continue
        running += state == "R"
    return max(1, running)


def blas_threads(threads: int | None):
    """A context in which BLAS uses ``threads`` threads (None: the idle cores, but never more
    than BLAS has now, so OPENBLAS_NUM_THREADS or a limit already in force still hold)."""
    import numpy  # noqa: F401  NumPy's BLAS must be loaded first: a limit set before misses it
    from threadpoolctl import threadpool_limits

    return threadpool_limits(threads or min(idle_cores(), blas_thread_count()), user_api="blas")


def blas_thread_count() -> int:
    """The threads NumPy's BLAS will use now (1 if that cannot be told).

    NumPy's library is the one fastnet's products run on; SciPy may load a second one later
    (after a thread limit was set), whose count says nothing about the run."""
    try:
        from threadpoolctl import threadpool_info

        pools = [p for p in threadpool_info() if p.get("user_api") == "blas"]
    except Exception:  # threadpoolctl missing or failing on an unusual BLAS
        return 1
    own = [p for p in pools if "numpy" in (p.get("filepath") or "")] or pools
    return min([p.get("num_threads") or 1 for p in own] or [1])


def numba_threads() -> int:
    """The threads Numba's parallel loops may use now (1 without Numba)."""
    try:
        import numba
    except ImportError:
        return 1
    return numba.get_num_threads()
