"""CIFAR-10 loaded for training: the official "python version" (``data_batch_1`` ...
``data_batch_5``, ``test_batch``, ``batches.meta``, found or fetched by :mod:`fastnet.data.fetch`)
split into training, validation and test sets (the assignment's ``a3`` split or ``a2``) and
normalised by the training set's per-feature mean and standard deviation, as a :class:`Dataset`."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import DTypeLike, NDArray

from fastnet.data.batches import N_FEATURES, load_label_names, read_batch
from fastnet.data.fetch import TEST_BATCH, TRAIN_BATCHES, find_cifar10
from fastnet.data.images import NormalisedImages, normalise_into, pixel_stats, trim_heap
from fastnet.errors import ConfigError

_SPLITS = ("a3", "a2")


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
    whitening : fastnet.data.whiten.Whitening or None
        The input transform the rows went through (:func:`fastnet.data.whiten.whiten_dataset`:
        then every X is a float array of its width); None: the rows are normalised pixels.
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
    whitening: Any = field(default=None, repr=False)

    def summary(self) -> str:
        """One line: split, set sizes, dtype and source folder."""
        return (f"CIFAR-10 split {self.split}: {len(self.y_train)} train, {len(self.y_val)} "
                f"validation, {len(self.y_test)} test, {self.X_train.shape[1]} features, "
                f"{self.X_train.dtype}, from {self.source}")


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
    parts = [read_batch(folder / name) for name in names]
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
    U_test, y_test = read_batch(folder / TEST_BATCH)
    trim_heap()   # the files and the checks' copies of the pixels
    mean, std = pixel_stats(images, cut)   # type: ignore[arg-type]  # no None before the fill
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
    normalise_into(rest, mean, std, [X_val], release=True)
    return Dataset(
        X_train=NormalisedImages(U_train, mean, std, dt), y_train=y[:cut], X_val=X_val, y_val=y[cut:],
        X_test=NormalisedImages(U_test, mean, std, dt), y_test=y_test,
        mean=mean, std=std, label_names=load_label_names(folder),
        source=str(folder), split=split)
