"""``RUN_DIR/.lock``: one process writes a run folder at a time.

The lock is an flock held through :mod:`filelock` while the folder is written: the operating
system releases it when the process ends, however it ends (killed, machine restarted), so a
lock left behind is never mistaken for a live one and nothing guesses from process ids
whether its writer still runs. Written here: the holder's ``"<pid> <host>"`` in the file, to
name it in the refusal, and the removal of the file on release.
"""
from __future__ import annotations

import os
import socket
from pathlib import Path

from fastnet.errors import FastnetError
from fastnet.util.reader import read_bytes

LOCK = ".lock"


class RunLock:
    """``RUN_DIR/.lock``, held while a process writes the folder.

    A second process (or a second RunLock in this one) is refused with a FastnetError naming
    the holder. A lock file whose process is gone is unlocked and simply taken. On release the
    file is removed while still locked; a process that opened it just before then finds, once
    it holds the lock, that the path no longer names its file, and tries again.
    """

    def __init__(self, folder):
        self.folder = Path(folder)
        self.path = self.folder / LOCK
        self.held = False
        self._lock = None

    def _holder(self) -> tuple[int | None, str]:
        try:
            text = read_bytes(self.path, "json", OSError).decode("ascii", "replace").split()
        except OSError:  # gone, unreadable, or no regular file (a FIFO would block the open)
            return None, ""
        try:
            return int(text[0]), text[1] if len(text) > 1 else socket.gethostname()
        except (IndexError, ValueError):
            return None, ""  # written only in part

    def _record(self, fd: int) -> None:
        """filelock's on_acquired: check the path is the file locked, then write the holder."""
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(self.path))
        except FileNotFoundError:
            same = False
        if not same:
            raise FileNotFoundError(f"{self.path} was removed by its last holder")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
        os.fsync(fd)

    def _refusal(self) -> FastnetError:
        pid, host = self._holder()
        if pid is not None and host != socket.gethostname():
            return FastnetError(f"{self.folder} is in use by fastnet process {pid} on {host}; if no run is active there, delete {self.path}")
        who = f"pid {pid}" if pid is not None else "pid unknown"
        return FastnetError(f"{self.folder} is in use by another fastnet process ({who}); wait for it to finish or choose another --out")

    def acquire(self) -> RunLock:
        from filelock import FileLock, Timeout

        for _ in range(3):
            lock = FileLock(self.path, timeout=0, thread_local=False, on_acquired=self._record)
            try:
                lock.acquire()
            except Timeout:
                raise self._refusal() from None
            except FileNotFoundError:
                continue  # the path was removed by the holder that released it: try the new file
            except OSError as exc:
                raise FastnetError(f"cannot lock the run folder {self.folder} ({exc.strerror or exc})") from None
            self._lock, self.held = lock, True
            return self
        raise FastnetError(f"cannot lock the run folder {self.folder}: {self.path} keeps disappearing")

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        try:
            self.path.unlink()  # while still locked: see the class docstring
        except OSError:
            pass
        self._lock.release()

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
