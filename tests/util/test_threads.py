"""idle_cores: the cores other processes leave free, from the load average and the runnable
threads that are not this process's own."""
import hashlib
import os
import threading

import pytest

from fastnet.util import threads

LINUX = os.path.exists("/proc/self/task")


def fake_machine(monkeypatch, load: float, runnable: list[int], own: int = 1, cores: int = 2):
    looks = iter(runnable)
    monkeypatch.setattr(os, "cpu_count", lambda: cores)
    monkeypatch.setattr(os, "getloadavg", lambda: (load, load, load))
    monkeypatch.setattr(threads, "runnable_threads", lambda: next(looks))
    monkeypatch.setattr(threads, "own_running_threads", lambda: own)
    monkeypatch.setattr(threads.time, "sleep", lambda s: None)


def test_a_process_running_all_along_takes_a_core(monkeypatch):
    fake_machine(monkeypatch, load=1.0, runnable=[2] * threads.LOOKS)
    assert threads.idle_cores() == 1


def test_a_moments_blip_takes_none(monkeypatch):
    """A kernel thread runnable at one look, with this process's own load in the average."""
    fake_machine(monkeypatch, load=0.8, runnable=[3, 2, 1, 2, 3])
    assert threads.idle_cores() == 2


def test_this_process_s_own_spinning_threads_are_not_load(monkeypatch):
    """A notebook's second fit: the first one's threads still spin, and its work is in the average."""
    fake_machine(monkeypatch, load=1.0, runnable=[3] * threads.LOOKS, own=3)
    assert threads.idle_cores() == 2


def test_never_fewer_than_one(monkeypatch):
    fake_machine(monkeypatch, load=7.0, runnable=[8] * threads.LOOKS)
    assert threads.idle_cores() == 1


@pytest.mark.skipif(not LINUX, reason="no /proc/self/task on this platform")
def test_own_running_threads_counts_a_spinning_thread():
    stop = threading.Event()
    data = b"x" * 10**6

    def spin():
        while not stop.is_set():
            hashlib.sha256(data)  # hashes of large data release the GIL: the thread really runs

    spinner = threading.Thread(target=spin)
    spinner.start()
    try:
        seen = max(threads.own_running_threads() for _ in range(200))
    finally:
        stop.set()
        spinner.join()
    assert seen >= 2
    assert threads.runnable_threads() >= 1
