"""A local HTTPS stand-in of Azure Key Vault (secrets, GET only), its throwaway PKI, and a fixed-token credential.

The stand-in speaks Key Vault's challenge protocol as `azure.keyvault.secrets.SecretClient` expects it:
a request without a bearer token is answered 401 with
`WWW-Authenticate: Bearer authorization="https://login.microsoftonline.com/<tenant>", resource="https://vault.azure.net"`;
the client then asks its credential for a token (scope `https://vault.azure.net/.default`, the challenge's tenant)
and repeats the request with it. `GET /secrets/{name}/{version}?api-version=...` answers a secret bundle
(`value`, `id`, `attributes`); an unknown secret is 404 with Key Vault's `SecretNotFound` error body.

Every request the stand-in sees is recorded (`KeyVaultStandIn.requests`), so tests can check what really
reached the vault. TLS verification stays on everywhere: clients get the CA bundle path, never verify=False.
"""

from __future__ import annotations

import datetime as dt
import gc
import ipaddress
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from azure.core.credentials import AccessToken
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from devstack.servers import ServerHandle, serve_in_thread

KEY_VAULT_RESOURCE = "https://vault.azure.net"
KEY_VAULT_SCOPE = KEY_VAULT_RESOURCE + "/.default"
LOGIN_AUTHORITY = "https://login.microsoftonline.com"


# -- throwaway PKI ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServerTLSFiles:
    certfile: Path
    keyfile: Path


@dataclass
class CertificateAuthority:
    """A CA made for one test run: it signs server certificates for loopback addresses."""

    name: str
    key: ec.EllipticCurvePrivateKey = field(repr=False)
    certificate: x509.Certificate = field(repr=False)

    @classmethod
    def create(cls, name: str) -> CertificateAuthority:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = dt.datetime.now(dt.UTC)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(name, key, certificate)

    def write_bundle(self, path: Path) -> Path:
        """The CA certificate as a PEM bundle: what a client passes as `connection_verify`."""
        path.write_bytes(self.certificate.public_bytes(serialization.Encoding.PEM))
        return path

    def issue_server_certificate(self, directory: Path, host: str = "127.0.0.1") -> ServerTLSFiles:
        """A server certificate for `host` (IP SAN) and localhost, signed by this CA, with its key, as PEM files."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host)), x509.DNSName("localhost")]),
                critical=False,
            )
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        directory.mkdir(parents=True, exist_ok=True)
        stem = f"server-{uuid.uuid4().hex[:8]}"
        certfile = directory / f"{stem}.crt"
        keyfile = directory / f"{stem}.key"
        certfile.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        keyfile.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        keyfile.chmod(0o600)
        return ServerTLSFiles(certfile, keyfile)


# -- the credential -----------------------------------------------------------------------------------


class FixedTokenCredential:
    """A TokenCredential that returns one fixed bearer token and records what it was asked for."""

    def __init__(self, token: str) -> None:
        self._token = token
        self.requests: list[dict] = []

    def __repr__(self) -> str:
        return "FixedTokenCredential(<redacted>)"

    def get_token(
        self, *scopes: str, claims: str | None = None, tenant_id: str | None = None, enable_cae: bool = False, **kwargs
    ) -> AccessToken:
        self.requests.append({"scopes": scopes, "tenant_id": tenant_id, "claims": claims})
        return AccessToken(self._token, int(time.time()) + 3600)


# -- the vault ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    api_version: str | None
    authorization: str | None
    status: int


class KeyVaultStandIn:
    """Key Vault's secrets GET with the bearer challenge; `secrets` maps names to values."""

    def __init__(self, *, secrets: dict[str, str], accepted_token: str, tenant_id: str) -> None:
        self.secrets = dict(secrets)
        self.tenant_id = tenant_id
        self._accepted = f"Bearer {accepted_token}"
        self._versions = {name: uuid.uuid4().hex for name in self.secrets}
        self._lock = threading.Lock()
        self.requests: list[RecordedRequest] = []
        self.app = self._build_app()

    def __repr__(self) -> str:
        return f"KeyVaultStandIn(secrets={sorted(self.secrets)})"

    @property
    def challenge(self) -> str:
        return f'Bearer authorization="{LOGIN_AUTHORITY}/{self.tenant_id}", resource="{KEY_VAULT_RESOURCE}"'

    def _record(self, request: Request, status: int) -> None:
        with self._lock:
            self.requests.append(
                RecordedRequest(
                    request.method,
                    request.url.path,
                    request.query_params.get("api-version"),
                    request.headers.get("authorization"),
                    status,
                )
            )

    def _error(self, request: Request, status: int, code: str, message: str, *, challenge: bool = False):
        self._record(request, status)
        headers = {"WWW-Authenticate": self.challenge} if challenge else None
        return JSONResponse({"error": {"code": code, "message": message}}, status, headers=headers)

    def _build_app(self) -> FastAPI:
        app = FastAPI(title="Key Vault stand-in", docs_url=None, redoc_url=None, openapi_url=None)

        def get_secret(name: str, version: str, request: Request):
            authorization = request.headers.get("authorization")
            if authorization is None:
                return self._error(
                    request, 401, "Unauthorized", "AKV10000: Request is missing a Bearer or PoP token.", challenge=True
                )
            if authorization != self._accepted:
                return self._error(request, 401, "Unauthorized", "AKV10032: Invalid issuer.", challenge=True)
            if not request.query_params.get("api-version"):
                return self._error(request, 400, "BadParameter", "The api-version query parameter is missing.")
            if name not in self.secrets or (version and version != self._versions[name]):
                return self._error(
                    request,
                    404,
                    "SecretNotFound",
                    f"A secret with (name/id) {name} was not found in this key vault. If you recently deleted this "
                    "secret you may be able to recover it using the correct recovery command. For help resolving "
                    "this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182",
                )
            self._record(request, 200)
            now = int(time.time())
            base = str(request.base_url).rstrip("/")
            return JSONResponse(
                {
                    "value": self.secrets[name],
                    "id": f"{base}/secrets/{name}/{self._versions[name]}",
                    "attributes": {
                        "enabled": True,
                        "created": now - 86400,
                        "updated": now - 86400,
                        "recoveryLevel": "Recoverable+Purgeable",
                        "recoverableDays": 90,
                    },
                    "tags": {},
                }
            )

        @app.get("/secrets/{name}/")
        def latest(name: str, request: Request):
            return get_secret(name, "", request)

        @app.get("/secrets/{name}/{version}")
        def versioned(name: str, version: str, request: Request):
            return get_secret(name, version, request)

        return app


@contextmanager
def serve_key_vault(vault: KeyVaultStandIn, tls: ServerTLSFiles) -> Iterator[ServerHandle]:
    """Serve the stand-in over HTTPS on a free loopback port; the URL is `handle.url` (https://127.0.0.1:port)."""
    handle = serve_in_thread(vault.app, ssl_certfile=str(tls.certfile), ssl_keyfile=str(tls.keyfile))
    try:
        yield handle
    finally:
        # An azure-core error keeps its response, and so its TLS connection, alive while anything references it
        # (percept_core's errors keep it as __context__); uvicorn waits for open connections when it stops.
        # Tests drop their errors inside the block; collecting here frees what cycles still hold.
        gc.collect()
        handle.stop()
