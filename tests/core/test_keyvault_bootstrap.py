"""The MM bootstrap's Key Vault step through the real `azure.keyvault.secrets.SecretClient`, over TLS.

MM's `/api/v1/bootstrap` names a vault and a secret; the client reads that secret with its Azure credential
(Key Vault's bearer challenge flow) and logs in to MM with it. Here the vault is a local HTTPS stand-in
(tests/support/keyvault.py) with a throwaway CA; TLS verification stays on.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterator

import pytest
from azure.keyvault.secrets._shared import http_challenge_cache

from devstack.mm_server import MMEmulatorConfig, create_app
from devstack.servers import serve_in_thread
from percept_core import AuthenticationError, CuratorError, KeyServiceClient, ServiceError
from tests.support.keyvault import (
    KEY_VAULT_SCOPE,
    CertificateAuthority,
    FixedTokenCredential,
    KeyVaultStandIn,
    serve_key_vault,
)

SECRET_NAME = "percept-bootstrap-under-test"  # not sczpy's default name: the client must use what MM says
VAULT_NAME = "percept-test-kv"
TENANT = str(uuid.UUID(int=0xD5C0))
# Only the data upload touches storage, and these tests upload nothing.
UNUSED_STORAGE = (
    "DefaultEndpointsProtocol=http;AccountName=unused;AccountKey=dW51c2Vk;BlobEndpoint=http://127.0.0.1:9/x;"
)


@pytest.fixture(scope="module")
def mm():
    config = MMEmulatorConfig(
        storage_connection_string=UNUSED_STORAGE,
        key_vault_name=VAULT_NAME,
        secret_name=SECRET_NAME,
        bootstrap_secret=secrets.token_urlsafe(24),
    )
    handle = serve_in_thread(create_app(config))
    yield handle, config
    handle.stop()


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    directory = tmp_path_factory.mktemp("pki")
    trusted = CertificateAuthority.create("Percept Curator test CA")
    return {
        "dir": directory,
        "trusted": trusted,
        "bundle": trusted.write_bundle(directory / "ca-bundle.pem"),
        "server": trusted.issue_server_certificate(directory),
    }


@pytest.fixture(autouse=True)
def fresh_challenge_cache() -> Iterator[None]:
    # SecretClient caches Key Vault challenges per host:port for the whole process; each test starts clean.
    http_challenge_cache.clear()
    yield
    http_challenge_cache.clear()


def make_client(mm_url: str, vault_url: str, bundle, token: str) -> tuple[KeyServiceClient, FixedTokenCredential]:
    credential = FixedTokenCredential(token)
    client = KeyServiceClient(
        mm_url,
        credential=credential,
        key_vault_url=vault_url,
        connection_verify=str(bundle),
        # The stand-in lives at 127.0.0.1, not *.vault.azure.net.
        secret_client_kwargs={"verify_challenge_resource": False},
    )
    return client, credential


def login_failure(client: KeyServiceClient) -> dict:
    """Log in, expecting a CuratorError; return what a user sees of it (the error object itself is dropped, so
    the Key Vault connection azure-core's error keeps open is released before the stand-in stops)."""
    try:
        client.login()
    except CuratorError as exc:
        return {"type": type(exc), "message": str(exc), "repr": repr(exc), "status": getattr(exc, "status", None)}
    finally:
        client.close()
    pytest.fail("login succeeded")


def test_login_reads_the_secret_mm_names_through_key_vaults_challenge(mm, pki):
    handle, config = mm
    token = secrets.token_urlsafe(16)
    vault = KeyVaultStandIn(secrets={SECRET_NAME: config.bootstrap_secret}, accepted_token=token, tenant_id=TENANT)
    with serve_key_vault(vault, pki["server"]) as kv:
        client, credential = make_client(handle.url, kv.url, pki["bundle"], token)
        try:
            client.login()
            model = f"kv-{secrets.token_hex(4)}"
            assert "Registered" in client.register_model(model, "1")
            key = client.get_key(model, "1")
        finally:
            client.close()

    assert key == handle.server.config.app.state.mm.keys[f"{model}/1"].encode()
    # The challenge flow: one unauthenticated probe answered 401, then the same GET with our bearer token.
    assert [(r.status, r.authorization) for r in vault.requests] == [(401, None), (200, f"Bearer {token}")]
    assert {r.path for r in vault.requests} == {f"/secrets/{SECRET_NAME}/"}
    assert all(r.api_version for r in vault.requests)
    # The token was asked for Key Vault's scope in the tenant the challenge named.
    assert credential.requests and all(
        req["scopes"] == (KEY_VAULT_SCOPE,) and req["tenant_id"] == TENANT for req in credential.requests
    )


def test_wrong_secret_in_the_vault_is_an_authentication_error_that_hides_it(mm, pki):
    handle, config = mm
    token = secrets.token_urlsafe(16)
    wrong = "stale-" + secrets.token_urlsafe(24)
    vault = KeyVaultStandIn(secrets={SECRET_NAME: wrong}, accepted_token=token, tenant_id=TENANT)
    with serve_key_vault(vault, pki["server"]) as kv:
        client, _ = make_client(handle.url, kv.url, pki["bundle"], token)
        failure = login_failure(client)

    assert failure["type"] is AuthenticationError
    assert failure["status"] == 401
    assert "/api/v1/login" in failure["message"]
    for text in (failure["message"], failure["repr"], repr(client)):
        assert wrong not in text
        assert config.bootstrap_secret not in text
        assert token not in text
    assert vault.requests[-1].status == 200  # the vault did answer: it is MM that refused the secret


def test_secret_missing_from_the_vault_names_the_secret_and_vault(mm, pki):
    handle, _ = mm
    token = secrets.token_urlsafe(16)
    vault = KeyVaultStandIn(secrets={"some-other-secret": "x"}, accepted_token=token, tenant_id=TENANT)
    with serve_key_vault(vault, pki["server"]) as kv:
        client, _ = make_client(handle.url, kv.url, pki["bundle"], token)
        failure = login_failure(client)

    assert failure["type"] is ServiceError
    assert f"has no secret named {SECRET_NAME!r}" in failure["message"] and kv.url in failure["message"]
    assert [r.status for r in vault.requests] == [401, 404]


def test_vault_certificate_from_another_ca_is_refused_before_any_token_is_sent(mm, pki):
    handle, config = mm
    token = secrets.token_urlsafe(16)
    rogue = CertificateAuthority.create("Somebody else's CA")
    vault = KeyVaultStandIn(secrets={SECRET_NAME: config.bootstrap_secret}, accepted_token=token, tenant_id=TENANT)
    logins_before = handle.server.config.app.state.mm.requests["POST login"]
    with serve_key_vault(vault, rogue.issue_server_certificate(pki["dir"] / "rogue")) as kv:
        client, credential = make_client(handle.url, kv.url, pki["bundle"], token)
        failure = login_failure(client)

    # A CuratorError that says TLS verification failed for that vault, not a crash; nothing secret in it.
    assert issubclass(failure["type"], CuratorError)
    assert "TLS verification failed" in failure["message"] and kv.url in failure["message"]
    assert token not in failure["message"] and config.bootstrap_secret not in failure["message"]
    # The handshake failed: nothing reached the impostor, and no token was even requested.
    assert vault.requests == []
    assert credential.requests == []
    # And MM was never asked to log in.
    assert handle.server.config.app.state.mm.requests["POST login"] == logins_before


def test_tls_verification_cannot_be_turned_off(mm):
    handle, _ = mm
    with pytest.raises(ValueError, match="CA bundle"):
        KeyServiceClient(handle.url, credential=FixedTokenCredential("t"), connection_verify=False)
