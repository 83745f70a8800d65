"""Where a sweep's tasks run: local worker processes or a Dask cluster, behind one
:class:`concurrent.futures.Executor` interface.

* :func:`worker_pool` starts a :class:`~concurrent.futures.ProcessPoolExecutor` of processes
  started with ``spawn``, each with its BLAS / OpenMP / Numba threads pinned to 1 before numpy
  loads (:func:`pin_threads` is the pool's initializer), so that N runs share N cores instead
  of fighting over them;
* :func:`dask_pool` connects to a running ``dask.distributed`` scheduler and uses the client's
  executor (``Client.get_executor``); each task writes its folder where the sweep asked, so
  the cluster's workers must see that path (one machine, or a shared file system).

Either comes as a :class:`SweepPool`: the executor, the number of tasks it runs at once (from
how the pool was made, or asked of the scheduler), how messages name it, and which failures of
a task mean that the pool lost it. :func:`run_tasks` submits tasks to either and hands each
result back as it finishes.

This module imports nothing heavy at import time: a spawned worker imports it to pin its
threads before numpy is loaded.
"""
from __future__ import annotations

import os
import sys
from concurrent.futures import Executor, as_completed
from dataclasses import dataclass
from typing import Callable

from fastnet.errors import FastnetError

THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")


def pin_threads() -> None:
    """Limit BLAS, OpenMP and Numba to one thread in this process.

    The environment variables take effect for libraries loaded afterwards (a spawned worker
    runs this before it imports numpy); ``threadpoolctl`` limits the pools already loaded.
    """
    for name in THREAD_ENV:
        os.environ[name] = "1"
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1)  # not as a context manager: stays in force
    if "numba" in sys.modules:
        try:
            sys.modules["numba"].set_num_threads(1)
        except Exception:  # pragma: no cover - numba without a threading layer
            pass


def default_workers() -> int:
    """The cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


@dataclass
class SweepPool:
    """An executor for a sweep's tasks and what a sweep must know about it. A context manager:
    leaving it shuts the executor down (waiting for running tasks unless an exception left)."""

    executor: Executor
    workers: int                          # tasks it runs at once: how many lock-step groups to plan
    where: str                            # "2 worker processes (...)", "the dask cluster ADDRESS (...)"
    lost: tuple[type[BaseException], ...]  # what a future raises when the pool lost its task
    lost_message: str                     # the failed run's message, formatted with kind= and exc=
    close: Callable[[bool], None]         # close(wait)

    def __enter__(self) -> SweepPool:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(exc_type is None)


def worker_pool(workers: int | None = None) -> SweepPool:
    """``workers`` processes (default: the cores), started with ``spawn`` and pinned to one BLAS
    thread each; they start as tasks arrive and keep the data they loaded between sweeps."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    n = workers or default_workers()
    ctx = multiprocessing.get_context("spawn")  # a fresh interpreter: pins threads before numpy loads
    executor = ProcessPoolExecutor(max_workers=n, mp_context=ctx, initializer=pin_threads)
    return SweepPool(executor, n, f"{n} worker processes (BLAS threads pinned to 1)", (BrokenProcessPool,),
                     "worker process died ({exc})", lambda wait: executor.shutdown(wait=wait, cancel_futures=not wait))


def dask_pool(address: str, connect_timeout: float = 20.0) -> SweepPool:
    """The executor of a ``dask.distributed`` client of the scheduler at ``address``, its workers
    pinned to one BLAS thread; a task the cluster loses fails with the cluster's error."""
    try:
        from distributed import Client
    except ImportError:
        raise FastnetError("--scheduler needs dask.distributed; install it with: pip install 'fastnet[dask]'") from None
    try:
        client = Client(address, timeout=f"{connect_timeout}s")
    except (OSError, TimeoutError) as exc:
        raise FastnetError(f"cannot reach the dask scheduler at {address} ({exc})") from None
    try:
        client.run(pin_threads)
        threads = client.nthreads()  # worker address -> threads: every worker, however many
    except BaseException:
        client.close()
        raise
    executor = client.get_executor(pure=False)  # every submission trains, even with the same arguments

    def close(wait: bool) -> None:
        try:
            executor.shutdown(wait=wait)
        finally:
            client.close()

    return SweepPool(executor, max(1, sum(threads.values())), f"the dask cluster {address} ({len(threads)} workers)",
                     (Exception,), "dask: {kind}: {exc}", close)  # the tasks never raise: an exception is the cluster's


def run_tasks(pool: SweepPool, tasks: dict, done: Callable) -> None:
    """Submit every task (``key: (function, arguments)``, in order) to ``pool`` at once, and as
    each finishes call ``done(key, result, None)``, or ``done(key, None, message)`` for a task
    the pool lost (a worker process died, the cluster failed). On any exception (Ctrl-C
    included) the tasks not yet started are cancelled."""
    futures = {pool.executor.submit(fn, *args): key for key, (fn, args) in tasks.items()}
    try:
        for fut in as_completed(futures):
            try:
                result = fut.result()
            except pool.lost as exc:
                done(futures[fut], None, pool.lost_message.format(kind=type(exc).__name__, exc=exc))
                continue
            done(futures[fut], result, None)
    except BaseException:
        for fut in futures:
            fut.cancel()
        raise
