"""CIFAR-10: find, download, extract and load the "python version", split and normalise it.

The data set is the official archive ``cifar-10-python.tar.gz`` or the folder
``cifar-10-batches-py`` that it holds: ``data_batch_1`` ... ``data_batch_5``, ``test_batch``
and ``batches.meta``, each a Python-2 pickle of a dict with ``data`` (uint8, (n, 3072), rows
R...G...B of 32x32 images) and ``labels`` (n ints in 0..9).

Pickles can run code when loaded, so batch files are never given to :func:`pickle.load`.
:class:`_BatchUnpickler` admits only the few global names that a pickled numpy array uses,
and maps them to inert stand-ins that record the array's shape, dtype and bytes; the array
is built by :func:`numpy.frombuffer` only after those have been checked. Anything else in the
file is refused with a :class:`~fastnet.errors.DataError`, as is every other kind of
damage (truncation, garbage, wrong shape or dtype): no other exception escapes.
"""
from __future__ import annotations

import ctypes
import hashlib
import io
import os
import pickle
import pickletools
import re
import shutil
import struct
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import warnings
import zlib
from dataclasses import dataclass, field
from http.client import HTTPException
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from numpy.typing import DTypeLike, NDArray

from .errors import ConfigError, DataError

OFFICIAL_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
OFFICIAL_MD5 = "c58f30108f718f92721af3b95e74349a"
FOLDER = "cifar-10-batches-py"
ARCHIVE = "cifar-10-python.tar.gz"

TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
REQUIRED = (*TRAIN_BATCHES, TEST_BATCH)
N_FEATURES = 3072
N_CLASSES = 10
LABEL_NAMES = ("airplane", "automobile", "bird", "cat", "deer",
               "dog", "frog", "horse", "ship", "truck")

MAX_FILE_BYTES = 1 << 30       # an official batch is 31 MB; refuse to read absurd files
MAX_ARCHIVE_BYTES = 2 << 30    # the official archive unpacks to 178 MB
TIMEOUT = 60.0                 # seconds without data before a download gives up
_CHUNK = 1 << 20
_SPLITS = ("a3", "a2")


