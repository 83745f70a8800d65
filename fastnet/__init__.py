"""fastnet: fast k-layer fully-connected networks with batch normalization on CIFAR-10.

The mathematics follows the DD2424 Assignment 3 specification (equations cited by number in
`fastnet.backends.reference`). Importing fastnet is cheap: Numba, the compiled extension and
matplotlib are loaded only when first needed.
"""
from __future__ import annotations

from fastnet.util.version import VERSION as __version__

__all__ = ["__version__"]
