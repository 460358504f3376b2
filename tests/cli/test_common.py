"""Argument helpers shared by the verbs."""

from __future__ import annotations

import pytest

from siamnet.cli.common import parse_duration
from siamnet.errors import ArgumentError


def test_parse_duration():
    assert parse_duration("600") == 600 and parse_duration("90s") == 90
    assert parse_duration("10m") == 600 and parse_duration("1.5h") == 5400
    for bad in ("", "ten", "-5", "5x", "nanm", "inf"):
        with pytest.raises(ArgumentError, match="--time-budget"):
            parse_duration(bad)
