"""Which Helm value sets each operator setting (controller/settings.py), and its environment variable.

Most settings are `settings.<camelCaseName>` in values.yaml and reach the operator as
`AGENTTASK_<NAME>`; the few below are set elsewhere in the chart because they are secrets, scope
or wiring rather than tuning. Shared by the chart and docs tests.
"""

from __future__ import annotations

from pydantic import AliasChoices

from controller.settings import Settings

# field -> the Helm value that sets it (None: fixed by the chart)
SPECIAL: dict[str, str | None] = {
    "namespaces": "watchNamespaces",
    "standalone": "peering.enabled",
    "peering_name": "peering.name",
    "daytona_api_url": "daytona.apiUrl",
    "daytona_api_key": "daytona.existingSecret",
    "daytona_target": "daytona.target",
    "github_webhook_secret": "github.webhookSecret.existingSecret",
    "http_host": None,
    "http_port": "http.port",
    "replica_id": None,  # the pod's name (downward API): stable across container restarts
    "shards": "sharding.shards",
    "shard_lease_seconds": "sharding.leaseSeconds",
    "lease_namespace": None,  # the release's namespace
}


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


def helm_value(field: str) -> str | None:
    return SPECIAL[field] if field in SPECIAL else f"settings.{camel(field)}"


def env_names(field: str) -> list[str]:
    """Every environment variable that sets `field`, the one the chart uses first."""
    alias = Settings.model_fields[field].validation_alias
    if isinstance(alias, AliasChoices):
        names = [str(c) for c in alias.choices]
        # the chart and the docs use the SDK's own name (DAYTONA_API_URL) first
        return sorted(names, key=lambda n: n.startswith("AGENTTASK_"))
    return [f"AGENTTASK_{field.upper()}"]
