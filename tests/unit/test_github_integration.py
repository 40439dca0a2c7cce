"""Which GitHub parts the settings switch on (none by default: no route, no hook, no calls)."""

from __future__ import annotations

import pytest

from controller.github import integration
from controller.settings import Settings


async def test_nothing_without_configuration() -> None:
    assert integration.configure(Settings(), kube=object()) is None


async def test_webhook_only_with_a_secret_and_notifier_only_with_api_and_credentials() -> None:
    webhook_only = integration.configure(Settings(github_webhook_secret="s3cret-value"), kube=object())
    assert webhook_only is not None and webhook_only.webhook is not None
    assert webhook_only.notifier is None and webhook_only.on_transition is None
    assert [r.path for r in webhook_only.routes()] == ["/github/webhook"]  # type: ignore[attr-defined]

    no_credentials = integration.configure(Settings(github_api_url="https://api.github.com"), kube=object())
    assert no_credentials is None

    both = integration.configure(Settings(github_api_url="https://api.github.com", github_token_secret="gh",
                                          github_webhook_secret="s3cret-value"), kube=object())
    assert both is not None and both.on_transition is not None
    assert both.webhook is not None and both.webhook.defaults.credentials_secret == "gh"
    await both.close()


def test_app_mode_and_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTTASK_GITHUB_ALLOWED_ASSOCIATIONS", "owner, member")
    monkeypatch.setenv("AGENTTASK_GITHUB_AGENT_COMMAND", '["a", "b"]')
    monkeypatch.setenv("AGENTTASK_GITHUB_AGENT_ENV", '{"GIT_SSL_CAINFO": "/ca.crt"}')
    settings = Settings(github_app_secret="app", github_token_secret="gh", github_webhook_secret="x" * 8)
    defaults = integration.defaults(settings)
    assert defaults.per_installation_credentials and defaults.credentials_secret is None
    assert defaults.agent_command == ("a", "b") and defaults.agent_env == (("GIT_SSL_CAINFO", "/ca.crt"),)
    assert integration.triggers(settings).allowed_associations == frozenset({"OWNER", "MEMBER"})
