"""One CIFAR-10 batch file read and checked: ``data`` (uint8, (n, 3072), rows R...G...B of
32x32 images) and ``labels`` (n ints in 0..9), or a :class:`~fastnet.errors.DataError` naming
the file; the label names of ``batches.meta``."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fastnet.data.safe_pickle import ArrayStub, short_repr, unpickle_batch
from fastnet.errors import DataError

N_FEATURES = 3072
N_CLASSES = 10
LABEL_NAMES = ("airplane", "automobile", "bird", "cat", "deer",
               "dog", "frog", "horse", "ship", "truck")


def _entry(d: dict[Any, Any], key: str, path: Path) -> Any:
    """``d[key]`` under a bytes key (Python-2 pickles) or a str key (Python-3 pickles)."""
    for k in (key.encode(), key):
        if k in d:
            return d[k]
    raise DataError(f"{path} has no {key!r} entry; it is not a CIFAR-10 batch file")


def _labels(value: Any, path: Path) -> NDArray[np.int64]:
    """Labels from a list of ints or an integer array, checked to lie in 0..9."""
    array = value.array if isinstance(value, ArrayStub) else None
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
                        f"{short_repr(lo)}..{short_repr(hi)}; it is not a CIFAR-10 batch file")
    return np.array(labels, dtype=np.int64)


def read_batch(path: Path) -> tuple[NDArray[np.uint8], NDArray[np.int64]]:
    """:func:`load_batch` without its final copy: the images are a read-only view of the
    bytes the unpickler built (C- or Fortran-ordered, as the file says)."""
    d = unpickle_batch(path)
    if not isinstance(d, dict):
        raise DataError(f"{path} holds a {type(d).__name__}, not a dict; it is not a "
                        f"CIFAR-10 batch file")
    data, y = _entry(d, "data", path), _labels(_entry(d, "labels", path), path)
    X = data.array if isinstance(data, ArrayStub) else None
    if X is None or X.dtype != np.uint8 or X.ndim != 2 or X.shape[1] != N_FEATURES:
        what = f"{X.dtype} array of shape {X.shape}" if X is not None else type(data).__name__
        raise DataError(f"{path}: 'data' is a {what}, expected uint8 of shape (n, "
                        f"{N_FEATURES}); it is not a CIFAR-10 batch file")
    if len(X) != len(y):
        raise DataError(f"{path} has {len(X)} images but {len(y)} labels; the file is corrupt")
    if len(X) == 0:
        raise DataError(f"{path} holds no images; it is not a CIFAR-10 batch file, get the data set again")
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
    X, y = read_batch(Path(path))
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
    if not os.path.lexists(path):
        return list(LABEL_NAMES)
    d = unpickle_batch(path, "meta")
    names = _entry(d, "label_names", path) if isinstance(d, dict) else None
    if not (isinstance(names, list) and len(names) == N_CLASSES
            and all(isinstance(n, (bytes, str)) for n in names)):
        raise DataError(f"{path} does not list {N_CLASSES} label names; delete it or get the "
                        f"data set again")
    return [n.decode("utf-8", "replace") if isinstance(n, bytes) else n for n in names]