def default_data_dir() -> Path:
    """Return where fastnet keeps CIFAR-10 unless told otherwise.

    Returns
    -------
    Path
        ``$FASTNET_DATA`` if set, else ``$XDG_CACHE_HOME/fastnet``, else ``~/.cache/fastnet``.
    """
    if os.environ.get("FASTNET_DATA"):
        return Path(os.environ["FASTNET_DATA"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "fastnet"
    return Path.home() / ".cache" / "fastnet"


def _missing(folder: Path) -> list[str]:
    """Names of the batch files that ``folder`` lacks (all of them if it is no folder)."""
    return [name for name in REQUIRED if not (folder / name).is_file()]


def find_cifar10(data_dir: str | os.PathLike[str] | None = None, *, download: bool = False,
                 url: str = OFFICIAL_URL, md5: str | None = OFFICIAL_MD5,
                 progress: bool = True) -> Path:
    """Locate the ``cifar-10-batches-py`` folder, extracting or downloading it if asked.

    Parameters
    ----------
    data_dir : path or None
        The ``cifar-10-batches-py`` folder itself, a folder that contains it, or a folder that
        contains ``cifar-10-python.tar.gz`` (extracted beside the archive on first use), or
        that archive itself. None means :func:`default_data_dir`.
    download : bool
        If nothing is found, download the archive from ``url`` into ``data_dir`` and extract it.
    url, md5, progress
        Passed to :func:`download_cifar10`.

    Returns
    -------
    Path
        The folder holding ``data_batch_1`` ... ``data_batch_5`` and ``test_batch``.

    Raises
    ------
    DataError
        If the data is not found (the message lists every place looked in), or an archive or
        download is bad.
    """
    root = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    if root.is_file() and root.name.endswith((".tar.gz", ".tgz")):
        return extract_cifar10(root, root.parent)
    if root.is_dir() and not _missing(root):
        return root
    folder, archive = root / FOLDER, root / ARCHIVE
    if folder.exists() or archive.is_file():
        return extract_cifar10(archive, root)   # returns a complete folder or says what is wrong
    if download:
        return extract_cifar10(download_cifar10(root, url, md5, progress), root)
    if len(missing := _missing(root)) < len(REQUIRED):
        raise DataError(f"{root} holds only some CIFAR-10 batch files (missing "
                        f"{', '.join(missing)}); get the whole data set with `fastnet download`")
    raise DataError(
        f"CIFAR-10 not found: looked for the batch files in {root}, in {folder} and for the "
        f"archive {archive}; run `fastnet download` (or pass --download), or point --data-dir "
        f"or FASTNET_DATA at a folder that holds {FOLDER} or {ARCHIVE}")


def _progress_line(name: str, done: int, total: int | None) -> str:
    """The text of the download progress line: percentage when the size is known, else MB."""
    if total:
        percent = 100 * done // total
        return f"\rdownloading {name}: {percent:3d}% ({done / 1e6:.1f} of {total / 1e6:.1f} MB)"
    return f"\rdownloading {name}: {done / 1e6:.1f} MB"


def _fetch(url: str, part: Path, progress: bool) -> str:
    """Stream ``url`` into ``part``; return the md5 of what was written."""
    digest = hashlib.md5()
    with urllib.request.urlopen(url, timeout=TIMEOUT) as response, open(part, "wb") as out:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        done, shown = 0, 0.0
        try:
            while chunk := response.read(_CHUNK):
                out.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                if progress and time.monotonic() - shown > 0.2:
                    sys.stderr.write(_progress_line(ARCHIVE, done, total))
                    shown = time.monotonic()
        finally:   # end the line even when the download fails, so errors start on their own
            if progress:
                sys.stderr.write(_progress_line(ARCHIVE, done, total) + "\n")
        if total is not None and done != total:
            raise DataError(f"download of {url} stopped after {done} of {total} bytes; "
                            f"try again")
    return digest.hexdigest()


def download_cifar10(dest_dir: str | os.PathLike[str], url: str = OFFICIAL_URL,
                     md5: str | None = OFFICIAL_MD5, progress: bool = True) -> Path:
    """Download the CIFAR-10 archive into ``dest_dir`` and check its md5.

    Parameters
    ----------
    dest_dir : path
        Folder to write ``cifar-10-python.tar.gz`` into (created if needed).
    url : str
        Where to get it; any URL that :mod:`urllib.request` opens (``https``, ``http``,
        ``file``).
    md5 : str or None
        Expected md5 hex digest; None skips the check.
    progress : bool
        Show a progress line on stderr.

    Returns
    -------
    Path
        The archive. It is written as ``<name>.part`` and renamed only once complete and
        verified, so a file with the final name is always whole.

    Raises
    ------
    DataError
        If the download fails (the message names the URL and the reason) or the md5 differs.
    """
    dest = Path(dest_dir).expanduser()
    final = dest / ARCHIVE
    part = dest / (ARCHIVE + ".part")
    try:
        dest.mkdir(parents=True, exist_ok=True)
        got = _fetch(url, part, progress)
    except DataError:
        part.unlink(missing_ok=True)
        raise
    except (OSError, ValueError, HTTPException) as exc:   # URLError and timeouts are OSErrors
        part.unlink(missing_ok=True)
        if isinstance(exc, urllib.error.HTTPError):
            exc.close()   # it holds the open connection
            reason: object = exc
        else:
            reason = getattr(exc, "reason", None) or exc
        raise DataError(f"could not download {url} to {final}: {reason}; check the address, "
                        f"the connection and that {dest} is writable, or download the archive "
                        f"by hand and pass --data-dir") from None
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    if md5 is not None and got != md5.lower():
        part.unlink(missing_ok=True)
        raise DataError(f"{url} has md5 {got}, expected {md5}: the download is corrupt or is not "
                        f"the CIFAR-10 archive; try again or check the URL")
    os.replace(part, final)
    return final


def _member_path(member: tarfile.TarInfo, archive: Path) -> PurePosixPath:
    """The relative path of a safe archive member; DataError for anything else."""
    path = PurePosixPath(member.name)
    if path.is_absolute() or ".." in path.parts or "\\" in member.name:
        problem = "has an unsafe path"
    elif not (path.parts and path.parts[0] == FOLDER):
        problem = f"is outside {FOLDER}/"
    elif not (member.isfile() or member.isdir()):
        problem = "is a link or device, not a regular file"
    else:
        return path
    raise DataError(f"refusing to extract {archive}: member {member.name!r} {problem}; "
                    f"this is not the CIFAR-10 archive, delete it and download it again")


def _extract_members(tar: tarfile.TarFile, archive: Path, into: Path) -> None:
    """Write the regular files of ``tar`` below ``into``, checking every member first."""
    total = 0
    for member in tar:
        path = into.joinpath(*_member_path(member, archive).parts)
        if member.isdir():
            path.mkdir(parents=True, exist_ok=True)
            continue
        total += member.size
        if total > MAX_ARCHIVE_BYTES:
            raise DataError(f"refusing to extract {archive}: it unpacks to more than "
                            f"{MAX_ARCHIVE_BYTES >> 20} MB, far more than CIFAR-10")
        path.parent.mkdir(parents=True, exist_ok=True)
        source = tar.extractfile(member)
        assert source is not None   # regular files always have contents
        with source, open(path, "wb") as out:
            shutil.copyfileobj(source, out, _CHUNK)


def extract_cifar10(archive: str | os.PathLike[str], dest_dir: str | os.PathLike[str]) -> Path:
    """Safely extract the CIFAR-10 archive into ``dest_dir``, unless that was done already.

    Parameters
    ----------
    archive : path
        A ``.tar.gz`` whose members all lie below ``cifar-10-batches-py/``.
    dest_dir : path
        Folder to create ``cifar-10-batches-py`` in.

    Returns
    -------
    Path
        ``dest_dir/cifar-10-batches-py``.

    Notes
    -----
    Absolute paths, ``..`` components, links, devices and members outside
    ``cifar-10-batches-py/`` are refused; only regular files are written. Extraction goes to
    a temporary folder inside ``dest_dir`` that is renamed into place when complete, so an
    interrupted extraction never looks complete.

    Raises
    ------
    DataError
        If the archive is unsafe, truncated, corrupt or lacks batch files, or an existing
        ``cifar-10-batches-py`` is incomplete.
    """
    archive, dest = Path(archive), Path(dest_dir)
    target = dest / FOLDER
    if target.exists():
        if missing := _missing(target):
            raise DataError(f"{target} is incomplete (missing {', '.join(missing)}); delete it "
                            f"and run `fastnet download` or extract {ARCHIVE} again")
        return target
    tmp: Path | None = None
    try:
        dest.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".extracting-", dir=dest))
        with tarfile.open(archive, "r:gz") as tar:
            _extract_members(tar, archive, tmp)
        if missing := _missing(tmp / FOLDER):
            raise DataError(f"{archive} lacks {FOLDER}/{missing[0]}: it is not the CIFAR-10 "
                            f"python archive; delete it and download it again")
        os.rename(tmp / FOLDER, target)
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        if not _missing(target):   # another process finished the same extraction first
            return target
        raise DataError(f"could not extract {archive} into {dest}: {exc}; if the archive is "
                        f"truncated or corrupt, delete it and download it again") from None
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


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


