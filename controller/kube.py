"""The operator's own Kubernetes API calls (everything kopf does not do for us).

kopf watches AgentTasks and runs the supervisors; this adapter reads Secrets, reads and
patches AgentTask status with optimistic concurrency, and creates/deletes AgentTasks (webhook,
TTL). It uses kr8s for configuration (kubeconfig or in-cluster service account), TLS and auth,
and maps HTTP outcomes to the operator's errors itself: 409 -> `Conflict`, 404 -> `None` (for a
single object; a failed list always raises), 401/403 -> `OperatorWide` (the operator's own
credentials or RBAC: no task's fault), 429/5xx/timeouts -> `Retryable`, other 4xx -> `Fatal`.

Secret values read here are registered for redaction before they are returned.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx
import kr8s
import kr8s.asyncio

from . import logs, retry
from .api import GROUP, PLURAL, VERSION
from .errors import Cause, Fatal, OperatorWide, Retryable, SecretMissing
from .health import Health


class Conflict(Retryable):
    """The object changed since it was read (resourceVersion mismatch)."""


_BASE = f"/apis/{GROUP}"
_LEASES = "/apis/coordination.k8s.io"
# kr8s' httpx client keeps at most 20 idle connections (httpx's default). More requests in
# flight than that open extra TLS connections that are closed right after their response, so
# every burst paid new TLS handshakes; at most this many at once keeps every connection reused.
# Fewer than 20: httpcore checks every pooled connection for every request it assigns, and
# 8 connections already carry ~1000 requests/s to a local apiserver.
MAX_IN_FLIGHT = 8


class Kube:
    """A thin async client bound to one kr8s API connection."""

    def __init__(self, api: Any, *, health: Health | None = None):
        self._api = api
        self._in_flight = asyncio.Semaphore(MAX_IN_FLIGHT)
        self.health = health or Health()

    @classmethod
    async def connect(cls, kubeconfig: str | None = None, *, health: Health | None = None) -> Kube:
        """Load the configuration (kubeconfig or in-cluster service account); no request is made.

        Not `kr8s.asyncio.api()`: that also asks the apiserver for its version (only to warn about
        untested versions) and fails when the API is unreachable, so the operator could not start
        and answer /healthz and /readyz (which says why it is not ready) until the API is back.
        """
        api = kr8s.asyncio.Api(kubeconfig=kubeconfig, bypass_factory=True)
        await api.auth
        return cls(api, health=health)

    async def _request(
        self, method: str, *, url: str, namespace: str | None = None, version: str = "v1",
        base: str = "", json_body: Any = None, params: Mapping[str, str] | None = None,
        content_type: str | None = None,
    ) -> dict[str, Any] | None:
        kwargs: dict[str, Any] = {}
        if json_body is not None:
            kwargs["content"] = json.dumps(json_body)
            kwargs["headers"] = {"Content-Type": content_type or "application/json"}
        if params:
            kwargs["params"] = dict(params)
        what = f"{method} {base or '/api'}/{version}/{'namespaces/' + namespace + '/' if namespace else ''}{url}"
        try:
            async with self._in_flight, self._api.call_api(
                    method, version=version, base=base, namespace=namespace, url=url, raise_for_status=False,
                    **kwargs) as resp:
                status = resp.status_code
                text = resp.text
                resp_headers = dict(resp.headers)
        except (httpx.TransportError, kr8s.APITimeoutError) as exc:
            raise Retryable(f"{what}: {type(exc).__name__}") from None
        if status < 300:
            body: dict[str, Any] = json.loads(text) if text else {}
            return body
        if status == 404:
            return None
        try:
            message = str(json.loads(text).get("message", ""))
        except ValueError:
            message = text[:200]
        message = logs.redact(f"{what}: HTTP {status}: {message}")
        if status == 409:
            raise Conflict(message, status=status)
        if status == 429 or status >= 500:
            raise Retryable(message, status=status, retry_after=retry.retry_after_seconds(resp_headers,
                                                                                         now=time.time()))
        if status in (401, 403):
            self.health.operator_wide(Cause.KUBERNETES_FORBIDDEN, message)
            raise OperatorWide(message, cause=Cause.KUBERNETES_FORBIDDEN, status=status)
        raise Fatal(message, reason="KubernetesError", status=status)

    # ------------------------------------------------------------------ secrets

    async def read_secret_key(self, namespace: str, name: str, key: str, *, optional: bool = False) -> str | None:
        """The decoded value of one key of a Secret; registered for redaction."""
        body = await self._request("GET", url=f"secrets/{name}", namespace=namespace)
        if body is None:
            if optional:
                return None
            raise SecretMissing(f"Secret {namespace}/{name} not found")
        data = body.get("data") or {}
        if key not in data:
            if optional:
                return None
            raise SecretMissing(f"Secret {namespace}/{name} has no key {key!r}")
        value = base64.b64decode(data[key]).decode("utf-8", errors="replace")
        logs.register_secret(value)
        return value

    # --------------------------------------------------------------- agenttasks

    async def get_task(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self._request("GET", url=f"{PLURAL}/{name}", namespace=namespace, version=VERSION,
                                   base=_BASE)

    async def list_tasks(self, namespace: str | None = None) -> list[dict[str, Any]]:
        """Every AgentTask (all pages); see `task_pages`."""
        return [item async for page in self.task_pages(namespace) for item in page]

    async def task_pages(self, namespace: str | None = None, limit: int = 500) -> AsyncIterator[list[dict[str, Any]]]:
        """The AgentTasks a page at a time (a caller keeps what it needs of each page, not every
        body). Raises instead of ending early when any page fails — a 404 included (the CRD is
        missing or the path is wrong): callers such as the orphan sweep must never mistake
        "could not list" for "there are none"."""
        params: dict[str, str] = {"limit": str(limit)}
        while True:
            body = await self._request("GET", url=PLURAL, namespace=namespace, version=VERSION, base=_BASE,
                                       params=params)
            if body is None:
                raise Fatal(f"listing {PLURAL} answered 404: is the AgentTask CRD installed?",
                            reason="KubernetesError", status=404)
            yield body.get("items", [])
            cont = (body.get("metadata") or {}).get("continue")
            if not cont:
                return
            params = {"limit": str(limit), "continue": cont}

    async def patch_status(self, namespace: str, name: str, *, resource_version: str | None,
                           status: dict[str, Any]) -> dict[str, Any] | None:
        """Replace `.status` as a whole (lists included) if the object is still at `resource_version`.

        A merge patch that carries metadata.resourceVersion is rejected with 409 when the object
        changed, so a stale supervisor never overwrites a newer status.
        """
        body: dict[str, Any] = {"status": status}
        if resource_version:
            body["metadata"] = {"resourceVersion": resource_version}
        # null-out fields the new status no longer has, so the merge patch replaces the whole status
        return await self._request("PATCH", url=f"{PLURAL}/{name}/status", namespace=namespace,
                                   version=VERSION, base=_BASE, json_body=body,
                                   content_type="application/merge-patch+json")

    async def create_task(self, namespace: str, body: dict[str, Any]) -> dict[str, Any] | None:
        return await self._request("POST", url=PLURAL, namespace=namespace, version=VERSION, base=_BASE,
                                   json_body=body)

    async def annotate_task(self, namespace: str, name: str, annotations: dict[str, str]) -> dict[str, Any] | None:
        """Merge `annotations` into the AgentTask's metadata (None when it is gone)."""
        return await self._request("PATCH", url=f"{PLURAL}/{name}", namespace=namespace, version=VERSION,
                                   base=_BASE, json_body={"metadata": {"annotations": annotations}},
                                   content_type="application/merge-patch+json")

    async def apply_secret(self, namespace: str, name: str, *, string_data: dict[str, str],
                           labels: dict[str, str]) -> None:
        """Create or update an Opaque Secret (server-side apply; values registered for redaction)."""
        logs.register_secrets(string_data.values())
        body = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                "metadata": {"name": name, "namespace": namespace, "labels": labels},
                "data": {k: base64.b64encode(v.encode()).decode() for k, v in string_data.items()}}
        await self._request("PATCH", url=f"secrets/{name}", namespace=namespace, json_body=body,
                            content_type="application/apply-patch+yaml",
                            params={"fieldManager": "agenttask-operator", "force": "true"})

    async def delete_task(self, namespace: str, name: str, *, uid: str | None = None) -> bool:
        options: dict[str, Any] = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"}
        if uid:
            options["preconditions"] = {"uid": uid}
        try:
            gone = await self._request("DELETE", url=f"{PLURAL}/{name}", namespace=namespace, version=VERSION,
                                       base=_BASE, json_body=options)
        except Conflict:
            return False  # a different object of the same name: not ours to delete
        return gone is not None

    # ------------------------------------------------------------------ shard leases

    async def get_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self._request("GET", url=f"leases/{name}", namespace=namespace, version="v1",
                                   base=_LEASES)

    async def create_lease(self, namespace: str, body: dict[str, Any]) -> dict[str, Any] | None:
        """Create a Lease; `Conflict` when it exists already (another replica created it first)."""
        return await self._request("POST", url="leases", namespace=namespace, version="v1", base=_LEASES,
                                   json_body=body)

    async def replace_lease(self, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any] | None:
        """PUT a Lease read earlier: `Conflict` when it changed since (its resourceVersion is in `body`)."""
        return await self._request("PUT", url=f"leases/{name}", namespace=namespace, version="v1", base=_LEASES,
                                   json_body=body)

    # ------------------------------------------------------------------ peering

    async def served_resources(self, group: str, version: str) -> set[str] | None:
        """The resource names (plurals) the API serves in `group/version`, from discovery (which
        every authenticated client may read); None when the group version is not served."""
        body = await self._request("GET", url=version, version=group, base="/apis")
        if body is None:
            return None
        return {str(r.get("name")) for r in body.get("resources") or [] if "/" not in str(r.get("name"))}

    async def get_peering(self, name: str, *, namespace: str | None) -> dict[str, Any] | None:
        """kopf's (Cluster)KopfPeering object, which holds the replicas' keep-alives."""
        plural = "kopfpeerings" if namespace else "clusterkopfpeerings"
        return await self._request("GET", url=f"{plural}/{name}", namespace=namespace, version="v1",
                                   base="/apis/kopf.dev")
