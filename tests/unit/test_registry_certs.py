"""Per-registry TLS material in ``certs.d/<host:port>/``, as Docker reads it."""

from __future__ import annotations

from pathlib import Path

import pytest
import trustme

from engine.errors import InvalidArgument
from registry.endpoint import RegistryConfig


def test_a_registrys_ca_is_trusted_for_that_registry_only(tmp_path: Path) -> None:
    ca = trustme.CA()
    folder = tmp_path / "registry.test:5000"
    folder.mkdir()
    ca.cert_pem.write_to_path(str(folder / "ca.crt"))
    config = RegistryConfig(certs_dir=tmp_path)
    [endpoint] = config.endpoints("registry.test:5000")
    assert endpoint.url == "https://registry.test:5000" and endpoint.tls is not None
    subjects = [c["subject"] for c in endpoint.tls.get_ca_certs()]
    assert any("trustme" in str(s) for s in subjects)
    [other] = config.endpoints("other.test")
    assert other.tls is not None
    assert not any("trustme" in str(c["subject"]) for c in other.tls.get_ca_certs())


def test_a_client_certificate_needs_its_key(tmp_path: Path) -> None:
    ca = trustme.CA()
    folder = tmp_path / "registry.test"
    folder.mkdir()
    cert = ca.issue_cert("client.test")
    cert.cert_chain_pems[0].write_to_path(str(folder / "client.cert"))
    with pytest.raises(InvalidArgument, match="without client.key"):
        RegistryConfig(certs_dir=tmp_path).endpoints("registry.test")
    cert.private_key_pem.write_to_path(str(folder / "client.key"))
    folder.touch()  # the folder changed: its context is made again
    (folder / "x").touch()
    [endpoint] = RegistryConfig(certs_dir=tmp_path).endpoints("registry.test")
    assert endpoint.tls is not None


def test_loopback_is_tried_over_https_unverified_then_http(tmp_path: Path) -> None:
    https, http = RegistryConfig(certs_dir=tmp_path).endpoints("127.0.0.1:5000")
    assert https.url == "https://127.0.0.1:5000" and https.tls is not None
    assert not https.tls.check_hostname
    assert http.url == "http://127.0.0.1:5000" and http.tls is None