class _ArrayStub:
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


def _reconstruct(cls: Any, shape: Any, typecode: Any) -> _ArrayStub:
    """Stands for ``numpy.core.multiarray._reconstruct(ndarray, (0,), b"b")``."""
    if cls is not _NDARRAY:
        raise _Refused("array reconstruction of something other than numpy.ndarray")
    return _ArrayStub()


def _latin1(text: Any, encoding: Any) -> bytes:
    """Stands for ``_codecs.encode(text, "latin1")``: how Python 3 pickles bytes at protocol 2."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise _Refused("unsupported _codecs.encode call")
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

    def __init__(self, file: io.BytesIO, path: Path) -> None:
        super().__init__(file, encoding="bytes")
        self.path = path

    def find_class(self, module: str, name: str) -> Any:
        """Return the stand-in for an admitted name; refuse every other global."""
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        what = _short(f"{module}.{name}")
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
        if op.name in ("PUT", "BINPUT", "LONG_BINPUT") and not 0 <= arg <= count:
            raise _Refused(f"memo index {arg} out of range")


_BAD_PICKLE = (pickle.UnpicklingError, _Refused, EOFError, ValueError, TypeError, LookupError,
               AttributeError, MemoryError, OverflowError, RecursionError, struct.error)


def _short(text: object, limit: int = 120) -> str:
    """``str(text)`` cut to ``limit`` characters: a hostile file can make any text huge."""
    text = str(text)
    return text if len(text) <= limit else text[:limit] + "..."


def _unpickle(path: str | os.PathLike[str]) -> Any:
    """Read ``path`` with :class:`_BatchUnpickler`; any failure becomes a DataError."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise DataError(f"{path} is {size} bytes, far larger than any CIFAR-10 batch file; "
                            f"point the data directory at the real data set")
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}; check the data "
                        f"directory") from None
    try:
        with warnings.catch_warnings():   # a damaged STRING opcode warns of bad escapes
            warnings.simplefilter("ignore")
            _check_opcodes(raw)
            return _BatchUnpickler(io.BytesIO(raw), path).load()
    except DataError:
        raise
    except _BAD_PICKLE as exc:
        detail = exc if isinstance(exc, _Refused) else f"{type(exc).__name__}: {exc}"
        raise DataError(f"{path} is not a readable CIFAR-10 batch file ({_short(detail)}); it "
                        f"is truncated or corrupt, get the data set again") from None


