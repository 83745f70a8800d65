"""The fused training step compiled ahead of time: the extension's (kernels/fused_step.pxi).

The same step as :mod:`fastnet.backends.numba_step` -- forward, running averages, backward and
the folded weight update in one call, on one core or split over two -- built with the
extension at install, so no run waits for a compiler, and with the network held in a table of
layers, so one compiled function serves every depth. :class:`fastnet.training.fused.FusedStep`
calls either module through the same names: ``BLAS``, ``StepPlan``, ``fused_sgd_step``,
``fused_sgd_step_parallel``, ``gather_rows``, ``gather_normalised_rows``, ``gather_moved_rows``,
``parallel_threads``.
Only this one also has ``bf16_supported``: its plans can run the first layer's two products
on bf16 inputs (``StepPlan.use_bf16``, kernels/bf16_gemm.h, or ``StepPlan.use_bf16_gemm``
on MKL's bf16 product; ``--precision bf16``), with ``round_bf16`` (the library product's
rounding) and ``bf16_pairs_products`` / ``bf16_library_products`` (the first layer's two bf16
products alone, for auto's measurement); and
``CUTS_SMALL_LAYERS``: its two-core step can cut every layer's products in halves; and
``fused_sgd_step_beside``: the one-core step with the next batch gathered on a second OpenMP
thread meanwhile (``FusedStep.gather_beside``).

Its arithmetic is the extension's (plain C, no fast-math: the op kernels' loops, shared with
:mod:`fastnet.backends.cython_ops`), so its results are its own, not Numba's bit for bit;
tests/training/test_fused.py holds it to the per-op path as it holds Numba's.
"""
from __future__ import annotations

import fastnet.ext._ckernels as _ck
from fastnet.backends.providers import GemmTable, find_gemm

# The names taken from the module, not ``from fastnet.ext._ckernels import ...``: a static
# analyser would read that as an import of the package fastnet (see fastnet/ext/__init__.py).
StepPlan = _ck.StepPlan
fused_sgd_step = _ck.fused_sgd_step
fused_sgd_step_parallel = _ck.fused_sgd_step_parallel
fused_sgd_step_beside = _ck.fused_sgd_step_beside
gather_moved_rows = _ck.gather_moved_rows
gather_normalised_rows = _ck.gather_normalised_rows
gather_rows = _ck.gather_rows
parallel_threads = _ck.parallel_threads
bf16_supported = _ck.bf16_supported
round_bf16 = _ck.round_bf16
bf16_amx = _ck.bf16_amx
bf16_pairs_shapes = _ck.bf16_pairs_shapes
bf16_pairs_products = _ck.bf16_pairs_products
bf16_library_products = _ck.bf16_library_products

__all__ = ["BLAS", "CUTS_SMALL_LAYERS", "StepPlan", "bf16_amx", "bf16_library_products", "bf16_pairs_products",
           "bf16_pairs_shapes", "bf16_supported",
           "fused_sgd_step", "fused_sgd_step_beside", "fused_sgd_step_parallel", "gather_moved_rows", "gather_normalised_rows",
           "gather_rows", "parallel_threads", "round_bf16", "start_cost"]

#: Its two-core step can cut the layers above the first in halves too (``split_small``), so it
#: takes two cores on networks whose first layer is not most of the step (fastnet.training.fused).
CUTS_SMALL_LAYERS = True

#: The table of the provider found at import, or None (then no compiled step: op by op).
BLAS: GemmTable | None = find_gemm()


def start_cost() -> str:
    """Whether a run starts at once, in a sentence (``fastnet info``): always, nothing is compiled."""
    return "compiled at install: runs start at once, at any depth"
