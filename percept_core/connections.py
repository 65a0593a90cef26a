"""Where the tool is connected (never a secret) and a quick health check of each service. No UI.

`Curator.check_connections()` is the thorough check (it lists, logs in to the MM server); the quick
check here is cheap enough to run every half minute for a status line.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from azure.core.exceptions import AzureError

from .blobs import storage_error
from .config import Settings, is_loopback_host
from .errors import CuratorError

if TYPE_CHECKING:
    from .curator import ConnectionCheck, Curator

STORAGE, MM_SERVER, CUSTOM_VISION = "Storage", "MM server", "Custom Vision"


@dataclass(frozen=True)
class ServiceTarget:
    """One service the tool talks to and where it is, in words a reviewer recognises."""

    service: str
    where: str
    detail: str
    local: bool | None  # None: not configured


def _connection_string_parts(text: str | None) -> dict[str, str]:
    parts: dict[str, str] = {}
    for item in (text or "").split(";"):
        name, _, value = item.partition("=")
        if name.strip():
            parts[name.strip().lower()] = value.strip()
    return parts


def _is_local(url: str | None) -> bool | None:
    return is_loopback_host(urlsplit(url).hostname) if url else None


def _host(url: str) -> str:
    """host[:port] of a URL, without any user name, password or query that might be in it."""
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)


def _public_url(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{_host(url)}{parts.path.rstrip('/')}"


def storage_target(settings: Settings) -> ServiceTarget:
    container = settings.mm_telemetry_storage_container
    if settings.mm_storage_connection_string:
        parts = _connection_string_parts(settings.mm_storage_connection_string)  # the key stays in there
        account = parts.get("accountname") or settings.mm_storage_account or "?"
        endpoint = parts.get("blobendpoint") or f"https://{account}.blob.core.windows.net"
        local = _is_local(endpoint) or parts.get("usedevelopmentstorage") == "true"
        return ServiceTarget(STORAGE, account, f"container {container} at {_host(endpoint)}", local)
    if settings.mm_storage_account:
        return ServiceTarget(STORAGE, settings.mm_storage_account, f"container {container}", False)
    return ServiceTarget(STORAGE, "not configured", "set mm_storage_account", None)


def targets(settings: Settings) -> list[ServiceTarget]:
    """Storage, MM server and Custom Vision: where each is, without a secret."""
    mm = settings.mm_server_url
    cv = settings.custom_vision_endpoint
    project = settings.custom_vision_project_id
    return [
        storage_target(settings),
        ServiceTarget(
            MM_SERVER, _public_url(mm) if mm else "not configured", "" if mm else "set mm_server_url", _is_local(mm)
        ),
        ServiceTarget(
            CUSTOM_VISION,
            f"project {project}" if project else "not configured",
            _host(cv) if cv else "set custom_vision_endpoint",
            _is_local(cv),
        ),
    ]


def environment_label(settings: Settings) -> str:
    """The environment in two words: Local devstack (every service on this machine), Azure, or both."""
    local = [t.local for t in targets(settings) if t.local is not None]
    if not local:
        return "Not configured"
    if all(local):
        return "Local devstack"
    return "Azure" if not any(local) else "Local and Azure"


def quick_health(curator: Curator) -> list[ConnectionCheck]:
    """One cheap request a service: read the container's properties, the MM bootstrap, the project."""
    from .curator import ConnectionCheck

    def attempt(service: str, action) -> ConnectionCheck:
        try:
            return ConnectionCheck(service, True, action())
        except CuratorError as exc:
            return ConnectionCheck(service, False, str(exc))
        except AzureError as exc:
            return ConnectionCheck(service, False, f"{exc.__class__.__name__}: the service could not be reached")
        except Exception as exc:  # never let a status line break a page; never print a secret
            return ConnectionCheck(service, False, f"{exc.__class__.__name__} (unexpected)")

    def storage() -> str:
        try:
            curator.data.container_client.get_container_properties()
        except AzureError as exc:
            raise storage_error(exc, f"read the {curator.data.container!r} container") from None
        return f"container {curator.data.container!r} is reachable"

    def mm() -> str:
        curator.key_service.bootstrap()
        return "the MM server answers"

    def customvision() -> str:
        project = curator.customvision.project(refresh=True)
        kind = project.kind + (f", {project.classification_type}" if project.classification_type else "")
        return f"{project.name} ({kind})"

    return [attempt(STORAGE, storage), attempt(MM_SERVER, mm), attempt(CUSTOM_VISION, customvision)]


__all__ = ["CUSTOM_VISION", "MM_SERVER", "STORAGE", "ServiceTarget", "environment_label", "quick_health", "targets"]