def _entry(d: dict[Any, Any], key: str, path: Path) -> Any:
    """``d[key]`` under a bytes key (Python-2 pickles) or a str key (Python-3 pickles)."""
    for k in (key.encode(), key):
        if k in d:
            return d[k]
    raise DataError(f"{path} has no {key!r} entry; it is not a CIFAR-10 batch file")


def _labels(value: Any, path: Path) -> NDArray[np.int64]:
    """Labels from a list of ints or an integer array, checked to lie in 0..9."""
    array = value.array if isinstance(value, _ArrayStub) else None
    if array is not None and array.ndim == 1 and array.dtype.kind in "iu":
        labels: Any = array
    elif isinstance(value, (list, tuple)) and all(type(v) is int for v in value):
        labels = value
    else:
        raise DataError(f"{path}: 'labels' is not a list of ints; it is not a CIFAR-10 "
                        f"batch file")
    lo, hi = (int(min(labels)), int(max(labels))) if len(labels) else (0, 0)
    if lo < 0 or hi >= N_CLASSES:
        raise DataError(f"{path}: labels must lie in 0..{N_CLASSES - 1}, found "
                        f"{_short(lo)}..{_short(hi)}; it is not a CIFAR-10 batch file")
    return np.array(labels, dtype=np.int64)


def _read_batch(path: Path) -> tuple[NDArray[np.uint8], NDArray[np.int64]]:
    """:func:`load_batch` without its final copy: the images are a read-only view of the
    bytes the unpickler built (C- or Fortran-ordered, as the file says)."""
    d = _unpickle(path)
    if not isinstance(d, dict):
        raise DataError(f"{path} holds a {type(d).__name__}, not a dict; it is not a "
                        f"CIFAR-10 batch file")
    data, y = _entry(d, "data", path), _labels(_entry(d, "labels", path), path)
    X = data.array if isinstance(data, _ArrayStub) else None
    if X is None or X.dtype != np.uint8 or X.ndim != 2 or X.shape[1] != N_FEATURES:
        what = f"{X.dtype} array of shape {X.shape}" if X is not None else type(data).__name__
        raise DataError(f"{path}: 'data' is a {what}, expected uint8 of shape (n, "
                        f"{N_FEATURES}); it is not a CIFAR-10 batch file")
    if len(X) != len(y):
        raise DataError(f"{path} has {len(X)} images but {len(y)} labels; the file is corrupt")
    return X, y


