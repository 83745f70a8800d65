"""Unpickling the batch files without running code.

Pickles can run code when loaded, so batch files are never given to :func:`pickle.load`.
:class:`_BatchUnpickler` admits only the few global names that a pickled numpy array uses,
and maps them to inert stand-ins that record the array's shape, dtype and bytes; the array
is built by :func:`numpy.frombuffer` only after those have been checked. Anything else in the
file is refused with a :class:`~fastnet.errors.DataError`, as is every other kind of
damage (truncation, garbage, wrong shape or dtype): no other exception escapes."""
from __future__ import annotations

import io
import os
import pickle
import pickletools
import re
import struct
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fastnet.errors import DataError
from fastnet.util.reader import CAPS, read_bytes

MAX_FILE_BYTES = CAPS["batch"]  # an official batch is 31 MB; refuse to read absurd files
MAX_OPCODES = 1 << 20          # an official batch has about 40,000
BUILD_FACTOR = 2               # bytes built by the stand-ins per byte of the file, at most
BUILD_SLACK = 1 << 20

# --------------------------------------------------------------------------- safe unpickling

class _Refused(Exception):
    """A check inside the unpickler failed; carries the reason without the file name."""


class _StandIn:
    """An admitted global name: calls ``func``, and refuses to be modified by a BUILD opcode."""

    __slots__ = ("func",)

    def __init__(self, func: Any) -> None:
        self.func = func

    def __call__(self, *args: Any) -> Any:
        return self.func(*args)

    def __setstate__(self, state: Any) -> None:
        raise _Refused("the pickle tries to modify a class or function")


def _not_callable(*args: Any) -> None:
    """What calling numpy.ndarray directly gets: CIFAR-10 files never do it."""
    raise _Refused("numpy.ndarray called directly")


_DTYPE_SPEC = re.compile(r"[<>|=]?[biuf][1248]")


class _DtypeStub:
    """Stands for ``numpy.dtype(spec, align, copy)``; admits plain numeric dtypes only."""

    __slots__ = ("dtype",)

    def __init__(self, spec: Any, align: Any = False, copy: Any = True) -> None:
        text = spec.decode("ascii") if isinstance(spec, bytes) else spec
        if not isinstance(text, str) or not _DTYPE_SPEC.fullmatch(text):
            raise _Refused(f"unsupported array dtype {spec!r}")
        self.dtype = np.dtype(text)

    def __setstate__(self, state: Any) -> None:
        """Apply the byte order of a pickled dtype state ``(version, byteorder, ...)``."""
        if not isinstance(state, tuple) or len(state) < 2 or any(s is not None for s in state[2:5]):
            raise _Refused("unsupported array dtype state")
        order = state[1].decode("ascii") if isinstance(state[1], bytes) else state[1]
        if order not in ("<", ">", "|", "="):
            raise _Refused(f"unsupported byte order {order!r}")
        if order in "<>":
            self.dtype = self.dtype.newbyteorder(order)


class ArrayStub:
    """Stands for a pickled ``numpy.ndarray``; :meth:`__setstate__` builds the real array."""

    __slots__ = ("array",)

    def __init__(self) -> None:
        self.array: NDArray[Any] | None = None

    def __setstate__(self, state: Any) -> None:
        """Check ``([version,] shape, dtype, is_fortran, raw)``; only then wrap ``raw``."""
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise _Refused("malformed array state")
        shape, dtype, fortran, raw = state[-4:]
        if not (isinstance(shape, tuple) and len(shape) <= 8
                and all(type(s) is int and s >= 0 for s in shape)):
            raise _Refused(f"malformed array shape {shape!r}")
        if not isinstance(dtype, _DtypeStub) or not isinstance(raw, bytes):
            raise _Refused("array without a numeric dtype and raw bytes")
        if len(raw) != dtype.dtype.itemsize * int(np.prod(shape, dtype=object)):
            raise _Refused(f"array of shape {shape} and dtype {dtype.dtype} "
                           f"does not match its {len(raw)} bytes")
        flat = np.frombuffer(raw, dtype=dtype.dtype)
        self.array = flat.reshape(shape, order="F" if fortran else "C")


def _reconstruct(cls: Any, shape: Any, typecode: Any) -> ArrayStub:
    """Stands for ``numpy.core.multiarray._reconstruct(ndarray, (0,), b"b")``."""
    if cls is not _NDARRAY:
        raise _Refused("array reconstruction of something other than numpy.ndarray")
    return ArrayStub()


