"""Pure webhook logic: signatures, payload parsing, trigger rules, task names and bodies."""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest

from controller.github import events
from controller.github.events import (
    BODY_LIMIT,
    TRUNCATION_MARKER,
    Ignored,
    MalformedEvent,
    TaskDefaults,
    Trigger,
    TriggerConfig,
    parse_event,
    sign,
    task_body,
    task_name,
    trigger_for,
    verify_signature,
)

SECRET = b"webhook-secret"
CONFIG = TriggerConfig(label="agenttask", on_open=False, phrase="/agenttask run",
                       allowed_associations=frozenset({"OWNER", "MEMBER", "COLLABORATOR"}))
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def payload(action: str = "opened", *, labels: tuple[str, ...] = ("agenttask",), association: str = "OWNER",
            sender: str = "octocat", author: str = "octocat", **extra: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "action": action,
        "repository": {"name": "widgets", "full_name": "Acme/widgets", "owner": {"login": "Acme"},
                       "clone_url": "https://github.com/Acme/widgets.git", "default_branch": "main",
                       "private": False},
        "issue": {"number": 42, "title": "Fix it", "body": "Please.", "html_url": "https://github.com/Acme/widgets/issues/42",
                  "user": {"login": author, "type": "User"}, "author_association": association,
                  "labels": [{"name": n} for n in labels]},
        "sender": {"login": sender, "type": "User"},
        "installation": {"id": 7},
    }
    doc.update(extra)
    return doc


def comment_payload(body: str = "/agenttask run", *, association: str = "MEMBER", comment_id: int = 9001,
                    user: str = "maintainer") -> dict[str, Any]:
    doc = payload("created", labels=(), association="NONE", sender=user)
    doc["comment"] = {"id": comment_id, "body": body, "user": {"login": user, "type": "User"},
                      "author_association": association}
    return doc


# ------------------------------------------------------------------ signatures


