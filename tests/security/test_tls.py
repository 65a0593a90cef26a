"""TLS verification stays on for every client: an untrusted certificate is an error, never a silent success."""

from __future__ import annotations

import re
import secrets
from pathlib import Path

import pytest

from devstack.customvision_server import CustomVisionEmulatorConfig
from devstack.customvision_server import create_app as create_cv_app
from devstack.mm_server import MMEmulatorConfig
from devstack.mm_server import create_app as create_mm_app
from devstack.servers import serve_in_thread
from percept_core import CustomVisionError, KeyServiceClient, ServiceError
from percept_core.customvision import CustomVisionClient
from tests.support.keyvault import CertificateAuthority

REPO = Path(__file__).resolve().parents[2]
SHIPPED = ["percept_core", "pages", "deploy", "app.py"]
SWITCHES = re.compile(
    r"verify\s*=\s*False|connection_verify\s*=\s*False|CERT_NONE|check_hostname\s*=\s*False|disable_warnings"
)


def test_no_shipped_code_turns_verification_off():
    roots = [REPO / name for name in SHIPPED if (REPO / name).exists()]
    files = [p for root in roots for p in (root.rglob("*.py") if root.is_dir() else [root])]
    assert len(files) > 10
    offenders = [f"{p.relative_to(REPO)}:{m.group(0)}" for p in files for m in SWITCHES.finditer(p.read_text())]
    assert offenders == []


@pytest.fixture(scope="module")
def untrusted_tls(tmp_path_factory):
    """A server certificate from a CA nobody trusts."""
    return CertificateAuthority.create("untrusted").issue_server_certificate(tmp_path_factory.mktemp("tls"))


def test_mm_server_with_an_untrusted_certificate_is_refused(stack, untrusted_tls):
    config = MMEmulatorConfig(storage_connection_string=stack.storage_connection_string)
    handle = serve_in_thread(
        create_mm_app(config), ssl_certfile=str(untrusted_tls.certfile), ssl_keyfile=str(untrusted_tls.keyfile)
    )
    try:
        client = KeyServiceClient(handle.url, bootstrap_secret=config.bootstrap_secret, retries=0)
        with pytest.raises(ServiceError, match="TLS verification failed for the MM server"):
            client.login()
        with pytest.raises(ValueError, match="cannot be turned off"):
            KeyServiceClient(handle.url, connection_verify=False)
    finally:
        handle.stop()


def test_custom_vision_with_an_untrusted_certificate_is_refused(untrusted_tls):
    key = secrets.token_hex(8)
    handle = serve_in_thread(
        create_cv_app(CustomVisionEmulatorConfig(training_keys=(key,))),
        ssl_certfile=str(untrusted_tls.certfile),
        ssl_keyfile=str(untrusted_tls.keyfile),
    )
    try:
        client = CustomVisionClient(handle.url, key, "00000000-0000-0000-0000-000000000000")
        with pytest.raises(CustomVisionError, match="TLS verification failed for Custom Vision") as caught:
            client.tags()
        assert key not in str(caught.value)
        assert client.stats.calls == 1  # not retried: a bad certificate does not get better
    finally:
        handle.stop()
