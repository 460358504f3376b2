"""Checks of JSON objects field by field, for the files siamnet reads back (checkpoint metadata,
gallery descriptions).

A table of `Rules` maps each field to what is expected, in words, and a test of a value;
`check_fields` applies it and refuses the first field that is missing or fails its test with one
line naming the file, the field, what was expected and what was found (`describe`).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import sys
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any

from siamnet.errors import CheckpointError

#: ``field -> (what is expected, in words; a test of a value)``
Rules = Mapping[str, tuple[str, Callable[[Any], bool]]]


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """A finite int or float (not a bool) that a float can hold."""
    if not (is_int(value) or isinstance(value, float)):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False


def is_positive_int(value: Any) -> bool:
    return is_int(value) and value > 0


def is_str(value: Any) -> bool:
    return isinstance(value, str)


def is_bool(value: Any) -> bool:
    return isinstance(value, bool)


def is_dict(value: Any) -> bool:
    return isinstance(value, dict)


def list_of(test: Callable[[Any], bool]) -> Callable[[Any], bool]:
    """A test for a list whose every element passes `test`."""
    return lambda value: isinstance(value, list) and all(test(v) for v in value)


def or_none(test: Callable[[Any], bool]) -> Callable[[Any], bool]:
    """`test`, or None."""
    return lambda value: value is None or test(value)


def is_sha256(value: Any) -> bool:
    return isinstance(value, str) and re.fullmatch(r"[0-9a-f]{64}", value) is not None


def describe(value: Any) -> str:
    """A short description of a found value: its kind and, shortened, the value itself."""
    torch = sys.modules.get("torch")  # a tensor can only exist once torch is imported
    if torch is not None and isinstance(value, torch.Tensor):
        return f"a {str(value.dtype).removeprefix('torch.')} tensor of shape {list(value.shape)}"
    if value is None:
        return "null"
    kinds = [(bool, "true/false"), ((int, float), "a number"), (str, "a string")]
    kinds += [((list, tuple), "a list"), (dict, "an object")]
    kind = next((word for types, word in kinds if isinstance(value, types)), type(value).__name__)
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return f"{kind} {text if len(text) <= 60 else text[:57] + '...'}"


def check_fields(
    where: str | os.PathLike[str],
    data: Mapping[str, Any],
    rules: Rules,
    required: Collection[str] = (),
    prefix: str = "",
    only_known: bool = False,
) -> None:
    """Raise `CheckpointError` naming `where` and the field at the first field of `data` that
    is missing (of `required`) or fails its rule; with `only_known`, also at an unknown field."""
    for name, (expected, test) in rules.items():
        if name not in data:
            if name in required:
                raise CheckpointError(
                    f"{where}: field {prefix}{name} is missing (expected {expected})"
                )
            continue
        if not test(data[name]):
            raise CheckpointError(
                f"{where}: field {prefix}{name}: expected {expected}, found {describe(data[name])}"
            )
    unknown = [k for k in data if k not in rules]
    if only_known and unknown:
        raise CheckpointError(
            f"{where}: field {prefix}{unknown[0]}: not a field this siamnet knows "
            f"(expected only {', '.join(rules)})"
        )


def check_companion_sha256(
    data_file: Path, raw: bytes, recorded: str | None, record_file: str, remedy: str
) -> None:
    """Refuse `raw`, the bytes of `data_file`, when their sha256 is not the one `record_file`
    (the JSON written with it) `recorded`: the two files come from different writes. Nothing
    is checked where no checksum was recorded."""
    if recorded is None:
        return
    actual = hashlib.sha256(raw).hexdigest()
    if actual != recorded:
        raise CheckpointError(
            f"{data_file}: does not belong with {record_file} (its sha256 is {actual[:12]}..., "
            f"{record_file} records {recorded[:12]}...): the two files come from different "
            f"writes; {remedy}"
        )
