"""The MM key service client, the per-version key cache, and the sczpy 0.0.8 file format, in memory.

Format (encrypt-then-MAC):
    [0, 32)   HMAC-SHA256 over bytes [32, end)
    [32, 40)  plaintext length, uint64 little-endian
    [40, 56)  IV
    [56, end) AES-256-CBC; only a final block that is not a multiple of 16 is padded (PKCS#7 style)
Keys: PBKDF2-HMAC-SHA512(key text, "Microsoft Santa Cruz Secure AI Lifecycle", 100,000 rounds, 64 bytes):
the first 32 bytes encrypt, the last 32 authenticate. Derivation costs ~0.1 s, so it runs once per
model version and the derived keys are cached in memory.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

import requests
from azure.core.exceptions import AzureError
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from .errors import (
    AuthenticationError,
    AzureCall,
    CuratorError,
    IntegrityError,
    InvalidMetadataError,
    ServiceError,
    UnknownModelVersionError,
    from_azure,
    from_requests,
)
from .names import shown, validate_model

SALT = b"Microsoft Santa Cruz Secure AI Lifecycle"
ROUNDS = 100_000
TAG_SIZE = 32
HEADER_SIZE = TAG_SIZE + 8 + 16  # tag, length, IV
_LENGTH = struct.Struct("<Q")
# What a key from `/api/v1/keys` may look like: an opaque printable ASCII string of plausible length.
MIN_KEY_BYTES = 8
MAX_KEY_BYTES = 1024
KEY_CONTENT_TYPE = "text/plain"


@dataclass(frozen=True)
class DerivedKey:
    """The AES and HMAC keys of one model version. Never printed."""

    encryption: bytes = field(repr=False)
    authentication: bytes = field(repr=False)

    def __repr__(self) -> str:
        return "DerivedKey(<redacted>)"


KeyMaterial = str | bytes | DerivedKey


def derive_key(key_text: str | bytes) -> DerivedKey:
    """PBKDF2 as sczpy does it; `key_text` is the MM server's key, used verbatim."""
    if isinstance(key_text, str):
        # sczpy hands the text to PyCryptodome, which encodes it as latin-1.
        try:
            password = key_text.encode("latin-1")
        except UnicodeEncodeError:
            password = key_text.encode("utf-8")
    else:
        password = bytes(key_text)
    material = hashlib.pbkdf2_hmac("sha512", password, SALT, ROUNDS, 64)
    return DerivedKey(material[:32], material[32:])


def _as_derived(key: KeyMaterial) -> DerivedKey:
    return key if isinstance(key, DerivedKey) else derive_key(key)


def encrypt_bytes(plaintext: bytes, key: KeyMaterial, *, iv: bytes | None = None) -> bytes:
    """Encrypt like a Percept device (sczpy 0.0.8): the result decrypts with sczpy and `decrypt_bytes`."""
    derived = _as_derived(key)
    iv = os.urandom(16) if iv is None else iv
    if len(iv) != 16:
        raise ValueError("the IV must be 16 bytes")
    remainder = len(plaintext) % 16
    padded = plaintext + bytes([16 - remainder]) * (16 - remainder) if remainder else plaintext
    encryptor = Cipher(algorithms.AES(derived.encryption), modes.CBC(iv)).encryptor()
    body = _LENGTH.pack(len(plaintext)) + iv + encryptor.update(padded) + encryptor.finalize()
    return hmac.digest(derived.authentication, body, "sha256") + body


