"""How kopf logs in to Kubernetes: the standard in-cluster environment first, then kopf's own logins.

kopf's built-in service-account login hard-codes `https://kubernetes.default.svc`, so an operator
Pod without working cluster DNS never reaches the API. Every Pod gets `KUBERNETES_SERVICE_HOST`
and `KUBERNETES_SERVICE_PORT` (the `kubernetes` Service's ClusterIP), which is what client-go's
in-cluster config uses; this handler does the same. The order, as kubectl and client-go choose:

1. `$KUBECONFIG` set explicitly: that kubeconfig (kopf's own `login_with_kubeconfig`);
2. in a Pod (service env + mounted token): `https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT`
   with the mounted token, CA and namespace;
3. `~/.kube/config`, then kopf's service-account login (only reached without the service env).

The token file is re-read on every login: kopf logs in again when the API answers 401, which is
how a rotated projected token is picked up. The result is also handed to `readiness.py`, which
probes the API with exactly the connection kopf uses.

Registering any `@kopf.on.login` handler turns off kopf's default ones, so the fallbacks are
called from here. It does not support exec credential plugins (neither does kopf without the
`kubernetes` client library).
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import kopf

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
# kopf's own priority for service-account credentials (kopf/_core/intents/piggybacking.py)
_PRIORITY = 20

_listener: list[Callable[[kopf.ConnectionInfo], None]] = []


def on_login(listener: Callable[[kopf.ConnectionInfo], None]) -> None:
    """Call `listener` with every connection handed to kopf from now on (replaces the previous one)."""
    _listener[:] = [listener]


def service_url(host: str, port: str) -> str:
    """`https://host:port`, with IPv6 literals in brackets."""
    try:
        if ipaddress.ip_address(host).version == 6:
            host = f"[{host}]"
    except ValueError:
        pass  # a name, used as it is
    return f"https://{host}:{port}"


def in_cluster(env: Mapping[str, str], sa_dir: Path = SERVICE_ACCOUNT_DIR, *,
               trust_env: bool = False) -> kopf.ConnectionInfo | None:
    """The connection a Pod's standard service environment describes; None outside a Pod."""
    host = env.get("KUBERNETES_SERVICE_HOST", "").strip()
    port = env.get("KUBERNETES_SERVICE_PORT", "").strip() or "443"
    token_file = sa_dir / "token"
    if not host or not token_file.is_file():
        return None
    token = token_file.read_text(encoding="utf-8").strip()
    ca_file = sa_dir / "ca.crt"
    ns_file = sa_dir / "namespace"
    namespace = ns_file.read_text(encoding="utf-8").strip() if ns_file.is_file() else ""
    return kopf.ConnectionInfo(
        server=service_url(host, port),
        ca_path=str(ca_file) if ca_file.is_file() else None,
        token=token or None,
        default_namespace=namespace or None,
        trust_env=trust_env,
        priority=_PRIORITY,
    )


def choose(env: Mapping[str, str], *, kubeconfig: Callable[[], kopf.ConnectionInfo | None],
           service_account: Callable[[], kopf.ConnectionInfo | None],
           sa_dir: Path = SERVICE_ACCOUNT_DIR, trust_env: bool = False) -> kopf.ConnectionInfo | None:
    """Pick the connection in the order of the module docstring."""
    if env.get("KUBECONFIG"):
        return kubeconfig()
    return in_cluster(env, sa_dir, trust_env=trust_env) or kubeconfig() or service_account()


@kopf.on.login(id="agenttask-login")
def login(settings: kopf.OperatorSettings, **kwargs: Any) -> kopf.ConnectionInfo | None:
    info = choose(
        os.environ,
        kubeconfig=lambda: kopf.login_with_kubeconfig(settings=settings, **kwargs),
        service_account=lambda: kopf.login_with_service_account(settings=settings, **kwargs),
        trust_env=settings.networking.trust_env,
    )
    if info is not None:
        for listener in _listener:
            listener(info)
    return info