def load_batch(path: str | os.PathLike[str]) -> tuple[NDArray[np.uint8], NDArray[np.int64]]:
    """Load one CIFAR-10 batch file safely.

    Parameters
    ----------
    path : path
        A file such as ``data_batch_1`` or ``test_batch``.

    Returns
    -------
    X : ndarray of uint8, shape (n, 3072)
        Images, one per row (R, G, B planes of 32x32), C-contiguous and writable.
    y : ndarray of int64, shape (n,)
        Labels in 0..9.

    Raises
    ------
    DataError
        If the file is missing, unreadable, truncated, corrupt, of the wrong shape or dtype,
        or refers to anything but numpy arrays (the message names the file and the problem).
    """
    X, y = _read_batch(Path(path))
    return np.array(X, order="C"), y


def load_label_names(folder: str | os.PathLike[str]) -> list[str]:
    """Class names from ``folder/batches.meta``, or the 10 standard ones if it is absent.

    Parameters
    ----------
    folder : path
        The ``cifar-10-batches-py`` folder.

    Returns
    -------
    list of str
        Ten names, index = label.

    Raises
    ------
    DataError
        If ``batches.meta`` exists but is unsafe or malformed.
    """
    path = Path(folder) / "batches.meta"
    if not path.exists():
        return list(LABEL_NAMES)
    d = _unpickle(path)
    names = _entry(d, "label_names", path) if isinstance(d, dict) else None
    if not (isinstance(names, list) and len(names) == N_CLASSES
            and all(isinstance(n, (bytes, str)) for n in names)):
        raise DataError(f"{path} does not list {N_CLASSES} label names; delete it or get the "
                        f"data set again")
    return [n.decode("utf-8", "replace") if isinstance(n, bytes) else n for n in names]


# --------------------------------------------------------------------------- the data set

class NormalisedImages:
    """uint8 images normalised as they are read: rows of ``(pixels - mean) / std`` as ``dtype``.

    The test set of :func:`load_cifar10`. It is read once, at the end of a run, a chunk of rows
    at a time (:func:`fastnet.network.evaluate` and ``predict`` slice their input), so it is
    kept at one byte a pixel -- 31 MB for 10,000 images instead of 123 MB in float32 -- and
    each chunk is normalised when sliced, by the float64 arithmetic that made the training and
    validation sets: the rows are bit for bit those an eager normalisation gives.

    Indexing rows (an integer, a slice, an integer or boolean array; then columns, if given)
    returns a new C-contiguous array of ``dtype``, normalising only those rows (but for an
    array of rows followed by column indices, which numpy pairs up: that normalises all
    rows first); ``np.asarray`` gives the whole set, so
    NumPy functions and operators accept it too. ``shape``, ``ndim``, ``dtype`` and ``len``
    are those of that array. There is nothing to write to.

    Parameters
    ----------
    pixels : ndarray of uint8, shape (n, 3072)
    mean, std : ndarray of float64, shape (3072,)
        The training statistics (std already without zeros).
    dtype : float32 or float64
    """

    __slots__ = ("pixels", "mean", "std", "dtype", "inv_std")
    ndim = 2

    def __init__(self, pixels: NDArray[np.uint8], mean: NDArray[np.float64],
                 std: NDArray[np.float64], dtype: DTypeLike) -> None:
        self.pixels, self.mean, self.std, self.dtype = pixels, mean, std, np.dtype(dtype)
        self.inv_std = 1.0 / std   # as _normalise_into multiplies by it

    @property
    def shape(self) -> tuple[int, int]:
        return self.pixels.shape

    @property
    def nbytes(self) -> int:
        """Bytes held (the uint8 pixels), not those of the normalised array."""
        return self.pixels.nbytes

    def take(self, rows: NDArray[np.integer], out: NDArray[np.floating]) -> NDArray[np.floating]:
        """The normalised rows ``rows`` (integers in range) written into ``out`` (C-contiguous,
        (len(rows), d), of :attr:`dtype`): a mini-batch gathered into a reused buffer."""
        rows = np.asarray(rows)
        kernel = _compiled_normaliser()
        if kernel is not None and self.pixels.flags.c_contiguous:
            kernel(self.pixels, rows.astype(np.intp, copy=False), self.mean, self.inv_std, out)
        else:
            _normalise_into([self.pixels[rows]], self.mean, self.std, [out])
        return out

    def __len__(self) -> int:
        return len(self.pixels)

    def __getitem__(self, index: Any) -> NDArray[np.floating]:
        if isinstance(index, tuple):
            head = index[0] if index else slice(None)
            if not isinstance(head, (slice, int, np.integer)):   # arrays pair with arrays: numpy's rules
                return np.asarray(self)[index]
            rows = self[head]   # rows first, then the columns of what they give
            return rows[index[1:]] if rows.ndim == 1 else rows[(slice(None), *index[1:])]
        if isinstance(index, slice):   # a chunk of rows, the common case: no uint8 copy
            rows = np.arange(len(self.pixels))[index]
            return self.take(rows, np.empty((len(rows), self.pixels.shape[1]), self.dtype))
        U = self.pixels[index]
        if U.ndim == 1:
            return _normalise(U[None], self.mean, self.std, self.dtype)[0]
        return _normalise(U, self.mean, self.std, self.dtype)

    def __array__(self, dtype: DTypeLike = None, copy: bool | None = None) -> NDArray[np.floating]:
        if copy is False:
            raise ValueError("the normalised images exist only once computed: a copy is needed")
        X = self[:]
        return X if dtype is None else X.astype(dtype, copy=False)

    def __repr__(self) -> str:
        n, d = self.shape
        return f"NormalisedImages({n} x {d} uint8 images, read as {self.dtype})"


