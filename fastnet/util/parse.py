"""Strict parsers of command-line settings: what is not plainly a number of the kind asked
for is an error, never a guess.

``int()`` alone accepts ``5_0`` (50), `` 50 `` and ``+50``, the old list parser dropped empty
items (``50,,50`` was ``50,50``), and a 400-digit integer passed only to overflow deep
inside the training. Here a whole number is ASCII digits only, at most :data:`MAX_INT`; a
number is a finite float of the usual notation (no ``_``, no ``nan``/``inf``). Each
parser raises :class:`argparse.ArgumentTypeError`, which argparse prints as one line with
exit status 2.
"""
from __future__ import annotations

import argparse
import math
import re

MAX_INT = 2**31 - 1  # no count fastnet takes (steps, images, units, seeds) needs more
_INT = re.compile(r"-?[0-9]+")
_FLOAT = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]{1,4})?")


def whole_number(text: str, minimum: int | None = None, maximum: int = MAX_INT) -> int:
    """``text`` as an int: digits only (a leading minus allowed, to be refused by
    ``minimum`` with its own sentence), within [minimum, maximum]."""
    if not isinstance(text, str) or not _INT.fullmatch(text):
        raise argparse.ArgumentTypeError(f"expected a whole number written with digits only, got {str(text)[:40]!r}")
    digits = text.lstrip("-")
    x = (int(digits) if len(digits) <= 12 else maximum + 1) * (-1 if text.startswith("-") else 1)  # never int() of 4000 digits
    if minimum is not None and x < minimum:
        raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {text!r}")
    if abs(x) > maximum:
        raise argparse.ArgumentTypeError(f"must be at most {maximum}, got {text!r}")
    return x


def real_number(text: str, minimum: float | None = None, strict: bool = False) -> float:
    """``text`` as a finite float (plain or exponent notation), >= (or > if ``strict``) minimum."""
    if isinstance(text, str) and text.strip().lstrip("+-").lower() in ("nan", "inf", "infinity"):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {str(text)[:40]!r}")
    if not isinstance(text, str) or not _FLOAT.fullmatch(text):
        raise argparse.ArgumentTypeError(f"expected a number, got {str(text)[:40]!r}")
    x = float(text)
    if not math.isfinite(x):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {str(text)[:40]!r}")
    if minimum is not None and (x <= minimum if strict else x < minimum):
        raise argparse.ArgumentTypeError(f"must be {'>' if strict else '>='} {minimum}, got {text!r}")
    return x


def number(kind, minimum=None, strict=False, name="value"):
    """The ``type=`` of an argparse flag: :func:`whole_number` (``kind`` int, >= minimum, or
    > minimum if ``strict``) or :func:`real_number` (``kind`` float)."""
    def parse(text: str):
        if kind is int:
            low = None if minimum is None else minimum + 1 if strict else minimum
            return whole_number(text, low)
        return real_number(text, minimum, strict)

    return parse


def layer_sizes(text: str) -> tuple[int, ...]:
    """``50,50`` as (50, 50): comma-separated whole numbers >= 1, none empty (``50,,50``,
    ``50,`` and ``,`` are errors); at most 100 layers."""
    items = text.split(",") if isinstance(text, str) else [None]
    if len(items) > 100:
        raise argparse.ArgumentTypeError(f"at most 100 hidden layers, got {len(items)}")
    try:
        sizes = tuple(whole_number(s.strip(), 1) for s in items)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive layer sizes like 50,50, got {str(text)[:60]!r}") from None
    return sizes
