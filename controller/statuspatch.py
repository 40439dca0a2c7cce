"""JSON merge patch (RFC 7386) computation: the smallest patch turning `old` into `new`.

Used for status writes: keys that disappeared become `null`, nested objects are diffed,
lists and scalars are replaced as a whole (so `conditions` is always written complete).
Pure; no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def merge_patch(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    patch: dict[str, Any] = {}
    for key in old.keys() - new.keys():
        patch[key] = None
    for key, value in new.items():
        before = old.get(key)
        if isinstance(value, Mapping) and isinstance(before, Mapping):
            sub = merge_patch(before, value)
            if sub:
                patch[key] = sub
        elif key not in old or before != value:
            patch[key] = value
    return patch


def apply_merge_patch(target: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """RFC 7386 apply (for tests and for keeping a local copy in step)."""
    result = dict(target)
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, Mapping):
            base = result.get(key)
            result[key] = apply_merge_patch(base if isinstance(base, Mapping) else {}, value)
        else:
            result[key] = value
    return result
