"""The operator's own Kubernetes API calls (everything kopf does not do for us).

kopf watches AgentTasks and runs the supervisors; this adapter reads Secrets, reads and
patches AgentTask status with optimistic concurrency, and creates/deletes AgentTasks (webhook,
TTL). kr8s reads the configuration (kubeconfig with its exec plugins, or the in-cluster service
account: server, TLS and credentials); the requests go over one aiohttp session (`_Transport`),
the HTTP client kopf and the Daytona SDK use too: kr8s' own httpx client spent about three times
the CPU per request (its TLS runs through anyio's memory-BIO streams), and every status write is
one. A 401 reloads the credentials once (a rotated service-account token) before it counts.
HTTP outcomes map to the operator's errors here: 409 -> `Conflict`, 404 -> `None` (for a
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

import aiohttp
import kr8s.asyncio

from . import logs, retry
from .api import GROUP, PLURAL, VERSION
from .errors import Cause, Fatal, OperatorWide, Retryable, SecretMissing
from .health import Health


class Conflict(Retryable):
    """The object changed since it was read (resourceVersion mismatch)."""


_BASE = f"/apis/{GROUP}"
_LEASES = "/apis/coordination.k8s.io"
# Requests in flight at once, and so TLS connections kept open to the apiserver: 8 already carry
# ~1000 requests/s to a local apiserver, and a burst never opens a new connection per request.
MAX_IN_FLIGHT = 8
REQUEST_TIMEOUT_SECONDS = 60.0


class _Transport:
    """One aiohttp session to the apiserver, built from kr8s' view of the configuration (server,
    TLS context, bearer token, SNI name, proxy). Created in the running loop on first use;
    `refresh` rebuilds it from freshly loaded credentials."""

    def __init__(self, auth: Any):
        self._auth = auth
        self._session: aiohttp.ClientSession | None = None

    async def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            ssl_context = await self._auth.ssl_context()
            headers = {"User-Agent": "agenttask-operator"}
            if self._auth.token:
                headers["Authorization"] = f"Bearer {self._auth.token}"
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=ssl_context, limit=MAX_IN_FLIGHT),
                headers=headers, timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_SECONDS))
        return self._session

    def request_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {}
        if self._auth.tls_server_name:
            options["server_hostname"] = self._auth.tls_server_name
        if self._auth.proxy:
            options["proxy"] = self._auth.proxy
        return options

    def url(self, path: str) -> str:
        return str(self._auth.server).rstrip("/") + path

    async def refresh(self) -> None:
        await self._auth.reauthenticate()
        await self.close()

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None and not session.closed:
            await session.close()


class Kube:
    """A thin async client of one apiserver (configuration read by kr8s, requests by aiohttp)."""

    def __init__(self, api: Any, *, health: Health | None = None):
        self._api = api
        self._transport = _Transport(api.auth)
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

    async def close(self) -> None:
        await self._transport.close()

    @staticmethod
    def _path(*, url: str, namespace: str | None, version: str, base: str) -> str:
        if not base:
            base = "/api" if version == "v1" else "/apis"
        parts = [base, version]
        if namespace:
            parts += ["namespaces", namespace]
        parts.append(url)
        return "/".join(parts)

    async def _send(self, method: str, path: str, *, data: str | None, headers: Mapping[str, str] | None,
                    params: Mapping[str, str] | None) -> tuple[int, str, dict[str, str]]:
        """(status, body text, headers) of one request; a 401 reloads the credentials and tries once more."""
        for attempt in (1, 2):
            session = await self._transport.session()
            async with session.request(method, self._transport.url(path), data=data, headers=headers,
                                       params=params, **self._transport.request_options()) as resp:
                status, text, resp_headers = resp.status, await resp.text(), dict(resp.headers)
            if status != 401 or attempt == 2:
                break
            await self._transport.refresh()
        return status, text, resp_headers

    async def _request(
        self, method: str, *, url: str, namespace: str | None = None, version: str = "v1",
        base: str = "", json_body: Any = None, params: Mapping[str, str] | None = None,
        content_type: str | None = None,
    ) -> dict[str, Any] | None:
        data = json.dumps(json_body) if json_body is not None else None
        headers = {"Content-Type": content_type or "application/json"} if json_body is not None else None
        path = self._path(url=url, namespace=namespace, version=version, base=base)
        what = f"{method} {path}"
        try:
            async with self._in_flight:
                status, text, resp_headers = await self._send(method, path, data=data, headers=headers, params=params)
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
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
