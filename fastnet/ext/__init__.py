"""The compiled extension built from kernels/ by setup.py, ``fastnet.ext._ckernels``; imports
nothing of fastnet.

A leaf package of its own, below every layer, for the modules of backends, data and training
that use the extension. Static analysers (grimp, import-linter) cannot see into a compiled
module and read an import of a name they cannot find -- ``fastnet._ckernels``, or ``from
fastnet.ext._ckernels import gemm`` -- as an import of the package ``fastnet``, whose
``__init__`` imports the API and with it every layer: an import circle. So a module imports
the extension by its full name and takes its names from it: ``import fastnet.ext._ckernels as
_ck``, then ``_ck.gemm`` (tests/test_layout.py holds the tree to that).
"""