def decrypt_bytes(ciphertext: bytes, key: KeyMaterial, *, blob_name: str | None = None) -> bytes:
    """Verify the HMAC (constant time) and decrypt; raise IntegrityError and return nothing otherwise."""
    derived = _as_derived(key)
    what = f"Blob {blob_name!r}" if blob_name else "The encrypted data"
    if len(ciphertext) < HEADER_SIZE:
        raise IntegrityError(
            f"{what} is truncated: {len(ciphertext)} bytes, shorter than the 56-byte header.",
            blob_name=blob_name,
            hint="The upload was cut short; ask the device to upload the frame again.",
        )
    view = memoryview(ciphertext)
    expected = hmac.digest(derived.authentication, view[TAG_SIZE:], "sha256")
    if not hmac.compare_digest(expected, view[:TAG_SIZE]):
        raise IntegrityError(
            f"{what} failed its integrity check (HMAC mismatch): it was tampered with, truncated, or "
            "encrypted with another model version's key.",
            blob_name=blob_name,
            hint="Check the blob's model_name/model_version metadata (the MM server may not know that model "
            "version: some servers answer an unknown version with a 200 text that is no key); otherwise reject "
            "the blob.",
        )
    (length,) = _LENGTH.unpack_from(view, TAG_SIZE)
    body = view[HEADER_SIZE:]
    if len(body) % 16 or len(body) != -(-length // 16) * 16:
        # Authentic but malformed: only a broken encoder produces this.
        raise IntegrityError(
            f"{what} has a valid HMAC but an inconsistent length header ({length} bytes for "
            f"{len(body)} bytes of ciphertext).",
            blob_name=blob_name,
        )
    decryptor = Cipher(
        algorithms.AES(derived.encryption), modes.CBC(bytes(view[TAG_SIZE + 8 : HEADER_SIZE]))
    ).decryptor()
    plaintext = decryptor.update(body) + decryptor.finalize()
    return plaintext if len(plaintext) == length else plaintext[:length]


# -- the MM server -------------------------------------------------------------------------------


@dataclass(frozen=True)
class BootstrapInfo:
    """What `/api/v1/bootstrap` answers: the Key Vault and the secret that logs us in."""

    key_vault: str
    secret_name: str


class KeyServiceClient:
    """Client of the Percept Model Management server (`mm_server_url`).

    Logs in with the bootstrap secret (from Key Vault through `credential`, or given directly for the
    local emulator), keeps the bearer token, logs in again when it expires, and checks every status:
    an error body never becomes a key.
    """

    def __init__(
        self,
        endpoint: str,
        *,
        credential: Any = None,
        bootstrap_secret: str | None = None,
        key_vault_url: str | None = None,
        connection_verify: bool | str = True,
        timeout: tuple[float, float] = (5.0, 30.0),
        retries: int = 3,
        pool_size: int = 16,
        secret_client_kwargs: dict[str, Any] | None = None,
    ) -> None:
        if connection_verify is False:
            raise ValueError("TLS verification cannot be turned off; pass a CA bundle path instead.")
        self.endpoint = endpoint.rstrip("/")
        self._credential = credential
        self._bootstrap_secret = bootstrap_secret
        self._key_vault_url = key_vault_url
        self._verify = connection_verify
        self._timeout = timeout
        self._secret_client_kwargs = secret_client_kwargs or {}
        self._token: str | None = None
        self._login_lock = threading.Lock()
        self._session = requests.Session()
        retry = Retry(
            total=retries,
            connect=retries,
            read=retries,
            status=retries,
            backoff_factor=0.3,
            backoff_jitter=0.2,
            status_forcelist=(500, 502, 503, 504),
            allowed_methods=frozenset({"GET", "POST"}),
            raise_on_status=False,
            respect_retry_after_header=True,
        )
        adapter = HTTPAdapter(max_retries=retry, pool_connections=pool_size, pool_maxsize=pool_size)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)

    def __repr__(self) -> str:
        return f"KeyServiceClient({self.endpoint!r})"

    def close(self) -> None:
        self._session.close()

    # -- protocol ---------------------------------------------------------------------------------

    def bootstrap(self) -> BootstrapInfo:
        response = self._request("GET", "/api/v1/bootstrap", authenticated=False)
        try:
            document = response.json()
            return BootstrapInfo(str(document["kv"]), str(document["key"]))
        except (ValueError, KeyError, TypeError):
            raise ServiceError(
                f"The MM server at {self.endpoint} answered /api/v1/bootstrap without a vault and secret name.",
                hint="Check mm_server_url: it must point at the Model Management server.",
            ) from None

    def login(self) -> None:
        """Exchange the bootstrap secret for a bearer token."""
        secret = self._resolve_bootstrap_secret()
        response = self._request(
            "POST", "/api/v1/login", authenticated=False, json={"CLIENT_SECRET": secret, "CLIENT_ID": "TBD"}
        )
        try:
            token = response.json()["access_token"]
        except (ValueError, KeyError, TypeError):
            token = None
        if not isinstance(token, str) or not token:
            raise ServiceError(f"The MM server at {self.endpoint} answered /api/v1/login without an access token.")
        self._token = token

    def get_key(self, model_name: str, model_version: str) -> bytes:
        """The key text of a model version, as raw bytes (sczpy uses it verbatim); only a plausible key is returned."""
        path = self._model_path("keys", model_name, model_version)
        # Streamed, so that a wrong endpoint's large answer is never read whole.
        with self._request("GET", path, not_found=(model_name, model_version), stream=True) as response:
            problem = _key_response_problem(response)
            body = b""
            if problem is None:
                body = _read_at_most(response, MAX_KEY_BYTES + 1)
                problem = _key_body_problem(body)
        if problem is not None:
            # The body is never shown: it could be a key, a token or a secret of whatever answered.
            raise ServiceError(
                f"The MM server's answer to GET {path} is not a key for model {model_name!r} version "
                f"{model_version!r}: {problem}.",
                hint="Check mm_server_url: it must point at the Model Management server itself, not a proxy's or "
                "a login page's answer.",
                status=response.status_code,
            )
        return body

    def register_model(self, model_name: str, model_version: str) -> str:
        return self._request("POST", self._model_path("registry", model_name, model_version)).text

    def upload_data(
        self, model_name: str, model_version: str, filename: str, data: bytes, attributes: dict[str, Any]
    ) -> str:
        """Upload an encrypted frame as a device does: form fields, then the `file` part."""
        path = self._model_path("data", model_name, model_version)
        fields = {k: str(v) for k, v in attributes.items()}
        return self._request("POST", path, data=fields, files={"file": (filename, data)}).text

    def upload_model(self, model_name: str, model_version: str, filename: str, data: bytes) -> str:
        path = self._model_path("models", model_name, model_version)
        return self._request("POST", path, files={"file": (filename, data)}).text

    def download_model(self, model_name: str, model_version: str) -> bytes:
        path = self._model_path("models", model_name, model_version)
        return self._request("GET", path, not_found=(model_name, model_version)).content

    def _model_path(self, resource: str, model_name: str, model_version: str) -> str:
        """`/api/v1/{resource}/{model}/{version}` for valid names only, proven to reach the server as built."""
        segments = ["api", "v1", resource, *validate_model(model_name, model_version)]
        path = "/" + "/".join(quote(segment, safe="") for segment in segments)
        # Validation already rules out dot segments and separators; this proves it for the URL actually sent,
        # after requests/urllib3 normalise it, so no later change to the rule can reopen the hole.
        base = urlsplit(requests.Request("GET", self.endpoint + "/").prepare().url or "").path.rstrip("/")
        sent = urlsplit(requests.Request("GET", self.endpoint + path).prepare().url or "")
        if sent.path != base + path or sent.path.split("/")[-len(segments) :] != segments or sent.query:
            raise InvalidMetadataError(
                f"Model {shown(model_name)} version {shown(model_version)} would not reach {path} as built.",
                hint="Reject the blob; its metadata was not written by a Percept device.",
            )
        return path

    # -- plumbing ---------------------------------------------------------------------------------

    def _resolve_bootstrap_secret(self) -> str:
        if self._bootstrap_secret:
            return self._bootstrap_secret
        from azure.keyvault.secrets import SecretClient

        info = self.bootstrap()
        vault_url = self._key_vault_url or f"https://{info.key_vault}.vault.azure.net"
        credential = self._credential
        if credential is None:
            from azure.identity import DefaultAzureCredential

            credential = DefaultAzureCredential()
        kwargs = {"retry_connect": 1, **self._secret_client_kwargs}
        if isinstance(self._verify, str):
            kwargs.setdefault("connection_verify", self._verify)
        failure: CuratorError | None = None
        value = None
        try:
            with SecretClient(vault_url, credential, **kwargs) as client:
                value = client.get_secret(info.secret_name).value
        except AzureError as exc:
            call = AzureCall(
                f"Key Vault {vault_url}",
                f"give the MM bootstrap secret {info.secret_name!r}",
                hint="Check the network and the vault name.",
                refused_hint="Sign in (az login, or set AZURE_CLIENT_ID/AZURE_CLIENT_SECRET/AZURE_TENANT_ID) with an "
                "identity that may get secrets in that vault.",
                not_found=ServiceError(
                    f"Key Vault {vault_url} has no secret named {info.secret_name!r} (the name MM's bootstrap gave).",
                    hint="Check that mm_server_url and the vault belong to the same MM deployment.",
                ),
            )
            failure = from_azure(exc, call)
        if failure is not None:
            # Raised outside the except block: the SDK's exception (request, token, socket) is not kept alive.
            raise failure
        if not value:
            raise AuthenticationError(f"Key Vault secret {info.secret_name!r} in {vault_url} is empty.")
        return value

    def _ensure_token(self, stale: str | None = None) -> str:
        with self._login_lock:
            if self._token is None or self._token == stale:
                self.login()
            assert self._token is not None
            return self._token

    def _request(
        self,
        method: str,
        path: str,
        *,
        authenticated: bool = True,
        not_found: tuple[str, str] | None = None,
        **kwargs: Any,
    ) -> requests.Response:
        url = self.endpoint + path
        for attempt in range(2):
            headers = {}
            token = None
            if authenticated:
                token = self._ensure_token()
                headers["Authorization"] = f"Bearer {token}"
            try:
                response = self._session.request(
                    method, url, headers=headers, timeout=self._timeout, verify=self._verify, **kwargs
                )
            except requests.RequestException as exc:
                raise from_requests(
                    exc, f"the MM server at {self.endpoint}", hint="Check mm_server_url and that the server is running."
                ) from None
            if response.status_code in (401, 403) and authenticated and attempt == 0:
                # The bearer token expired: log in again, once. Servers answer an expired token with 401 or
                # with 403 (issue 18); a second refusal, with a fresh token, is an AuthenticationError below.
                response.close()
                with self._login_lock:
                    if self._token == token:
                        self._token = None
                continue
            break
        if not 200 <= response.status_code < 300:
            response.close()  # a streamed error answer is not read: give the connection back
        if response.status_code == 404 and not_found is not None:
            model_name, model_version = not_found
            raise UnknownModelVersionError(
                f"The MM server has no key for model {model_name!r} version {model_version!r}.",
                hint="The model version was never registered with this MM server, or the blob's metadata is wrong.",
            )
        if response.status_code in (401, 403):
            raise AuthenticationError(
                f"The MM server refused {method} {path} ({response.status_code}).",
                hint="Check the bootstrap secret (Key Vault access) and that the MM server is the right one.",
                status=response.status_code,
            )
        if not 200 <= response.status_code < 300:
            raise ServiceError(
                f"The MM server answered {method} {path} with {response.status_code}.",
                hint="Try again later; if it persists, check the MM server's health.",
                status=response.status_code,
            )
        return response


