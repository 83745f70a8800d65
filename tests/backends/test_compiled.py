"""The compiled backends' ops (fastnet/backends/compiled.py): one method per op of the
table, documented by the reference, bound by name in each compiled backend module."""
from __future__ import annotations

import inspect

import pytest
from conftest import COMPILED, compiled_module

from fastnet.backends import reference as ref
from fastnet.backends.compiled import CompiledOps
from fastnet.backends.ops import BLAS_OPS, KERNEL_OPS, OPS, REFERENCE_OPS


def test_compiled_ops_has_one_method_per_kernel_op():
    methods = {name for name, _ in inspect.getmembers(CompiledOps, inspect.isfunction) if not name.startswith("_")}
    assert methods == set(KERNEL_OPS)
    assert set(KERNEL_OPS) | set(BLAS_OPS) | set(REFERENCE_OPS) == set(OPS)


@pytest.mark.parametrize("op", KERNEL_OPS)
def test_each_op_is_documented_by_the_reference(op):
    assert getattr(CompiledOps, op).__doc__ == getattr(ref, op).__doc__ and getattr(ref, op).__doc__


@pytest.mark.parametrize("name", COMPILED)
def test_a_compiled_backend_binds_every_op_of_the_table(name):
    module = compiled_module(name)
    assert set(module.__all__) >= set(OPS)
    for op in KERNEL_OPS:
        bound = vars(module)[op]  # a module attribute of its own, not a fallback
        assert inspect.ismethod(bound) and isinstance(bound.__self__, CompiledOps), op
        assert bound.__func__ is getattr(CompiledOps, op), op
    for op in BLAS_OPS + REFERENCE_OPS:  # the reference's own (REFERENCE_OPS: soft targets, issue 17)
        assert vars(module)[op] is getattr(ref, op)
