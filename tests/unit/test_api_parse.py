"""`AgentTask.from_body`: one parse per body version, shared by the handlers of one event."""

from __future__ import annotations

from typing import Any

from controller.api import AgentTask


def body(rv: str | None, title: str = "t") -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "a", "namespace": "ns", "uid": "u-1"}
    if rv is not None:
        meta["resourceVersion"] = rv
    return {"metadata": meta, "spec": {"repository": {"url": "https://example.invalid/r.git"},
                                       "issue": {"number": 1, "title": title}}}


def test_the_same_body_at_the_same_version_is_parsed_once() -> None:
    b = body("5")
    assert AgentTask.from_body(b) is AgentTask.from_body(b)


def test_a_body_changed_in_place_is_parsed_again_at_its_new_version() -> None:
    b = body("5", title="old")
    assert AgentTask.from_body(b).spec.issue is not None
    b["spec"]["issue"]["title"] = "new"
    b["metadata"]["resourceVersion"] = "6"
    issue = AgentTask.from_body(b).spec.issue
    assert issue is not None and issue.title == "new"


def test_another_body_with_the_same_uid_and_version_is_parsed_on_its_own() -> None:
    # (the apiserver never reuses a version for other content; tests and fakes do)
    one, two = body("5", title="one"), body("5", title="two")
    first, second = AgentTask.from_body(one).spec.issue, AgentTask.from_body(two).spec.issue
    assert first is not None and second is not None and (first.title, second.title) == ("one", "two")


def test_bodies_without_a_version_are_always_parsed() -> None:
    b = body(None)
    assert AgentTask.from_body(b) is not AgentTask.from_body(b)
