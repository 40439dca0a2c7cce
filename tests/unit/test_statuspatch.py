"""Merge patches replace whole lists and null out removed keys."""

from __future__ import annotations

from controller.statuspatch import apply_merge_patch, merge_patch


def test_merge_patch_roundtrip() -> None:
    old = {"phase": "Running", "agent": {"sessionId": "s", "commandId": "c"}, "conditions": [{"type": "A"}],
           "logTail": "x"}
    new = {"phase": "Provisioning", "conditions": [{"type": "A"}, {"type": "B"}], "attempts": 2, "logTail": "x"}
    patch = merge_patch(old, new)
    assert patch == {"phase": "Provisioning", "agent": None, "conditions": [{"type": "A"}, {"type": "B"}],
                     "attempts": 2}
    assert apply_merge_patch(old, patch) == new


def test_no_change_no_patch() -> None:
    same = {"a": {"b": [1, 2]}, "c": "d"}
    assert merge_patch(same, dict(same)) == {}
