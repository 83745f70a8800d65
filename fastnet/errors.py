"""The exceptions fastnet raises for problems a user can fix.

Every one carries a single plain sentence that names the problem and what to do about it.
The command line prints that sentence and exits with status 2, without a traceback.
"""
from __future__ import annotations


class FastnetError(Exception):
    """A problem with the user's input, data or configuration (exit status 2)."""


class DataError(FastnetError):
    """The CIFAR-10 data is missing, corrupt, hostile or of the wrong shape."""


class ConfigError(FastnetError, ValueError):
    """An impossible or inconsistent configuration (hyper-parameters, network, flags)."""


class DivergenceError(FastnetError):
    """Training produced NaN or inf; the message names the step, learning rate and layer."""


class BackendError(FastnetError):
    """A requested backend cannot be used (e.g. FASTNET_REQUIRE_CYTHON=1 without the extension)."""
