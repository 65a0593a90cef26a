"""Settings: the original sample's setting names, read from the usual places, secrets redacted.

Sources, highest first: explicit arguments, the environment, a `.env` file, an Azure Functions
`local.settings.json` (`{"Values": {...}}`), Streamlit secrets (`.streamlit/secrets.toml`).
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import sys
import tomllib
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from dotenv import dotenv_values

from .errors import ConfigError

SOURCE_ARGUMENT = "argument"
SOURCE_ENVIRONMENT = "environment"
SOURCE_DEFAULT = "default"

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


@dataclass(frozen=True)
class _Spec:
    key: str  # the name users write, as in the original sample's local.settings.json
    secret: bool = False
    default: str | None = None
    help: str = ""


# Attribute name -> where it is read from. The first nine are the original Azure Function's names.
_SPECS: dict[str, _Spec] = {
    "azure_client_id": _Spec("AZURE_CLIENT_ID", help="service principal of the MM deployment"),
    "azure_client_secret": _Spec("AZURE_CLIENT_SECRET", secret=True, help="its client secret"),
    "azure_tenant_id": _Spec("AZURE_TENANT_ID", help="its tenant"),
    "mm_server_url": _Spec("mm_server_url", help="the Model Management server, https://..."),
    "mm_storage_account": _Spec("mm_storage_account", help="the MM storage account name"),
    "mm_telemetry_storage_container": _Spec(
        "mm_telemetry_storage_container", default="data", help="the container devices upload to"
    ),
    "custom_vision_endpoint": _Spec("custom_vision_endpoint", help="https://<resource>.cognitiveservices.azure.com/"),
    "custom_vision_training_key": _Spec("custom_vision_training_key", secret=True, help="Custom Vision training key"),
    "custom_vision_project_id": _Spec("custom_vision_project_id", help="the target project's GUID"),
    # Additions of Percept Curator.
    "mm_storage_connection_string": _Spec(
        "mm_storage_connection_string", secret=True, help="a storage connection string instead of Entra ID (Azurite)"
    ),
    "mm_bootstrap_secret": _Spec(
        "mm_bootstrap_secret", secret=True, help="the MM login secret itself, skipping Key Vault (local emulator)"
    ),
    "mm_key_vault_url": _Spec(
        "mm_key_vault_url", help="Key Vault URL instead of https://<bootstrap kv>.vault.azure.net (sovereign clouds)"
    ),
    "custom_vision_tier": _Spec(
        "custom_vision_tier", default="S0", help="the Custom Vision pricing tier, F0 or S0 (image quota)"
    ),
    "custom_vision_rate_per_second": _Spec(
        "custom_vision_rate_per_second", default="10", help="calls per second the training key may make (tier)"
    ),
    "ledger_path": _Spec(
        "percept_ledger_path", help="the review ledger (SQLite); default ~/.percept-curator/ledger.sqlite"
    ),
    "ledger_table_endpoint": _Spec(
        "percept_ledger_table_endpoint",
        help="a ledger shared by every host: https://<account>.table.core.windows.net (Table Storage or Cosmos DB "
        "for Table), reached with Entra ID (role Storage Table Data Contributor)",
    ),
    "ledger_table_connection_string": _Spec(
        "percept_ledger_table_connection_string",
        secret=True,
        help="the shared ledger's storage connection string instead of Entra ID (Azurite)",
    ),
    "ledger_table_prefix": _Spec(
        "percept_ledger_table_prefix", default="percept", help="the shared ledger's table names start with this"
    ),
    "allow_insecure_http": _Spec(
        "percept_allow_insecure_http", default="false", help="allow http:// endpoints that are not on this machine"
    ),
    "reviewers": _Spec("percept_reviewers", help="comma-separated e-mails allowed to sign in to a shared app"),
    "near_duplicate_distance": _Spec(
        "percept_near_duplicate_distance", default="6", help="perceptual-hash distance under which frames are bursts"
    ),
    "max_blob_bytes": _Spec(
        "percept_max_blob_bytes",
        default="33554432",
        help="blobs larger than this many bytes (default 32 MiB) are refused before they are downloaded",
    ),
    # 10:1: Custom Vision's guidance aims at 2:1 at most between the tags with the most and the fewest images and
    # calls 500 against 50 imbalanced. Frames from devices are skewed by nature, so a 2:1 warning would come with
    # nearly every push and be ignored; 10:1 speaks up where the model's training suffers for it.
    "max_class_imbalance": _Spec(
        "percept_max_class_imbalance",
        default="10",
        help="the Review page warns when a push takes the most-tagged tag past this many times the least-tagged",
    ),
}

# The names users write the settings by (environment, .env, local.settings.json, Streamlit secrets).
SETTING_NAMES: frozenset[str] = frozenset(spec.key for spec in _SPECS.values())


def _redact(value: str | None) -> str:
    return "<unset>" if not value else "***"


@dataclass(frozen=True)
class Settings:
    """Where Percept Curator's services are and how to reach them. `repr` never shows a secret."""

    azure_client_id: str | None = None
    azure_client_secret: str | None = field(default=None, repr=False)
    azure_tenant_id: str | None = None
    mm_server_url: str | None = None
    mm_storage_account: str | None = None
    mm_telemetry_storage_container: str = "data"
    custom_vision_endpoint: str | None = None
    custom_vision_training_key: str | None = field(default=None, repr=False)
    custom_vision_project_id: str | None = None
    mm_storage_connection_string: str | None = field(default=None, repr=False)
    mm_bootstrap_secret: str | None = field(default=None, repr=False)
    mm_key_vault_url: str | None = None
    custom_vision_tier: str = "S0"
    custom_vision_rate_per_second: float = 10.0
    ledger_path: str | None = None
    ledger_table_endpoint: str | None = None
    ledger_table_connection_string: str | None = field(default=None, repr=False)
    ledger_table_prefix: str = "percept"
    allow_insecure_http: bool = False
    reviewers: tuple[str, ...] = ()
    near_duplicate_distance: int = 6
    max_blob_bytes: int = 32 * 1024 * 1024
    max_class_imbalance: float = 10.0
    sources: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        for url_attr in ("mm_server_url", "custom_vision_endpoint", "mm_key_vault_url", "ledger_table_endpoint"):
            value = getattr(self, url_attr)
            if value:
                _check_url(_SPECS[url_attr].key, value, self.allow_insecure_http, self.sources.get(url_attr))
        self._check_ledger_choice()
        if self.custom_vision_project_id:
            try:
                uuid.UUID(self.custom_vision_project_id)
            except ValueError:
                source = self.sources.get("custom_vision_project_id", SOURCE_ARGUMENT)
                raise ConfigError(
                    f"Setting custom_vision_project_id is not a GUID (from {source}).",
                    hint="Copy the project id from the Custom Vision portal's project settings.",
                ) from None
        if self.custom_vision_tier not in ("F0", "S0"):
            raise ConfigError(f"Setting custom_vision_tier must be F0 or S0, not {self.custom_vision_tier!r}.")
        if self.custom_vision_rate_per_second <= 0:
            raise ConfigError("Setting custom_vision_rate_per_second must be a positive number.")
        if self.max_blob_bytes <= 0:
            raise ConfigError("Setting percept_max_blob_bytes must be a positive number of bytes.")
        if not self.max_class_imbalance >= 1:  # a ratio of the most-tagged tag to the least: below 1 means nothing
            raise ConfigError("Setting percept_max_class_imbalance must be a ratio of 1 or more (10 means 10:1).")

    def __repr__(self) -> str:
        parts = []
        for f in fields(self):
            if f.name == "sources":
                continue
            value = getattr(self, f.name)
            shown = _redact(value) if _SPECS[f.name].secret else repr(value)
            parts.append(f"{f.name}={shown}")
        return f"Settings({', '.join(parts)})"

    __str__ = __repr__

    # -- loading ------------------------------------------------------------------------------

    @classmethod
    def load(
        cls,
        *,
        env_file: str | os.PathLike | None = ".env",
        local_settings_file: str | os.PathLike | None = "local.settings.json",
        secrets_files: tuple[str | os.PathLike, ...] | None = None,
        environ: Mapping[str, str] | None = None,
        **overrides: Any,
    ) -> Settings:
        """Read every setting from the sources, highest first; `overrides` are explicit arguments."""
        layers = _layers(env_file, local_settings_file, secrets_files, os.environ if environ is None else environ)
        unknown = [k for k in overrides if k not in _SPECS and not _spec_for_key(k)]
        if unknown:
            raise ConfigError(f"Unknown setting(s): {', '.join(sorted(unknown))}.")
        values: dict[str, Any] = {}
        sources: dict[str, str] = {}
        for attr, spec in _SPECS.items():
            explicit = overrides.get(attr, overrides.get(spec.key))
            if explicit is not None:
                raw, source = explicit, SOURCE_ARGUMENT
            else:
                raw, source = None, None
                for layer_name, layer in layers:
                    found = _lookup(layer, spec.key)
                    if found not in (None, ""):
                        raw, source = found, layer_name
                        break
            if raw is None and spec.default is not None:
                raw, source = spec.default, SOURCE_DEFAULT
            if raw is None:
                continue
            values[attr] = _convert(attr, raw, source)
            sources[attr] = source
        return cls(**values, sources=sources)

    def _check_ledger_choice(self) -> None:
        """One ledger: a file on this machine, or tables shared by every host; never a guess between them."""
        chosen = [
            _SPECS[attr].key
            for attr in ("ledger_path", "ledger_table_endpoint", "ledger_table_connection_string")
            if getattr(self, attr)
        ]
        if len(chosen) > 1:
            raise ConfigError(
                f"Settings {' and '.join(chosen)} each choose a ledger: set one of them.",
                hint="percept_ledger_path is one machine's ledger; the table settings are the shared one.",
            )
        # Table names: 3-63 letters and digits, starting with a letter; the longest table is <prefix>pushes.
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9]{0,56}", self.ledger_table_prefix):
            raise ConfigError(
                "Setting percept_ledger_table_prefix must be a letter then up to 56 letters or digits "
                f"(from {self.sources.get('ledger_table_prefix', SOURCE_ARGUMENT)}).",
                hint="Table Storage names hold letters and digits only.",
            )

    @property
    def uses_shared_ledger(self) -> bool:
        """True when the ledger is on Table Storage, shared by every host that reaches it."""
        return bool(self.ledger_table_endpoint or self.ledger_table_connection_string)

    # -- use ------------------------------------------------------------------------------------

    def require(self, *attrs: str) -> None:
        """Raise ConfigError naming every setting of `attrs` that is missing."""
        missing = [_SPECS[a].key for a in attrs if not getattr(self, a)]
        if missing:
            raise ConfigError(
                f"Missing setting(s): {', '.join(missing)}.",
                hint="Looked in: explicit arguments, the environment, .env, local.settings.json (Values) "
                "and Streamlit secrets. Set them in one of these (for the local stack: `make devstack`, "
                "then `set -a; . .devstack/env; set +a`).",
            )

    def source_of(self, attr: str) -> str:
        return self.sources.get(attr, "unset")

    def describe(self) -> list[dict[str, str]]:
        """Each setting, its value (secrets redacted) and where it came from, for a connections page."""
        rows = []
        for attr, spec in _SPECS.items():
            value = getattr(self, attr)
            if spec.secret:
                shown = _redact(value)
            elif isinstance(value, tuple):
                shown = ", ".join(value) or "<unset>"
            else:
                shown = "<unset>" if value in (None, "") else str(value)
            rows.append({"setting": spec.key, "value": shown, "source": self.source_of(attr), "meaning": spec.help})
        return rows

    @property
    def storage_account_url(self) -> str | None:
        if not self.mm_storage_account:
            return None
        return f"https://{self.mm_storage_account}.blob.core.windows.net"

    def credential(self):
        """An Entra ID credential: the service principal when all three AZURE_* are set, else the default chain."""
        from azure.identity import ClientSecretCredential, DefaultAzureCredential

        if self.azure_client_id and self.azure_client_secret and self.azure_tenant_id:
            return ClientSecretCredential(self.azure_tenant_id, self.azure_client_id, self.azure_client_secret)
        return DefaultAzureCredential()

    def secret_values(self) -> list[str]:
        """The secret settings' values, for scrubbing logs and checking that none leaks."""
        return [v for a, s in _SPECS.items() if s.secret and (v := getattr(self, a))]


