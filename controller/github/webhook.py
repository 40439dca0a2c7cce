"""`POST /github/webhook`: verify a GitHub delivery and create the AgentTask it asks for.

Order of checks, each answered with JSON and creating nothing when it fails: body size (413,
read incrementally, never more than the limit + 1 byte), `X-Hub-Signature-256` over the raw
bytes (401 when missing or wrong), `X-GitHub-Event` (400 when missing), the JSON itself (400;
the body must be UTF-8). Then: `ping` -> 200; events other than `issues` / `issue_comment`
-> 204; a malformed payload -> 400; an event that triggers nothing -> 204 with the reason in
`X-AgentTask-Ignored`; a trigger -> the AgentTask is created (`events.task_body`) and the
answer is 202 `{"task", "namespace", "created"}`. A redelivery (same name, 409 from the
apiserver) is also 202, with `created: false`. The apiserver refusing the task (e.g. a CRD
rule) -> 422; the apiserver unavailable -> 503 (GitHub lets you redeliver).

Logged per delivery: delivery id, event, action, repository, issue number and the outcome.
Never logged: the payload, headers, the secret.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web

from .. import logs
from ..errors import Fatal, Retryable
from ..kube import Conflict
from . import events

PATH = "/github/webhook"
_log = logging.getLogger("agenttask.github.webhook")


class TaskCreator(Protocol):
    async def create_task(self, namespace: str, body: dict[str, Any]) -> dict[str, Any] | None: ...


def _json(status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(payload, status=status, headers=headers)


class PayloadTooLarge(Exception):
    pass


async def read_limited(request: web.Request, limit: int) -> bytes:
    """The request body, or `PayloadTooLarge` as soon as it exceeds `limit` bytes."""
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await request.content.read(64 * 1024)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge
        chunks.append(chunk)


@dataclass
class WebhookHandler:
    secret: bytes
    kube: TaskCreator
    triggers: events.TriggerConfig
    defaults: events.TaskDefaults
    max_body_bytes: int

    def routes(self) -> list[web.RouteDef]:
        return [web.post(PATH, self.handle)]

    async def handle(self, request: web.Request) -> web.Response:
        delivery = request.headers.get("X-GitHub-Delivery", "")[:255] or None
        event = request.headers.get("X-GitHub-Event", "")
        fields = {"delivery_id": delivery, "operation": f"webhook {event or '?'}"}
        try:
            raw = await read_limited(request, self.max_body_bytes)
        except PayloadTooLarge:
            _log.warning("webhook refused: body larger than %d bytes", self.max_body_bytes, extra=fields)
            return _json(413, {"error": f"payload larger than {self.max_body_bytes} bytes"})
        if not events.verify_signature(self.secret, raw, request.headers.get(events.SIGNATURE_HEADER)):
            missing = events.SIGNATURE_HEADER not in request.headers
            _log.warning("webhook refused: %s signature", "missing" if missing else "invalid", extra=fields)
            return _json(401, {"error": f"{'missing' if missing else 'invalid'} {events.SIGNATURE_HEADER}"})
        if not event:
            return _json(400, {"error": "missing X-GitHub-Event"})
        try:
            payload = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            _log.warning("webhook refused: body is not UTF-8 JSON", extra=fields)
            return _json(400, {"error": "the body is not valid UTF-8 JSON"})
        if event == "ping":
            return _json(200, {"ok": True, "event": "ping"})
        if event not in events.EVENTS:
            return web.Response(status=204, headers={"X-AgentTask-Ignored": f"event {event[:64]} is not handled"})
        try:
            parsed = events.parse_event(event, payload)
        except events.MalformedEvent as exc:
            _log.warning("webhook refused: %s", exc, extra=fields)
            return _json(400, {"error": str(exc)})
        where = f"{parsed.repository.full_name}#{parsed.issue.number}"
        fields["operation"] = f"webhook {event}.{parsed.action}"
        decision = events.trigger_for(parsed, self.triggers)
        if isinstance(decision, events.Ignored):
            _log.info("webhook for %s ignored: %s", where, decision.reason, extra=fields)
            return web.Response(status=204, headers={"X-AgentTask-Ignored": decision.reason})
        return await self._create(parsed, decision, delivery, where, fields)

    async def _create(self, parsed: events.IssueEvent, trigger: events.Trigger, delivery: str | None,
                      where: str, fields: dict[str, Any]) -> web.Response:
        body = events.task_body(parsed, trigger, delivery_id=delivery, defaults=self.defaults)
        name, namespace = body["metadata"]["name"], self.defaults.namespace
        answer = {"task": name, "namespace": namespace}
        extra = {**fields, "namespace": namespace, "object_name": name}
        try:
            await self.kube.create_task(namespace, body)
        except Conflict:
            _log.info("webhook for %s: task %s already exists (redelivery)", where, name, extra=extra)
            return _json(202, {**answer, "created": False})
        except Retryable as exc:
            _log.warning("webhook for %s: creating %s failed: %s", where, name, logs.redact(str(exc)), extra=extra)
            return _json(503, {"error": "the Kubernetes API is unavailable; redeliver later"})
        except Fatal as exc:
            message = logs.redact(str(exc))
            _log.warning("webhook for %s: the apiserver refused %s: %s", where, name, message, extra=extra)
            return _json(422, {"error": message[:1000]})
        _log.info("webhook for %s (%s by %s): created task %s", where, trigger.kind, trigger.requested_by, name,
                  extra=extra)
        return _json(202, {**answer, "created": True})