class Budget:
    """What an unpickling may build beyond the bytes of its file.

    The opcodes are bounded by the file, but a stand-in that copies (``_codecs.encode``
    makes new bytes from a str) can be called again and again on one memoised string: a few
    MB of ``BINGET; REDUCE`` pairs would build gigabytes. Every byte a stand-in builds is
    spent here; more than ``BUILD_FACTOR`` times the file (plus ``BUILD_SLACK``) is refused.
    """

    __slots__ = ("left",)

    def __init__(self, file_bytes: int) -> None:
        self.left = BUILD_FACTOR * file_bytes + BUILD_SLACK

    def spend(self, n: int) -> None:
        self.left -= n
        if self.left < 0:
            raise _Refused("the pickle builds far more data than the file holds")


def _latin1(text: Any, encoding: Any, budget: Budget | None = None) -> bytes:
    """Stands for ``_codecs.encode(text, "latin1")``: how Python 3 pickles bytes at protocol 2."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise _Refused("unsupported _codecs.encode call")
    if budget is not None:
        budget.spend(len(text))
    return text.encode("latin1")


_NDARRAY = _StandIn(_not_callable)
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _StandIn(_reconstruct),   # numpy 1 (official)
    ("numpy._core.multiarray", "_reconstruct"): _StandIn(_reconstruct),  # numpy 2
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _StandIn(_DtypeStub),
    ("_codecs", "encode"): _StandIn(_latin1),                            # bytes from Python 3
}


class _BatchUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the names a pickled numpy array needs, to stand-ins."""

    def __init__(self, file: io.BytesIO, path: Path, budget: Budget | None = None) -> None:
        super().__init__(file, encoding="bytes")
        self.path = path
        self.budget = budget if budget is not None else Budget(len(file.getbuffer()))
        self.encode = _StandIn(lambda text, encoding: _latin1(text, encoding, self.budget))

    def find_class(self, module: str, name: str) -> Any:
        """Return the stand-in for an admitted name; refuse every other global."""
        if (module, name) == ("_codecs", "encode"):
            return self.encode  # the one stand-in that copies: it spends this file's budget
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        what = short_repr(f"{module}.{name}")
        raise DataError(f"refusing to unpickle {what} from {self.path}: CIFAR-10 batch files "
                        f"contain only numpy arrays")

    def persistent_load(self, pid: Any) -> Any:
        """Refuse persistent ids, which CIFAR-10 files never use."""
        raise _Refused("unsupported persistent id")


def _check_opcodes(raw: bytes) -> None:
    """Walk the opcodes of ``raw`` without building anything, before the real unpickling.

    :mod:`pickletools` fails on any length that overruns the file, so the unpickler never
    allocates for a claimed size the file cannot back; memo indices are bounded by the
    opcode count because the C unpickler allocates its memo up to the largest index (a
    9-byte file asking for index 10^9 would take 16 GB).
    """
    for count, (op, arg, _) in enumerate(pickletools.genops(raw)):
        if count >= MAX_OPCODES:
            raise _Refused(f"more than {MAX_OPCODES} opcodes, far more than a CIFAR-10 batch file has")
        if op.name in ("PUT", "BINPUT", "LONG_BINPUT") and not 0 <= arg <= count:
            raise _Refused(f"memo index {arg} out of range")


_BAD_PICKLE = (pickle.UnpicklingError, _Refused, EOFError, ValueError, TypeError, LookupError,
               AttributeError, MemoryError, OverflowError, RecursionError, struct.error)


def short_repr(text: object, limit: int = 120) -> str:
    """``str(text)`` cut to ``limit`` characters: a hostile file can make any text huge."""
    text = str(text)
    return text if len(text) <= limit else text[:limit] + "..."


def unpickle_batch(path: str | os.PathLike[str], kind: str = "batch") -> Any:
    """Read ``path`` (a file of :data:`fastnet.util.reader.CAPS` ``kind``: "batch" or
    "meta") with :class:`_BatchUnpickler` within a :class:`Budget`; any failure becomes a
    DataError."""
    path = Path(path)
    try:
        raw = read_bytes(path, kind, DataError)   # regular files only, at most CAPS[kind] bytes
    except FileNotFoundError:
        raise DataError(f"cannot read {path}: it does not exist; check the data directory") from None
    try:
        with warnings.catch_warnings():   # a damaged STRING opcode warns of bad escapes
            warnings.simplefilter("ignore")
            _check_opcodes(raw)
            return _BatchUnpickler(io.BytesIO(raw), path, Budget(len(raw))).load()
    except DataError:
        raise
    except _BAD_PICKLE as exc:
        detail = exc if isinstance(exc, _Refused) else f"{type(exc).__name__}: {exc}"
        raise DataError(f"{path} is not a readable CIFAR-10 batch file ({short_repr(detail)}); it "
                        f"is truncated or corrupt, get the data set again") from None