def _key_response_problem(response: requests.Response) -> str | None:
    """Why the status or content type of an answer from `/api/v1/keys` says it is not a key, or None."""
    if response.status_code != 200:
        return f"status {response.status_code}, not 200"
    content_type = response.headers.get("Content-Type", "")
    media_type = content_type.split(";", 1)[0].strip().lower()
    # Only text/plain, as the MM server answers: application/octet-stream is what /api/v1/models answers
    # (an encrypted model), exactly the kind of other endpoint whose bytes must never become a key.
    if media_type != KEY_CONTENT_TYPE:
        return f"content type {shown(content_type) if content_type else 'missing'}, not {KEY_CONTENT_TYPE}"
    return None


def _key_body_problem(body: bytes) -> str | None:
    """Why a key body is not a plausible key (its length, its bytes), or None; never quotes the body."""
    if len(body) > MAX_KEY_BYTES:
        return f"more than {MAX_KEY_BYTES} bytes"
    if len(body) < MIN_KEY_BYTES:
        return f"{len(body)} bytes, fewer than {MIN_KEY_BYTES}"
    if not all(0x20 <= byte <= 0x7E for byte in body):
        return "it contains bytes that are not printable ASCII"
    return None


def _read_at_most(response: requests.Response, limit: int) -> bytes:
    body = bytearray()
    for chunk in response.iter_content(chunk_size=limit):
        body += chunk
        if len(body) >= limit:
            break
    return bytes(body[:limit])