# -- helpers -----------------------------------------------------------------------------------


def _spec_for_key(key: str) -> str | None:
    for attr, spec in _SPECS.items():
        if spec.key.lower() == key.lower():
            return attr
    return None


def _lookup(layer: Mapping[str, Any], key: str) -> Any:
    if key in layer:
        return layer[key]
    lowered = key.lower()
    for name, value in layer.items():
        if name.lower() == lowered:
            return value
    return None


def _layers(env_file, local_settings_file, secrets_files, environ) -> list[tuple[str, Mapping[str, Any]]]:
    layers: list[tuple[str, Mapping[str, Any]]] = [(SOURCE_ENVIRONMENT, environ)]
    if env_file and Path(env_file).is_file():
        layers.append((f".env ({env_file})", {k: v for k, v in dotenv_values(env_file).items() if v is not None}))
    if local_settings_file and Path(local_settings_file).is_file():
        layers.append((f"local.settings.json ({local_settings_file})", _read_local_settings(Path(local_settings_file))))
    layers.append(("Streamlit secrets", _read_streamlit_secrets(secrets_files)))
    return layers


def read_setting(
    attr: str,
    *,
    environ: Mapping[str, str],
    secrets: Mapping[str, Any],
    env_file: str | os.PathLike | None = ".env",
    local_settings_file: str | os.PathLike | None = "local.settings.json",
) -> Any:
    """One setting as its sources say now, in Settings.load's order (the environment, .env,
    local.settings.json, then `secrets`, Streamlit's as read afresh): for a value that must not wait for the
    next full load, such as who may sign in. None when no source sets it."""
    spec = _SPECS[attr]
    layers = [*_layers(env_file, local_settings_file, (), environ)[:-1], ("Streamlit secrets", secrets)]
    for source, layer in layers:
        raw = _lookup(layer, spec.key)
        if raw not in (None, ""):
            return _convert(attr, raw, source)
    return None


