"""The plugin's Kubernetes API calls, over one kr8s connection.

Configuration is kr8s': `--kubeconfig` or `KUBECONFIG` (a colon-separated list, merged as
kubectl merges it), `--context` or the current context, else the in-cluster service account.
The namespace is `-n`, else the selected context's namespace, else the service account's,
else `default` (kubectl's order).

HTTP outcomes become the plugin's errors with the apiserver's own message: 404 `NotFound`,
401/403 `Forbidden`, 409 `AlreadyExists`/`Conflict`, anything else `ApiError`. The caller prints
them; nothing here prints. It does not retry: a user's command fails fast and says why.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx
import kr8s
import kr8s.asyncio

from ..api import GROUP, PLURAL, VERSION

_BASE = f"/apis/{GROUP}"
WATCH_SECONDS = 300  # one watch request's server-side timeout; the follower re-watches after it


class PluginError(Exception):
    """An error the plugin reports in one line (exit code 1)."""


class NotFound(PluginError):
    pass


class Forbidden(PluginError):
    pass


class AlreadyExists(PluginError):
    pass


class Conflict(PluginError):
    pass


class ApiError(PluginError):
    pass


class Gone(PluginError):
    """A watch's resourceVersion is too old (HTTP 410): list again."""


def _message(status: int, text: str) -> str:
    try:
        body = json.loads(text)
    except ValueError:
        return text[:300] or f"HTTP {status}"
    return str(body.get("message") or text[:300]) if isinstance(body, dict) else text[:300]


def _raise_for(status: int, text: str, what: str) -> None:
    message = _message(status, text)
    if status == 404:
        raise NotFound(message)
    if status in (401, 403):
        raise Forbidden(message)
    if status == 409:
        reason = ""
        with contextlib.suppress(ValueError, AttributeError):
            reason = str(json.loads(text).get("reason", ""))
        raise (AlreadyExists if reason == "AlreadyExists" else Conflict)(message)
    if status == 410:
        raise Gone(message)
    raise ApiError(f"{what}: HTTP {status}: {message}")


