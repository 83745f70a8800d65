"""``RUN_DIR/.lock``: one process writes a run folder at a time."""
from __future__ import annotations

import os
import socket
import sys
from contextlib import contextmanager
from pathlib import Path

from fastnet.errors import FastnetError
from fastnet.util.reader import read_bytes

# ------------------------------------------------------------------------------ the lock

LOCK = ".lock"


def _pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine (a zombie counts as dead)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, belongs to another user
        return True
    except (OSError, OverflowError):
        return False
    try:  # an exited child its parent has not reaped yet still answers kill(0)
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True


@contextmanager
def _folder_mutex(folder: Path):
    """flock on the folder itself, so that checking and taking over a stale lock is one step."""
    try:
        import fcntl

        fd = os.open(folder, os.O_RDONLY)
    except (ImportError, OSError):
        yield
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:
            pass
        yield
    finally:
        os.close(fd)  # releases the flock


class RunLock:
    """``RUN_DIR/.lock``: created with O_CREAT | O_EXCL and holding ``"<pid> <host>"``.

    A second process that finds the lock of a live process is refused with a FastnetError;
    the lock of a process that no longer exists (killed, machine restarted) is taken over with
    a notice on stderr. Checking and taking over happen under an flock on the folder, so two
    processes cannot both take over the same stale lock. A lock from another host cannot be
    checked and is treated as live (the message says how to remove it).
    """

    def __init__(self, folder, notice=None):
        self.folder = Path(folder)
        self.path = self.folder / LOCK
        self.held = False
        self.notice = notice or (lambda msg: print(msg, file=sys.stderr))

    def _holder(self) -> tuple[int | None, str]:
        try:
            text = read_bytes(self.path, "json", OSError).decode("ascii", "replace").split()
        except FileNotFoundError:
            return None, ""
        except OSError:  # unreadable, or no regular file (a FIFO would block the open)
            return None, "?"
        try:
            return int(text[0]), text[1] if len(text) > 1 else socket.gethostname()
        except (IndexError, ValueError):
            return None, "?"  # empty or garbage: the writer died before finishing it

    def acquire(self) -> "RunLock":
        me = f"{os.getpid()} {socket.gethostname()}\n".encode()
        try:
            with _folder_mutex(self.folder):
                for _ in range(3):
                    try:
                        fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
                    except FileExistsError:
                        pid, host = self._holder()
                        if pid is not None and host != socket.gethostname():
                            raise FastnetError(f"{self.folder} is in use by fastnet process {pid} on {host}; if no run is active there, delete {self.path}") from None
                        if pid is not None and _pid_alive(pid):
                            raise FastnetError(f"{self.folder} is in use by another fastnet process (pid {pid}); wait for it to finish or choose another --out") from None
                        if host:
                            what = f"process {pid} no longer runs" if pid is not None else "it is unreadable"
                            self.notice(f"fastnet: taking over the stale lock {self.path} ({what})")
                        self.path.unlink(missing_ok=True)
                        continue
                    try:
                        os.write(fd, me)
                        os.fsync(fd)
                    finally:
                        os.close(fd)
                    self.held = True
                    return self
        except OSError as exc:
            raise FastnetError(f"cannot lock the run folder {self.folder} ({exc.strerror or exc})") from None
        raise FastnetError(f"cannot lock the run folder {self.folder}: {self.path} keeps reappearing")

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        try:
            if self._holder()[0] == os.getpid():
                self.path.unlink()
        except OSError:
            pass

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
