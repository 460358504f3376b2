"""The field-by-field checker of the JSON objects siamnet reads back."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from siamnet.errors import CheckpointError
from siamnet.schema import (
    check_fields,
    describe,
    is_int,
    is_number,
    is_str,
    list_of,
    or_none,
)

RULES = {
    "count": ("a whole number", is_int),
    "scale": ("a number", is_number),
    "names": ("a list of strings or null", or_none(list_of(is_str))),
}


def test_the_first_bad_field_is_named_with_what_was_expected_and_found():
    check_fields("f.json", {"count": 3, "scale": 0.5, "names": None}, RULES, required=("count",))
    with pytest.raises(CheckpointError, match=r"^f\.json: field count is missing \(expected a "):
        check_fields("f.json", {"scale": 1}, RULES, required=("count",))
    with pytest.raises(CheckpointError, match=r"field x\.count: expected a whole number, found "):
        check_fields("f.json", {"count": True}, RULES, prefix="x.")
    with pytest.raises(CheckpointError, match=r"field names: .*found a list \[\"a\", 1\]"):
        check_fields("f.json", {"names": ["a", 1]}, RULES)
    with pytest.raises(CheckpointError, match=r"field other: not a field this siamnet knows"):
        check_fields("f.json", {"count": 1, "other": 2}, RULES, only_known=True)


def test_numbers_are_finite_and_not_booleans():
    assert is_number(1) and is_number(2.5)
    assert not any(is_number(v) for v in (True, float("nan"), float("inf"), 10**400, "1"))


def test_found_values_are_described_shortly():
    assert describe(None) == "null"
    assert describe(torch.zeros(2, 3)) == "a float32 tensor of shape [2, 3]"
    assert describe("x" * 100).endswith("...") and len(describe("x" * 100)) < 80


def test_the_checker_needs_no_torch():
    code = "import sys, siamnet.schema; assert 'torch' not in sys.modules"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
