"""The training set kept as uint8 pixels and normalised as rows are read
(:class:`NormalisedImages`): a quarter of the memory of float32 rows; the per-feature mean and
standard deviation, and the eager normalisation that defines the arithmetic."""
from __future__ import annotations

import ctypes
from typing import Any

import numpy as np
from numpy.typing import DTypeLike, NDArray

from fastnet.data.batches import N_FEATURES

# --------------------------------------------------------------------------- the data set

class NormalisedImages:
    """uint8 images normalised as they are read: rows of ``(pixels - mean) / std`` as ``dtype``.

    The test set of :func:`load_cifar10`. It is read once, at the end of a run, a chunk of rows
    at a time (:func:`fastnet.model.network.evaluate` and ``predict`` slice their input), so it is
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
        self.inv_std = 1.0 / std   # as normalise_into multiplies by it

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
            normalise_into([self.pixels[rows]], self.mean, self.std, [out])
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


_BLOCK = 256   # rows per block: a reused float64 block buffer of 6 MB stays in cache


def pixel_stats(images: list[NDArray[np.uint8]], n: int) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
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


def trim_heap() -> None:
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


def normalise_into(images: list[NDArray[np.uint8] | None], mean: NDArray[np.float64],
                    std: NDArray[np.float64], outs: list[NDArray[np.floating]],
                    release: bool = False) -> None:
    """Write ``(U - mean) / std`` of the rows of ``images`` (in order) into ``outs`` (in order;
    their rows add up to those of ``images``), dropping each uint8 array from ``images`` as
    soon as its rows are written, so that the images and the outputs are not all held at once;
    ``release``: and hand its memory back to the system then (:func:`trim_heap`).

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
            trim_heap()


def _normalise(U: NDArray[np.uint8], mean: NDArray[np.float64], std: NDArray[np.float64],
               dtype: np.dtype[Any]) -> NDArray[np.floating]:
    """``(U - mean) / std`` as a new C-contiguous array of ``dtype`` (see normalise_into)."""
    out = np.empty(U.shape, dtype)
    kernel = _compiled_normaliser()
    if kernel is not None and U.ndim == 2 and U.flags.c_contiguous and out.dtype in (np.float32, np.float64):
        kernel(U, np.arange(len(U)), mean, 1.0 / std, out)
    else:
        normalise_into([U], mean, std, [out])
    return out


_NORMALISER: list = []


def _compiled_normaliser():
    """A compiled ``normalise_rows(U, rows, mean, inv_std, out)`` with the arithmetic of
    normalise_into, ~10x faster: the extension's (built at install: nothing to compile), else
    Numba's (:mod:`fastnet.data.normalise`; not under NUMBA_DISABLE_JIT, where it would run as
    Python), else None. Both round each element exactly as NumPy does (tests/data/test_images.py)."""
    if not _NORMALISER:
        try:
            import fastnet.ext._ckernels as _ck  # not ``from fastnet.ext._ckernels import``: see fastnet/ext

            normalise_rows = _ck.normalise_rows
        except (ImportError, AttributeError):  # the extension is not built, or an older build
            try:
                from numba.core import config

                from fastnet.data.normalise import normalise_rows
                if config.DISABLE_JIT:
                    normalise_rows = None
            except Exception:  # Numba missing or broken: NumPy does it
                normalise_rows = None
        _NORMALISER.append(normalise_rows)
    return _NORMALISER[0]