def _read_local_settings(path: Path) -> Mapping[str, Any]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path} is not valid JSON: {exc.__class__.__name__}.") from None
    values = document.get("Values") if isinstance(document, dict) else None
    if not isinstance(values, dict):
        raise ConfigError(f'{path} has no "Values" object, as an Azure Functions local.settings.json does.')
    return values


def _read_streamlit_secrets(secrets_files) -> Mapping[str, Any]:
    # Inside a running Streamlit app, st.secrets knows where the secrets are (including hosted ones).
    st = sys.modules.get("streamlit")
    if st is not None and secrets_files is None:
        try:
            if st.runtime.exists():
                return {k: v for k, v in st.secrets.to_dict().items() if not isinstance(v, dict)}
        except Exception:  # noqa: S110 - no secrets file is a normal case
            pass
    merged: dict[str, Any] = {}
    candidates = (
        secrets_files
        if secrets_files is not None
        else (
            Path.home() / ".streamlit" / "secrets.toml",
            Path.cwd() / ".streamlit" / "secrets.toml",
        )
    )
    for candidate in candidates:  # later files win, as in Streamlit
        path = Path(candidate)
        if path.is_file():
            try:
                document = tomllib.loads(path.read_text(encoding="utf-8"))
            except tomllib.TOMLDecodeError as exc:
                raise ConfigError(f"{path} is not valid TOML: {exc}.") from None
            merged.update({k: v for k, v in document.items() if not isinstance(v, dict)})
    return merged


