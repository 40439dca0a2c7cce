"""Wiring of the GitHub flow from settings: which parts are on, and their shared objects.

- The webhook route exists only when `github_webhook_secret` is set (never unauthenticated).
- The REST client and the progress notifier exist only when `github_api_url` is set and a
  token or App Secret is named; otherwise the operator makes no GitHub call at all.
`configure` returns None when neither is configured.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from .. import logs
from ..api import AgentTask, AgentTaskStatus
from ..settings import Settings
from .client import GitHubClient, SecretCredentials
from .events import TaskDefaults, TriggerConfig
from .notifier import GitHubNotifier
from .webhook import WebhookHandler

_log = logging.getLogger("agenttask.github")


@dataclass
class GitHubIntegration:
    webhook: WebhookHandler | None
    notifier: GitHubNotifier | None

    @property
    def on_transition(self) -> Callable[[AgentTask, AgentTaskStatus, Mapping[str, Any]], Awaitable[None]] | None:
        """The supervisor's phase-transition hook (None without REST credentials)."""
        return self.notifier.on_transition if self.notifier is not None else None

    @property
    def refresh_credentials(self) -> Callable[[AgentTask], Awaitable[None]] | None:
        """Renews running tasks' installation tokens (GitHub App mode only)."""
        if self.notifier is None or not self.notifier.app_mode:
            return None
        return self.notifier.renew_runner_token

    def routes(self) -> list[web.RouteDef]:
        return self.webhook.routes() if self.webhook is not None else []

    async def close(self) -> None:
        if self.notifier is not None:
            await self.notifier.close()


def triggers(settings: Settings) -> TriggerConfig:
    return TriggerConfig(label=settings.github_trigger_label, on_open=settings.github_trigger_on_open,
                         phrase=settings.github_trigger_phrase,
                         allowed_associations=frozenset(a.upper() for a in settings.github_allowed_associations))


def defaults(settings: Settings) -> TaskDefaults:
    return TaskDefaults(
        namespace=settings.github_namespace,
        credentials_secret=None if settings.github_app_secret else settings.github_token_secret,
        credentials_key=settings.github_token_secret_key,
        per_installation_credentials=settings.github_app_secret is not None,
        agent_command=tuple(settings.github_agent_command) if settings.github_agent_command else None,
        agent_env=tuple(sorted(settings.github_agent_env.items())),
        draft=settings.github_draft_pull_requests,
    )


def configure(settings: Settings, *, kube: Any) -> GitHubIntegration | None:
    webhook = None
    if settings.github_webhook_secret is not None:
        if settings.namespaces and settings.github_namespace not in settings.namespaces:
            _log.warning("webhook tasks go to namespace %s, which this operator does not watch (%s)",
                         settings.github_namespace, ",".join(settings.namespaces))
        secret = settings.github_webhook_secret.get_secret_value()
        logs.register_secret(secret)
        webhook = WebhookHandler(secret=secret.encode(), kube=kube, triggers=triggers(settings),
                                 defaults=defaults(settings), max_body_bytes=settings.github_webhook_max_body_bytes)
    notifier = None
    if settings.github_api_url and (settings.github_token_secret or settings.github_app_secret):
        credentials = SecretCredentials(kube, namespace=settings.github_namespace,
                                        token_secret=settings.github_token_secret,
                                        token_key=settings.github_token_secret_key,
                                        app_secret=settings.github_app_secret)
        client = GitHubClient(api_url=settings.github_api_url, credentials=credentials,
                              timeout=settings.github_request_timeout_seconds,
                              max_attempts=settings.github_max_attempts)
        notifier = GitHubNotifier(client=client, kube=kube, app_mode=credentials.app_mode,
                                  timeout=settings.github_request_timeout_seconds)
    if webhook is None and notifier is None:
        return None
    return GitHubIntegration(webhook=webhook, notifier=notifier)


__all__ = ["GitHubIntegration", "configure"]