@dataclass(eq=False)
class Dataset:
    """CIFAR-10 split into training, validation and test sets, normalised by training statistics.

    Attributes
    ----------
    X_train, X_test : NormalisedImages or ndarray, shape (n, 3072)
        Normalised images of the requested float dtype; :func:`load_cifar10` keeps them as
        uint8 and normalises the rows that are read (:class:`NormalisedImages`).
    X_val : ndarray, shape (n, 3072)
        Normalised images, C-contiguous, of the requested float dtype.
    y_train, y_val, y_test : ndarray of int64, shape (n,)
        Labels in 0..9.
    mean, std : ndarray of float64, shape (3072,)
        Per-feature training statistics used: ``X = (pixels - mean) / std``.
    label_names : list of str
        Class names, index = label.
    source : str
        The ``cifar-10-batches-py`` folder loaded.
    split : str
        ``"a3"`` or ``"a2"`` (see :func:`load_cifar10`).
    """

    X_train: NDArray[np.floating] = field(repr=False)
    y_train: NDArray[np.int64] = field(repr=False)
    X_val: NDArray[np.floating] = field(repr=False)
    y_val: NDArray[np.int64] = field(repr=False)
    X_test: NormalisedImages | NDArray[np.floating] = field(repr=False)
    y_test: NDArray[np.int64] = field(repr=False)
    mean: NDArray[np.float64] = field(repr=False)
    std: NDArray[np.float64] = field(repr=False)
    label_names: list[str]
    source: str
    split: str

    def summary(self) -> str:
        """One line: split, set sizes, dtype and source folder."""
        return (f"CIFAR-10 split {self.split}: {len(self.y_train)} train, {len(self.y_val)} "
                f"validation, {len(self.y_test)} test, {self.X_train.shape[1]} features, "
                f"{self.X_train.dtype}, from {self.source}")


_BLOCK = 256   # rows per block: a reused float64 block buffer of 6 MB stays in cache