def test_signature_roundtrip_and_known_vector() -> None:
    body = b'{"zen":"Keep it logically awesome."}'
    assert verify_signature(SECRET, body, sign(SECRET, body))
    # GitHub's documented example: secret "It's a Secret to Everybody", payload "Hello, World!"
    assert sign(b"It's a Secret to Everybody", b"Hello, World!") == (
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17")


@pytest.mark.parametrize("header", [
    None, "", "sha256=", "sha1=0123", "sha256=" + "0" * 64, "SHA256=" + "0" * 64, "sha256=zz", "sha256=é",
])
def test_bad_signatures_are_refused(header: str | None) -> None:
    assert not verify_signature(SECRET, b"{}", header)


def test_signature_depends_on_every_byte_and_the_secret() -> None:
    good = sign(SECRET, b'{"a":1}')
    assert not verify_signature(SECRET, b'{"a":2}', good)
    assert not verify_signature(b"other", b'{"a":1}', good)
    assert not verify_signature(b"", b'{"a":1}', sign(b"", b'{"a":1}'))  # an empty secret never verifies


# --------------------------------------------------------------------- parsing


def test_parse_ignores_unknown_keys_and_types_the_payload() -> None:
    event = parse_event("issues", payload())
    assert event.issue.number == 42 and event.repository.full_name == "Acme/widgets"
    assert event.installation is not None and event.installation.id == 7


@pytest.mark.parametrize("broken", [
    [], "text", {"action": "opened"},
    {**payload(), "issue": {"number": "not a number", "user": {"login": "x"}}},
    {**payload(), "repository": {"name": "x"}},
])
def test_parse_refuses_wrong_shapes(broken: Any) -> None:
    with pytest.raises(MalformedEvent):
        parse_event("issues", broken)


def test_comment_event_needs_a_comment() -> None:
    with pytest.raises(MalformedEvent):
        parse_event("issue_comment", payload("created"))


# -------------------------------------------------------------------- triggers


def decide(event: str, doc: dict[str, Any], config: TriggerConfig = CONFIG) -> Trigger | Ignored:
    return trigger_for(parse_event(event, doc), config)


def test_opened_with_label_triggers_with_the_issue_key() -> None:
    got = decide("issues", payload())
    assert got == Trigger(kind="opened", key="issue", requested_by="octocat")


def test_opened_without_label_needs_on_open() -> None:
    assert isinstance(decide("issues", payload(labels=())), Ignored)
    on_open = TriggerConfig(**{**CONFIG.__dict__, "on_open": True})
    assert isinstance(decide("issues", payload(labels=()), on_open), Trigger)


@pytest.mark.parametrize("association", ["NONE", "CONTRIBUTOR", "FIRST_TIME_CONTRIBUTOR", "FIRST_TIMER"])
def test_opened_by_outsiders_is_ignored_even_with_label(association: str) -> None:
    assert isinstance(decide("issues", payload(association=association)), Ignored)


def test_labeled_by_a_triager_trusts_the_sender() -> None:
    doc = payload("labeled", association="NONE", sender="maintainer", author="stranger", label={"name": "agenttask"})
    got = decide("issues", doc)
    assert isinstance(got, Trigger) and got.key == "issue" and got.requested_by == "maintainer"


def test_label_self_applied_by_an_outsider_is_ignored() -> None:
    doc = payload("labeled", association="NONE", sender="stranger", author="stranger", label={"name": "agenttask"})
    assert isinstance(decide("issues", doc), Ignored)


def test_other_labels_and_actions_are_ignored() -> None:
    assert isinstance(decide("issues", payload("labeled", label={"name": "bug"})), Ignored)
    assert isinstance(decide("issues", payload("closed")), Ignored)
    assert isinstance(decide("issues", payload("edited")), Ignored)


def test_comment_with_phrase_from_member_triggers_per_comment() -> None:
    got = decide("issue_comment", comment_payload("Thanks!\n  /AgentTask run please add tests"))
    assert isinstance(got, Trigger)
    assert got.kind == "comment" and got.key == "comment:9001" and got.requested_by == "maintainer"
    assert got.prompt is not None and "please add tests" in got.prompt


@pytest.mark.parametrize("body", ["", "looks good", "> /agenttask run", "please /agenttask run", "/agenttask"])
def test_comment_without_phrase_at_line_start_is_ignored(body: str) -> None:
    assert isinstance(decide("issue_comment", comment_payload(body)), Ignored)


def test_comment_from_outsider_edit_or_bot_is_ignored() -> None:
    assert isinstance(decide("issue_comment", comment_payload(association="NONE")), Ignored)
    edited = comment_payload()
    edited["action"] = "edited"
    assert isinstance(decide("issue_comment", edited), Ignored)
    bot = comment_payload()
    bot["sender"] = {"login": "agenttask[bot]", "type": "Bot"}
    assert isinstance(decide("issue_comment", bot), Ignored)


def test_pull_request_comments_are_ignored() -> None:
    doc = comment_payload()
    doc["issue"]["pull_request"] = {"url": "https://api.github.com/repos/Acme/widgets/pulls/42"}
    assert isinstance(decide("issue_comment", doc), Ignored)


# ------------------------------------------------------------------------ names


def test_name_is_deterministic_dns_safe_and_delivery_independent() -> None:
    name = task_name("Acme/widgets", 42, "issue")
    assert name == task_name("acme/Widgets", 42, "issue")  # GitHub names are case-insensitive
    assert re.fullmatch(r"gh-acme-widgets-42-[0-9a-f]{8}", name)
    assert name != task_name("Acme/widgets", 42, "comment:1")
    assert name != task_name("Acme/widgets", 43, "issue")
    assert name != task_name("Acme/widget", 42, "issue")


@pytest.mark.parametrize("full_name", [
    "a" * 39 + "/" + "b" * 100, "Some.Org/my_repo.js", "-/-", "___/...", "x/y", "UPPER/Case--Repo",
])
def test_names_are_valid_dns_labels(full_name: str) -> None:
    for number in (1, 42, 2**40):
        name = task_name(full_name, number, "comment:123456789")
        assert len(name) <= 63 and DNS_LABEL.match(name), name


def test_truncated_slugs_do_not_collide() -> None:
    a = task_name("o" * 39 + "/" + "r" * 90 + "-one", 1, "issue")
    b = task_name("o" * 39 + "/" + "r" * 90 + "-two", 1, "issue")
    assert a != b and a[:-9] == b[:-9]


# ------------------------------------------------------------------------- body


DEFAULTS = TaskDefaults(namespace="agents", credentials_secret="github-token", agent_command=("python3", "agent.py"),
                        agent_env=(("MODE", "test"),))


def body_for(doc: dict[str, Any], event: str = "issues", delivery: str | None = "d-1",
             defaults: TaskDefaults = DEFAULTS) -> dict[str, Any]:
    parsed = parse_event(event, doc)
    got = trigger_for(parsed, CONFIG)
    assert isinstance(got, Trigger)
    return task_body(parsed, got, delivery_id=delivery, defaults=defaults)


def test_task_body_carries_repository_issue_audit_and_defaults() -> None:
    body = body_for(payload())
    assert body["metadata"]["name"] == task_name("Acme/widgets", 42, "issue")
    assert body["metadata"]["namespace"] == "agents"
    spec = body["spec"]
    assert spec["repository"] == {"url": "https://github.com/Acme/widgets.git", "baseBranch": "main",
                                  "credentialsSecretRef": {"name": "github-token", "key": "token"}}
    assert spec["issue"] == {"number": 42, "title": "Fix it", "body": "Please.", "author": "octocat",
                             "url": "https://github.com/Acme/widgets/issues/42"}
    assert spec["audit"] == {"requestedBy": "octocat", "installationId": 7, "source": "github-webhook",
                             "deliveryId": "d-1"}
    assert spec["agent"] == {"command": ["python3", "agent.py"], "env": [{"name": "MODE", "value": "test"}]}
    assert spec["pullRequest"] == {"create": True, "draft": True}
    assert "prompt" not in spec


def test_redelivery_and_opened_plus_labeled_map_to_one_name() -> None:
    opened = body_for(payload(), delivery="d-1")
    again = body_for(payload(), delivery="d-2")
    labeled = body_for(payload("labeled", label={"name": "agenttask"}), delivery="d-3")
    assert opened["metadata"]["name"] == again["metadata"]["name"] == labeled["metadata"]["name"]


def test_comment_task_has_its_own_name_and_prompt() -> None:
    one = body_for(comment_payload(comment_id=1), "issue_comment")
    two = body_for(comment_payload(comment_id=2), "issue_comment")
    assert one["metadata"]["name"] != two["metadata"]["name"]
    assert one["spec"]["audit"]["requestedBy"] == "maintainer"
    assert one["spec"]["prompt"].endswith("/agenttask run")


def test_app_mode_uses_the_installation_secret() -> None:
    defaults = TaskDefaults(namespace="agents", per_installation_credentials=True)
    body = body_for(payload(), defaults=defaults)
    assert body["spec"]["repository"]["credentialsSecretRef"] == {
        "name": "agenttask-github-installation-7", "key": "token"}


def test_hostile_text_is_copied_verbatim() -> None:
    hostile = "$(touch /tmp/x) `id` '; rm -rf / #\"\n\r\x00\x1b[31m\u202e ünï€😀"
    doc = payload()
    doc["issue"]["title"], doc["issue"]["body"] = hostile, hostile * 3
    spec = body_for(doc)["spec"]
    assert spec["issue"]["title"] == hostile
    assert spec["issue"]["body"] == hostile * 3


def test_lone_surrogates_become_replacement_characters() -> None:
    doc = payload()
    doc["issue"]["body"] = "a\udcffb\ud800"
    assert body_for(doc)["spec"]["issue"]["body"] == "a\ufffdb\ufffd"


def test_body_of_exactly_one_mib_is_kept_and_longer_is_cut_with_a_marker() -> None:
    doc = payload()
    doc["issue"]["body"] = "x" * BODY_LIMIT
    assert body_for(doc)["spec"]["issue"]["body"] == "x" * BODY_LIMIT
    long = copy.deepcopy(doc)
    long["issue"]["body"] = "é" * (BODY_LIMIT + 10)
    cut = body_for(long)["spec"]["issue"]["body"]
    assert len(cut) == BODY_LIMIT and cut.endswith(TRUNCATION_MARKER)
    assert cut[:-len(TRUNCATION_MARKER)] == "é" * (BODY_LIMIT - len(TRUNCATION_MARKER))


def test_long_title_is_cut_to_the_crd_limit() -> None:
    doc = payload()
    doc["issue"]["title"] = "t" * 5000
    assert len(body_for(doc)["spec"]["issue"]["title"]) == events.TITLE_LIMIT