def _convert(attr: str, raw: Any, source: str | None) -> Any:
    key = _SPECS[attr].key
    if attr == "allow_insecure_http":
        text = str(raw).strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise ConfigError(f"Setting {key} must be true or false (from {source}).")
    if attr == "reviewers":
        items = raw if isinstance(raw, list | tuple) else re.split(r"[,;\s]+", str(raw))
        return tuple(sorted({str(i).strip().lower() for i in items if str(i).strip()}))
    if attr in ("custom_vision_rate_per_second", "near_duplicate_distance", "max_blob_bytes", "max_class_imbalance"):
        try:
            return float(raw) if attr in ("custom_vision_rate_per_second", "max_class_imbalance") else int(raw)
        except (TypeError, ValueError):
            raise ConfigError(f"Setting {key} must be a number (from {source}).") from None
    if not isinstance(raw, str):
        raise ConfigError(f"Setting {key} must be text (from {source}).")
    return raw.strip().upper() if attr == "custom_vision_tier" else raw.strip()


def is_loopback_host(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_url(key: str, value: str, allow_insecure_http: bool, source: str | None) -> None:
    where = f" (from {source})" if source else ""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"Setting {key} is not an http(s) URL{where}.",
            hint="Write it as https://host[:port], for example https://my-mm.westus2.cloudapp.azure.com.",
        )
    if parts.scheme == "http" and not allow_insecure_http and not is_loopback_host(parts.hostname):
        raise ConfigError(
            f"Setting {key} uses plain http:// to {parts.hostname}, which is not this machine{where}.",
            hint="Use https://, or set percept_allow_insecure_http=true if you really mean it.",
        )