def _stats(images: list[NDArray[np.uint8]], n: int) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Per-column mean and (biased) std of the first ``n`` rows of ``images`` taken in order,
    exactly, without a float copy of them.

    Sums of x and x^2 are exact in int64 (n^2 * 255^2 < 2^63 for n < 10^7 rows), so the
    variance ``(n * S2 - S1^2) / n^2`` has no cancellation error, and the order of the rows
    does not matter. A std of 0 becomes 1.
    """
    if n == 0:
        return np.zeros(N_FEATURES), np.ones(N_FEATURES)
    s1 = np.zeros(N_FEATURES, np.int64)
    s2 = np.zeros(N_FEATURES, np.int64)
    buf = np.empty((_BLOCK, N_FEATURES), np.int64)
    left = n
    for U in images:
        U = U[:left]
        left -= len(U)
        s1 += U.sum(axis=0, dtype=np.int64)
        for start in range(0, len(U), _BLOCK):
            block = U[start:start + _BLOCK]
            sq = np.multiply(block, block, out=buf[:len(block)], dtype=np.int64)
            s2 += sq.sum(axis=0)
        if not left:
            break
    mean = s1 / n
    std = np.sqrt((n * s2 - s1 * s1) / float(n) ** 2)
    std[std == 0] = 1.0
    return mean, std


def _trim_heap() -> None:
    """Hand the C heap's free memory back to the system: glibc's ``malloc_trim``; elsewhere nothing.

    Unpickling a batch file allocates blocks of about 30 MB (the file, a check's copy of the
    pixels, the pixels). Once glibc has freed one such block that it had mapped, it raises
    its mmap threshold and serves the next ones from its heap, where a block freed below a
    live one stays resident: without this, loading CIFAR-10 left 234 MB of freed batch
    memory in the process (measured with ``scripts/measure_memory.py``).
    """
    global _malloc_trim
    if _malloc_trim is None:
        try:
            _malloc_trim = ctypes.CDLL(None).malloc_trim
        except (AttributeError, OSError, TypeError):   # not glibc: nothing to call
            _malloc_trim = False
    if _malloc_trim:
        _malloc_trim(0)


_malloc_trim: Any = None


def _normalise_into(images: list[NDArray[np.uint8] | None], mean: NDArray[np.float64],
                    std: NDArray[np.float64], outs: list[NDArray[np.floating]],
                    release: bool = False) -> None:
    """Write ``(U - mean) / std`` of the rows of ``images`` (in order) into ``outs`` (in order;
    their rows add up to those of ``images``), dropping each uint8 array from ``images`` as
    soon as its rows are written, so that the images and the outputs are not all held at once;
    ``release``: and hand its memory back to the system then (:func:`_trim_heap`).

    Computed in float64 block by block (``(U - mean) * (1 / std)``, each element rounded
    twice) and rounded to the output dtype on storing; how the rows are cut into blocks
    does not change a bit of the result.
    """
    inv = 1.0 / std
    buf = np.empty((_BLOCK, N_FEATURES), np.float64)
    targets = iter(outs)
    out, row = next(targets), 0
    for i in range(len(images)):   # not enumerate(): its reused result tuple would keep U alive
        U, images[i] = images[i], None
        assert U is not None
        start = 0
        while start < len(U):
            while row == len(out):
                out, row = next(targets), 0
            m = min(len(U) - start, len(out) - row, _BLOCK)
            tmp = np.subtract(U[start:start + m], mean, out=buf[:m])
            out[row:row + m] = np.multiply(tmp, inv, out=tmp)
            start, row = start + m, row + m
        if release:
            del U
            _trim_heap()


def _normalise(U: NDArray[np.uint8], mean: NDArray[np.float64], std: NDArray[np.float64],
               dtype: np.dtype[Any]) -> NDArray[np.floating]:
    """``(U - mean) / std`` as a new C-contiguous array of ``dtype`` (see _normalise_into)."""
    out = np.empty(U.shape, dtype)
    kernel = _compiled_normaliser()
    if kernel is not None and U.ndim == 2 and U.flags.c_contiguous:
        kernel(U, np.arange(len(U)), mean, 1.0 / std, out)
    else:
        _normalise_into([U], mean, std, [out])
    return out


_NORMALISER: list = []


def _compiled_normaliser():
    """Numba's ``normalise_rows`` (the same arithmetic as _normalise_into, ~10x faster), or None
    without Numba or under NUMBA_DISABLE_JIT (where it would run as Python)."""
    if not _NORMALISER:
        try:
            from numba.core import config

            from .backends.numba_step import normalise_rows
            _NORMALISER.append(None if config.DISABLE_JIT else normalise_rows)
        except Exception:  # Numba missing or broken: NumPy does it
            _NORMALISER.append(None)
    return _NORMALISER[0]


def _check_args(split: str, n_val: int, dtype: DTypeLike) -> np.dtype[Any]:
    """Validate the configuration of :func:`load_cifar10`; return the float dtype."""
    if split not in _SPLITS:
        raise ConfigError(f"unknown split {split!r}; use 'a3' (batches 1-5, the last n_val rows "
                          f"for validation) or 'a2' (batch 1 to train, batch 2 to validate)")
    integer = isinstance(n_val, (int, np.integer)) and not isinstance(n_val, bool)
    if not integer or n_val < 0:
        raise ConfigError(f"n_val must be a non-negative integer, got {n_val!r}")
    try:
        dt = np.dtype(dtype)
    except TypeError:
        dt = None
    if dt not in (np.float32, np.float64):
        raise ConfigError(f"dtype must be float32 or float64, got {dtype!r}")
    return dt


def load_cifar10(data_dir: str | os.PathLike[str] | None = None, *, split: str = "a3",
                 n_val: int = 5000, dtype: DTypeLike = np.float32, download: bool = False,
                 progress: bool = True) -> Dataset:
    """Load CIFAR-10, split it and normalise every feature by the training statistics.

    Parameters
    ----------
    data_dir : path or None
        Where the data is; see :func:`find_cifar10`.
    split : {"a3", "a2"}
        ``"a3"``: batches 1-5 concatenated, the last ``n_val`` rows validate, the rest train
        (45,000 / 5,000 by default). ``"a2"``: batch 1 trains, batch 2 validates (``n_val``
        ignored). The test set is always ``test_batch``.
    n_val : int
        Validation rows for ``"a3"``, ``0 <= n_val <`` the rows of batches 1-5.
    dtype : float32 or float64
        dtype of the returned images.
    download, progress
        Passed to :func:`find_cifar10`.

    Returns
    -------
    Dataset
        ``X_train`` and ``X_val`` are arrays; ``X_test`` is a :class:`NormalisedImages`.

    Notes
    -----
    Mean and std are per feature over the training rows, in float64 (std 0 becomes 1); the
    validation and test sets use the same statistics. Memory: the batch files are unpickled
    one by one to uint8 (the pixels are never copied: 150 MB for batches 1-5), the
    statistics are summed over those, and the float arrays are filled block by block while
    each uint8 batch is dropped once its rows are written; the test set stays uint8 (31 MB).
    At float32 the peak is about the float arrays (614 MB) plus the test pixels, and that is
    what remains held.

    Raises
    ------
    ConfigError
        For an unknown split, a bad ``n_val`` or a non-float dtype.
    DataError
        If the data is missing or bad.
    """
    dt = _check_args(split, n_val, dtype)
    folder = find_cifar10(data_dir, download=download, progress=progress)
    names = TRAIN_BATCHES if split == "a3" else TRAIN_BATCHES[:2]
    parts = [_read_batch(folder / name) for name in names]
    total = sum(len(X) for X, _ in parts)
    if split == "a3":
        if n_val >= total:
            raise ConfigError(f"n_val={n_val} leaves no training rows: batches 1-5 hold "
                              f"{total} rows; use 0 <= n_val < {total}")
        cut = total - n_val
    else:
        cut = len(parts[0][0])
    y = np.concatenate([y for _, y in parts])
    images: list[NDArray[np.uint8] | None] = [X for X, _ in parts]
    del parts
    U_test, y_test = _read_batch(folder / TEST_BATCH)
    _trim_heap()   # the files and the checks' copies of the pixels
    mean, std = _stats(images, cut)   # type: ignore[arg-type]  # no None before the fill
    # The training images stay uint8 (138 MB instead of 553 in float32), normalised as rows
    # are read (NormalisedImages); the validation set, read whole every epoch, is normalised now.
    U_train = np.empty((cut, N_FEATURES), np.uint8)
    row, rest = 0, []
    for i in range(len(images)):
        U, images[i] = images[i], None
        take = min(len(U), cut - row)
        U_train[row:row + take] = U[:take]
        row += take
        if take < len(U):
            rest.append(U[take:])
        del U
    X_val = np.empty((total - cut, N_FEATURES), dt)
    _normalise_into(rest, mean, std, [X_val], release=True)
    return Dataset(
        X_train=NormalisedImages(U_train, mean, std, dt), y_train=y[:cut], X_val=X_val, y_val=y[cut:],
        X_test=NormalisedImages(U_test, mean, std, dt), y_test=y_test,
        mean=mean, std=std, label_names=load_label_names(folder),
        source=str(folder), split=split)
