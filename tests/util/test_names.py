"""fastnet.util.names: each refusal and each acceptance of a name that becomes a path."""
from __future__ import annotations

import pytest

from fastnet.util.names import (
    MAX_NAME,
    UnsafeNameError,
    child_path,
    name_key,
    safe_component,
    unique_names,
)


@pytest.mark.parametrize("name", ["lam-0.01", "run_1", "ex3 3-layer", "é", "a.b", "..a", "x" * MAX_NAME])
def test_plain_names_are_accepted(name):
    assert safe_component(name) == name


def test_names_are_normalised_to_nfc():
    assert safe_component("e\u0301") == "\u00e9"


@pytest.mark.parametrize("name, says", [(3, "must be a string"), (None, "must be a string"), ("", "is empty"),
                                        (".", "not a folder name"), ("..", "not a folder name"), ("a/b", "path separator"),
                                        ("/abs", "path separator"), ("a/", "path separator"), ("./a", "path separator"),
                                        ("a\\b", "path separator"), ("a\x00b", "control character"), ("a\nb", "control character"),
                                        ("a\u200bb", "control character"), (" a", "white space"), ("a ", "white space"),
                                        ("x" * (MAX_NAME + 1), "longer than")])
def test_unsafe_names_are_one_sentence(name, says):
    with pytest.raises(UnsafeNameError, match=says) as info:
        safe_component(name, "run name")
    assert "\n" not in str(info.value) and str(info.value).startswith("run name")


def test_name_key_folds_case_and_normalisation():
    assert name_key("A\u0301") == name_key("\u00e1")


def test_unique_names_accepts_distinct_and_refuses_aliases():
    assert unique_names(["a", "b"]) == ["a", "b"]
    with pytest.raises(UnsafeNameError, match="same folder"):
        unique_names(["a", "A"])
    with pytest.raises(UnsafeNameError, match="same folder"):
        unique_names(["\u00e9", "e\u0301"])
    with pytest.raises(UnsafeNameError, match="path separator"):
        unique_names(["a", "./a"])


def test_nested_names_check_each_part():
    assert unique_names(["ex/run"], nested=True) == ["ex/run"]
    with pytest.raises(UnsafeNameError, match="not a folder name"):
        unique_names(["ex/.."], nested=True)
    with pytest.raises(UnsafeNameError, match="path separator"):
        unique_names(["ex/run"])  # a user's name is never nested


def test_child_path_stays_inside_its_parent(tmp_path):
    assert child_path(tmp_path, "a") == tmp_path / "a"
    assert child_path(tmp_path, "ex/run") == tmp_path / "ex" / "run"
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "link").symlink_to(tmp_path)
    with pytest.raises(UnsafeNameError, match="outside"):
        child_path(tmp_path / "out", "link")
    (tmp_path / "out" / "self").symlink_to(tmp_path / "out")
    with pytest.raises(UnsafeNameError, match="outside"):
        child_path(tmp_path / "out", "self")
