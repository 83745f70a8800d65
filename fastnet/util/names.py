"""Names that become paths: a run or experiment name is accepted only as one safe path
component, and the folder it names is proved to lie inside its parent.

Every place where a name from the user becomes a folder (the runs of a sweep file, an
experiment's runs, ``--out``'s last component) goes through :func:`safe_component` and
:func:`child_path`, so ``"../../x"``, ``"/abs"``, ``""``, ``"."`` or ``"a/"`` can never reach
the file system and ``a`` / ``./a`` / ``a/`` can never be two names for one folder.
"""
from __future__ import annotations

import unicodedata
from pathlib import Path

from fastnet.errors import FastnetError

MAX_NAME = 200  # characters; file systems allow 255 bytes per component


class UnsafeNameError(FastnetError, ValueError):
    """A name that cannot be a folder name (exit status 2)."""


def safe_component(name: object, what: str = "run name", whole: str | None = None) -> str:
    """``name`` normalised (Unicode NFC) if it is a single safe path component.

    Refused, each with one sentence: anything but a string; empty; ``.`` or ``..``; a ``/`` or
    ``\\`` anywhere (so no absolute path, no ``a/``, no ``./a``); NUL or any other control
    character; leading or trailing white space; more than :data:`MAX_NAME` characters.
    """
    if not isinstance(name, str):
        raise UnsafeNameError(f"{what} must be a string, got {type(name).__name__}")
    text = unicodedata.normalize("NFC", name)
    shown = whole if whole is not None else text
    shown = repr(shown[:60] + ("..." if len(shown) > 60 else ""))
    if text in ("", ".", ".."):
        problem = "is empty" if not text else "is not a folder name"
    elif "/" in text or "\\" in text:
        problem = "contains a path separator (/ or \\)"
    elif any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in text):
        problem = "contains a control character"
    elif text != text.strip():
        problem = "starts or ends with white space"
    elif len(text) > MAX_NAME:
        problem = f"is longer than {MAX_NAME} characters"
    else:
        return text
    raise UnsafeNameError(f"{what} {shown} {problem}; use one plain folder name such as lam-0.01")


def name_key(name: str) -> str:
    """What two names must differ in to be two folders on every file system (case-insensitive
    ones included): the normalised name, case-folded."""
    return unicodedata.normalize("NFC", name).casefold()


def unique_names(names, what: str = "run names", nested: bool = False) -> list[str]:
    """``names`` each checked by :func:`safe_component`, refused if two are one folder after
    normalisation. ``nested``: fastnet's own names of the form ``experiment/run``, each
    ``/``-separated part checked alone (names from a user's file are never nested)."""
    seen: dict[str, str] = {}
    out = []
    for name in names:
        parts = name.split("/") if nested and isinstance(name, str) else [name]
        one = what.removesuffix("s")
        checked = "/".join(safe_component(p, one, whole=name if nested else None) for p in parts)
        key = name_key(checked)
        if key in seen:
            raise UnsafeNameError(f"{what} must be unique: {seen[key]!r} and {name!r} name the same folder")
        seen[key] = name
        out.append(checked)
    return out


def child_path(parent, name: str) -> Path:
    """``parent / name`` for a name of :func:`unique_names` (parts already safe), proved to
    lie inside ``parent`` once every link is resolved; UnsafeNameError otherwise (a link inside
    ``parent`` pointing out of it)."""
    parent = Path(parent)
    path = parent.joinpath(*name.split("/"))
    if not path.resolve().is_relative_to(parent.resolve()) or path.resolve() == parent.resolve():
        raise UnsafeNameError(f"the folder of {name!r} would lie outside {parent} (through a link); "
                         f"remove the link or choose another --out")
    return path