class Client:
    """AgentTask and event calls in the namespace the user selected."""

    def __init__(self, api: Any, namespace: str):
        self._api = api
        self.namespace = namespace

    @classmethod
    async def connect(cls, *, kubeconfig: str | None, context: str | None, namespace: str | None) -> Client:
        try:
            api = await kr8s.asyncio.api(kubeconfig=kubeconfig, context=context)
        except (ValueError, KeyError, FileNotFoundError) as exc:
            raise PluginError(f"cannot load the Kubernetes configuration: {exc}") from exc
        except (httpx.HTTPError, kr8s.APITimeoutError, OSError) as exc:
            raise PluginError(f"cannot reach the Kubernetes API server: {exc}") from exc
        except kr8s.ServerError as exc:
            status = exc.response.status_code if exc.response is not None else 0
            if status in (401, 403):
                raise Forbidden(f"the API server refused the credentials: {exc}") from exc
            raise PluginError(f"the Kubernetes API server answered: {exc}") from exc
        return cls(api, namespace or _default_namespace(api))

    async def _call(self, method: str, url: str, *, namespace: str | None, version: str = VERSION,
                    base: str = _BASE, body: Any = None, content_type: str = "application/json",
                    params: Mapping[str, str] | None = None) -> dict[str, Any]:
        kwargs: dict[str, Any] = {}
        if body is not None:
            kwargs["content"] = json.dumps(body)
            kwargs["headers"] = {"Content-Type": content_type}
        if params:
            kwargs["params"] = dict(params)
        try:
            async with self._api.call_api(method, version=version, base=base, namespace=namespace, url=url,
                                          raise_for_status=False, **kwargs) as resp:
                status, text = resp.status_code, resp.text
        except (httpx.HTTPError, kr8s.APITimeoutError, OSError) as exc:
            raise PluginError(f"cannot reach the Kubernetes API server: {type(exc).__name__}: {exc}") from exc
        if status >= 300:
            _raise_for(status, text, f"{method} {url}")
        result: dict[str, Any] = json.loads(text) if text else {}
        return result

    # --------------------------------------------------------------------- AgentTasks

    async def get(self, name: str) -> dict[str, Any]:
        try:
            return await self._call("GET", f"{PLURAL}/{name}", namespace=self.namespace)
        except NotFound as exc:
            raise NotFound(f'agenttasks.{GROUP} "{name}" not found in namespace "{self.namespace}"') from exc

    async def list_tasks(self, *, all_namespaces: bool, selector: str | None) -> list[dict[str, Any]]:
        params = {"limit": "500"}
        if selector:
            params["labelSelector"] = selector
        items: list[dict[str, Any]] = []
        while True:
            page = await self._call("GET", PLURAL, namespace=None if all_namespaces else self.namespace,
                                    params=params)
            items.extend(page.get("items") or [])
            more = (page.get("metadata") or {}).get("continue")
            if not more:
                return items
            params = {**params, "continue": more}

    async def patch_spec(self, name: str, spec: Mapping[str, Any]) -> dict[str, Any]:
        """A JSON merge patch of `spec` fields (what `kubectl patch --type=merge` sends)."""
        try:
            return await self._call("PATCH", f"{PLURAL}/{name}", namespace=self.namespace, body={"spec": dict(spec)},
                                    content_type="application/merge-patch+json")
        except NotFound as exc:
            raise NotFound(f'agenttasks.{GROUP} "{name}" not found in namespace "{self.namespace}"') from exc

    async def create(self, body: Mapping[str, Any]) -> dict[str, Any]:
        return await self._call("POST", PLURAL, namespace=self.namespace, body=dict(body))

    async def watch(self, name: str, *, resource_version: str) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """(type, object) events of one AgentTask after `resource_version`, until the server ends the
        watch (after at most WATCH_SECONDS). Raises `Gone` when the version is too old."""
        params = {"watch": "true", "fieldSelector": f"metadata.name={name}", "resourceVersion": resource_version,
                  "allowWatchBookmarks": "true", "timeoutSeconds": str(WATCH_SECONDS)}
        try:
            async with self._api.call_api("GET", version=VERSION, base=_BASE, namespace=self.namespace, url=PLURAL,
                                          raise_for_status=False, stream=True, params=params,
                                          timeout=WATCH_SECONDS + 30) as resp:
                if resp.status_code >= 300:
                    await resp.aread()
                    _raise_for(resp.status_code, resp.text, f"watch {PLURAL}/{name}")
                async for line in resp.aiter_lines():
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    obj = event.get("object") or {}
                    if event.get("type") == "ERROR":
                        _raise_for(int(obj.get("code") or 500), json.dumps(obj), f"watch {PLURAL}/{name}")
                    yield str(event.get("type")), obj
        except (httpx.HTTPError, kr8s.APITimeoutError, OSError) as exc:
            raise PluginError(f"the watch of {name} failed: {type(exc).__name__}: {exc}") from exc

    # ------------------------------------------------------------------------- events

    async def events(self, task: Mapping[str, Any]) -> list[dict[str, Any]]:
        meta = task.get("metadata") or {}
        selector = f"involvedObject.name={meta.get('name')},involvedObject.kind=AgentTask"
        if meta.get("uid"):
            selector += f",involvedObject.uid={meta['uid']}"
        page = await self._call("GET", "events", namespace=str(meta.get("namespace") or self.namespace),
                                version="v1", base="/api", params={"fieldSelector": selector})
        items: list[dict[str, Any]] = page.get("items") or []
        return items


def _default_namespace(api: Any) -> str:
    """The selected context's namespace (kubectl's rule). kr8s 0.20 takes the *current* context's
    namespace even when another context was selected, so read the selected one ourselves."""
    context = getattr(api.auth, "_context", None) or {}
    if isinstance(context, dict) and context.get("cluster"):
        return str(context.get("namespace") or "default")
    return str(api.namespace or "default")  # in-cluster: the service account's namespace
