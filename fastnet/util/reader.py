"""The one reader of every file fastnet opens: regular files only, a size cap per kind.

A path is checked with :func:`os.stat` before it is opened, and opened with ``O_NONBLOCK``
and checked again on the open descriptor (:func:`os.fstat`), so a FIFO, a device, a socket
or a folder where a file belongs is one sentence, never a hang (a FIFO's blocking open waits
for a writer forever) nor an endless read (``/dev/zero``), even if the path is swapped
between the two checks. A file larger than its kind's cap is refused before it is read, and
no more than the cap is ever read (a file that grows while read is refused too).

The caps (:data:`CAPS`) are far above what fastnet writes or the official data holds.
Errors are ``error(sentence)``: the caller says which of its error classes (DataError for
the data set, ValueError where the caller adds the file's role, ...) the sentence becomes;
a missing file stays a :class:`FileNotFoundError` for callers to whom absence is normal.
"""
from __future__ import annotations

import io
import os
import stat
from pathlib import Path

from fastnet.errors import FastnetError

MB = 1 << 20
#: bytes per kind of file: the largest fastnet accepts.
CAPS = {
    "batch": 1 << 30,      # a CIFAR-10 batch file: 31 MB
    "meta": 1 * MB,        # batches.meta: 200 bytes
    "archive": 1 << 31,    # cifar-10-python.tar.gz: 163 MB
    "json": 16 * MB,       # config, metrics, status, specs: a few kB
    "csv": 256 * MB,       # history.csv / steps.csv: 100 bytes a row
    "npz": 1 << 31,        # model.npz / checkpoint.npz (their members are capped again)
}

_KINDS = {stat.S_IFIFO: "a FIFO (named pipe)", stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device",
          stat.S_IFSOCK: "a socket", stat.S_IFDIR: "a folder", stat.S_IFLNK: "a link"}


def _not_regular(path: Path, mode: int) -> str:
    what = _KINDS.get(stat.S_IFMT(mode), "not a regular file")
    return f"cannot read {path}: it is {what}, not a regular file, and fastnet reads only regular files"


def open_regular(path, kind: str, error=FastnetError) -> io.BufferedReader:
    """``path`` opened for binary reading if it is a regular file within ``CAPS[kind]``.

    Raises FileNotFoundError if it does not exist, else ``error(sentence)`` for a special
    file, a file over the cap or one that cannot be opened.
    """
    path, cap = Path(path), CAPS[kind]
    try:
        st = os.stat(path)  # follows links: a link to /dev/zero is /dev/zero
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the path
        raise error(f"cannot read {path} ({getattr(exc, 'strerror', None) or exc})") from None
    if not stat.S_ISREG(st.st_mode):
        raise error(_not_regular(path, st.st_mode))
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise error(f"cannot read {path} ({exc.strerror or exc})") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):  # swapped for something else since the stat
        os.close(fd)
        raise error(_not_regular(path, st.st_mode))
    if st.st_size > cap:
        os.close(fd)
        raise error(f"cannot read {path}: it is {st.st_size:,} bytes, more than the {cap:,} any {kind} file "
                    f"of fastnet's holds, so it is not the file it should be")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def read_bytes(path, kind: str, error=FastnetError) -> bytes:
    """The whole of ``path`` (:func:`open_regular`), never more than ``CAPS[kind]`` bytes."""
    cap = CAPS[kind]
    with open_regular(path, kind, error) as f:
        try:
            raw = f.read(cap + 1)
        except OSError as exc:
            raise error(f"cannot read {path} ({exc.strerror or exc})") from None
    if len(raw) > cap:
        raise error(f"{path} grew beyond {cap:,} bytes while being read; it is not the file it should be")
    return raw


def read_text(path, kind: str, error=FastnetError) -> str:
    """``path`` as UTF-8 text (:func:`read_bytes`); undecodable bytes are ``error``."""
    raw = read_bytes(path, kind, error)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{path} is not UTF-8 text (byte {exc.start})") from None