# -- the key cache ---------------------------------------------------------------------------------


def _naming(error: CuratorError, blob_name: str | None) -> CuratorError:
    """A blob's own fault (an unknown model version) named after the blob it stopped; a remembered failure is
    shared by every blob of its version, so each gets a copy of its own."""
    if not isinstance(error, UnknownModelVersionError) or not blob_name or error.blob_name:
        return error
    return UnknownModelVersionError(f"Blob {blob_name!r}: {error.message}", blob_name=blob_name, hint=error.hint)


class Locker:
    """Keys per (model name, version), fetched and derived once, shared by every thread; decryption.

    A failed fetch is remembered for `failure_ttl` seconds, so a thousand blobs of a version whose key
    the MM server cannot give right now fail fast instead of hammering it.
    """

    def __init__(self, client: KeyServiceClient, *, failure_ttl: float = 5.0) -> None:
        self.client = client
        self.failure_ttl = failure_ttl
        self._keys: dict[tuple[str, str], DerivedKey] = {}
        self._failures: dict[tuple[str, str], tuple[float, CuratorError]] = {}
        self._locks: dict[tuple[str, str], threading.Lock] = {}
        self._guard = threading.Lock()
        self.fetches = 0  # how many keys were fetched and derived (tests and benchmarks read it)
        self.decryptions = 0  # how many blobs were decrypted (the app's caching is checked with it)

    def key_for(self, model_name: str, model_version: str, *, blob_name: str | None = None) -> DerivedKey:
        """The derived key of a model version; InvalidMetadataError, before any request, for an invalid name."""
        # Validated before the cache and the request: every caller (app, pipeline, CLI, Function, notebooks)
        # gets here, and metadata must not pick the endpoint that supplies a key.
        ident = validate_model(model_name, model_version, blob_name=blob_name)
        cached = self._keys.get(ident)
        if cached is not None:
            return cached
        with self._guard:
            lock = self._locks.setdefault(ident, threading.Lock())
        with lock:  # one fetch and one PBKDF2 per version, even when many threads ask at once
            cached = self._keys.get(ident)
            if cached is not None:
                return cached
            failed = self._failures.get(ident)
            if failed is not None and failed[0] > time.monotonic():
                raise _naming(failed[1], blob_name)
            try:
                key_text = self.client.get_key(*ident)
            except CuratorError as exc:
                self._failures[ident] = (time.monotonic() + self.failure_ttl, exc)
                raise _naming(exc, blob_name) from None
            cached = derive_key(key_text)
            self._keys[ident] = cached
            self._failures.pop(ident, None)
            self.fetches += 1
        return cached

    def decrypt(self, ciphertext: bytes, model_name: str, model_version: str, *, blob_name: str | None = None) -> bytes:
        key = self.key_for(model_name, model_version, blob_name=blob_name)
        with self._guard:
            self.decryptions += 1
        return decrypt_bytes(ciphertext, key, blob_name=blob_name)

    def forget(self) -> None:
        """Drop every cached key and remembered failure (after a key rotation or an outage)."""
        with self._guard:
            self._keys.clear()
            self._failures.clear()
