"""fastnet.util.parse: strict whole numbers, real numbers and layer sizes."""
from __future__ import annotations

import argparse

import pytest

from fastnet.util.parse import MAX_INT, layer_sizes, number, real_number, whole_number


@pytest.mark.parametrize("text, value", [("0", 0), ("50", 50), ("007", 7), (str(MAX_INT), MAX_INT), ("-3", -3)])
def test_whole_numbers_are_accepted(text, value):
    assert whole_number(text) == value


@pytest.mark.parametrize("text, says", [("5_0", "digits only"), (" 50", "digits only"), ("+50", "digits only"), ("1e3", "digits only"),
                                        ("", "digits only"), ("٣", "digits only"), (None, "digits only"), ("5.0", "digits only"),
                                        (str(MAX_INT + 1), "at most"), ("9" * 4000, "at most"), ("-1", "at most")])
def test_whole_numbers_are_refused(text, says):
    with pytest.raises(argparse.ArgumentTypeError, match=says):
        whole_number(text, None, maximum=0 if text == "-1" else MAX_INT)


def test_whole_number_minimum():
    assert whole_number("1", 1) == 1
    with pytest.raises(argparse.ArgumentTypeError, match=">= 1"):
        whole_number("0", 1)


@pytest.mark.parametrize("text, value", [("0.1", 0.1), ("1e-5", 1e-5), (".5", 0.5), ("5.", 5.0), ("-2", -2.0), ("+3E2", 300.0)])
def test_real_numbers_are_accepted(text, value):
    assert real_number(text) == value


@pytest.mark.parametrize("text, says", [("nan", "finite"), ("inf", "finite"), ("-Infinity", "finite"), ("1e400", "finite"),
                                        ("1_0", "a number"), ("0x10", "a number"), ("", "a number"), ("1e", "a number"),
                                        (None, "a number"), ("1e99999", "a number")])
def test_real_numbers_are_refused(text, says):
    with pytest.raises(argparse.ArgumentTypeError, match=says):
        real_number(text)


def test_real_number_minimum_strict_and_not():
    assert real_number("0", 0) == 0.0
    with pytest.raises(argparse.ArgumentTypeError, match="> 0"):
        real_number("0", 0, strict=True)
    with pytest.raises(argparse.ArgumentTypeError, match=">= 0"):
        real_number("-0.1", 0)


def test_number_builds_flag_parsers():
    assert number(int, 0)("5") == 5 and number(float, 0.0, strict=True)("0.5") == 0.5
    with pytest.raises(argparse.ArgumentTypeError, match=">= 1"):
        number(int, 0, strict=True)("0")


@pytest.mark.parametrize("text, sizes", [("50", (50,)), ("50,50", (50, 50)), ("50, 30", (50, 30)), (",".join(["1"] * 100), (1,) * 100)])
def test_layer_sizes_are_accepted(text, sizes):
    assert layer_sizes(text) == sizes


@pytest.mark.parametrize("text, says", [("50,,50", "layer sizes"), ("50,", "layer sizes"), (",", "layer sizes"), ("0", "layer sizes"),
                                        ("5_0", "layer sizes"), ("a", "layer sizes"), (",".join(["1"] * 101), "at most 100")])
def test_layer_sizes_are_refused(text, says):
    with pytest.raises(argparse.ArgumentTypeError, match=says):
        layer_sizes(text)
