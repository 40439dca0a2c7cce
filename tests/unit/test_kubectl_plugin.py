"""Pure parts of the kubectl plugin: what a status-tail update adds, the action patches, the rerun
object, list filters and rendering."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controller.kubectl_plugin import actions, view
from controller.kubectl_plugin.follow import SKIPPED, daytona_credentials, new_output

NOW = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)


def obj(phase: str | None = None, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "agenttask.io/v1alpha1", "kind": "AgentTask",
            "metadata": {"name": "t", "namespace": "n", "uid": "u", "creationTimestamp": "2026-01-01T11:55:00Z",
                         "labels": {"team": "a"},
                         "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"}},
            "spec": {"repository": {"url": "https://x/r.git"}, **spec},
            "status": {"phase": phase} if phase else {}}


def test_new_output_appends_only_what_is_new() -> None:
    assert new_output("", "abc") == "abc"
    assert new_output("abc", "abc") == ""
    assert new_output("abc", "abcdef") == "def"
    window = "x" * 100
    assert new_output("a" * 10 + window, window + "NEW") == "NEW"  # the tail moved on


def test_new_output_marks_a_gap_instead_of_guessing_from_a_short_overlap() -> None:
    previous = "line 1\n" * 50
    current = "\n" + "other\n" * 50  # shares one newline only
    assert new_output(previous, current) == SKIPPED + current


@given(st.text(min_size=200, max_size=600), st.integers(0, 150), st.integers(1, 150))
def test_new_output_reconstructs_the_stream_from_sliding_tails(text: str, start: int, step: int) -> None:
    size = 128
    end = min(len(text), start + size)
    previous = text[max(0, end - size):end]
    nxt = min(len(text), end + step)
    current = text[max(0, nxt - size):nxt]
    added = new_output(previous, current)
    if not added.startswith(SKIPPED):
        assert (previous + added).endswith(current)


def test_cancel_and_suspend_patches() -> None:
    assert actions.cancel_patch(obj("Running")) == {"cancel": True}
    assert actions.cancel_patch(obj("Running", cancel=True)) is None
    with pytest.raises(actions.Refused, match="already finished"):
        actions.cancel_patch(obj("Succeeded"))
    assert actions.suspend_patch(obj("Running"), suspend=True) == {"suspend": True}
    assert actions.suspend_patch(obj("Suspended", suspend=True), suspend=False) == {"suspend": False}
    assert actions.suspend_patch(obj("Pending", suspend=True), suspend=True) is None
    with pytest.raises(actions.Refused, match="being cancelled"):
        actions.suspend_patch(obj("Running", cancel=True), suspend=True)


def test_rerun_body_copies_the_spec_and_resets_the_switches() -> None:
    old = obj("Failed", suspend=True, cancel=True, audit={"requestedBy": "me", "deliveryId": "d"})
    body = actions.rerun_body(old)
    assert body["metadata"] == {"name": "t-rerun-1", "labels": {"team": "a", actions.RERUN_OF: "t"},
                                "annotations": {actions.RERUN_OF: "t"}}
    assert body["spec"] == {"repository": {"url": "https://x/r.git"}, "audit": {"requestedBy": "me"}}
    assert old["spec"]["cancel"] is True, "the old object is not modified"
    long = "a" * 250
    assert len(actions.rerun_name(long, 12)) <= 253 and actions.rerun_name(long, 12).endswith("-rerun-12")
    old["metadata"]["name"] = long
    assert actions.RERUN_OF not in actions.rerun_body(old)["metadata"]["labels"]  # not a valid label value
    assert actions.rerun_body(old, generate=True)["metadata"]["generateName"].endswith("-rerun-")


def test_list_filters_and_table() -> None:
    items = [obj("Running", audit={"requestedBy": "me"}), obj(None)]
    assert view.matches(items[0], phases=["running"], requester="me")
    assert not view.matches(items[0], phases=["Succeeded"], requester=None)
    assert view.matches(items[1], phases=["Pending"], requester=None)
    assert not view.matches(items[1], phases=[], requester="me")
    text = view.list_table(items, now=NOW, all_namespaces=True, wide=False)
    assert text.splitlines()[0].split() == ["NAMESPACE", "NAME", "PHASE", "REASON", "REPOSITORY", "ISSUE",
                                           "REQUESTER", "AGE"]
    assert text.splitlines()[1].split() == ["n", "t", "Running", "https://x/r.git", "me", "5m"]


def test_describe_shows_usage_and_the_pull_request_when_present() -> None:
    o = obj("Succeeded")
    o["status"].update({"result": {"outcome": "PullRequestOpened", "pullRequestUrl": "https://gh/o/r/pull/3"},
                        "usage": {"agent": {"costUsd": 0.42, "turns": 7}, "sandboxSeconds": 90}})
    page = view.describe(o, [{"type": "Normal", "reason": "AgentSucceeded", "message": "done",
                              "lastTimestamp": "2026-01-01T11:59:00Z", "source": {"component": "agenttask"}}], now=NOW)
    assert "Pull request:   https://gh/o/r/pull/3" in page
    assert "    costUsd:\t0.42" in page and "  sandboxSeconds:\t90" in page
    assert page.split("Events:")[1].split()[6:9] == ["AgentSucceeded", "1m", "agenttask"]


def test_daytona_credentials_need_a_key() -> None:
    assert daytona_credentials({"DAYTONA_API_URL": "http://x"}) is None
    assert daytona_credentials({"DAYTONA_API_KEY": "k"}) == (None, "k", None)
