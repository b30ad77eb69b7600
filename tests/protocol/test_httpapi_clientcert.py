"""The HTTP API with TLS client certificates (issue 6: "a bearer token per account ... or a client
certificate"), over real HTTPS against the real bridge: certificates issued with `dp2bridge cert
issue` authenticate their account, a revoked or unrecorded one does not, one from no tenant CA is
refused in the handshake, a tenant CA made while the bridge serves is trusted within the reload
interval, and the ASGI TLS extension (httpapi.tls) describes the connection."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import socket
import ssl
import uuid as uuidlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from bridge.httpapi.tls import RELOAD_SECONDS, ClientCAs, protocol_class, server_context
from tests.conftest import LAWYER, RunningBridge
from tests.helpers.smtp import wait_for
from tests.protocol.test_httpapi import (  # noqa: F401  (system: a fixture)
    SYSTEM,
    add_token,
    api_url,
    assert_problem,
    cli,
    memo_for_anna,
    post_memo,
    system,
)

NEW_SYSTEM = "system@nyfirma.dp2.test"


@dataclass(frozen=True)
class ClientCert:
    cert: Path                 # PEM certificate
    key: Path                  # PEM key, unencrypted
    pem: str


def issue(bridge: RunningBridge, login: str, tmp: Path) -> ClientCert:
    """`dp2bridge cert issue LOGIN` (generated password), its PKCS#12 opened into PEM files."""
    p12 = tmp / f"{login.split('@')[0]}-{uuidlib.uuid4().hex[:6]}.p12"
    issued = json.loads(cli(bridge, "cert", "issue", login, "--p12", str(p12), "--json"))
    key, cert, _ = pkcs12.load_key_and_certificates(p12.read_bytes(), issued["password"].encode())
    assert key is not None and cert is not None
    assert cert.fingerprint(hashes.SHA256()).hex() == issued["fingerprint"]
    return _write(tmp, p12.stem, key, cert)


def self_signed(tmp: Path) -> ClientCert:
    """A client certificate (clientAuth) for SYSTEM that no tenant CA issued."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Sagssystem")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(x509.SubjectAlternativeName([x509.RFC822Name(SYSTEM)]), critical=False)
            .sign(key, hashes.SHA256()))
    return _write(tmp, "self-signed", key, cert)


def _write(tmp: Path, stem: str, key: Any, cert: x509.Certificate) -> ClientCert:
    pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    cert_path, key_path = tmp / f"{stem}.crt", tmp / f"{stem}.key"
    cert_path.write_text(pem)
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return ClientCert(cert_path, key_path, pem)


def tls_client(bridge: RunningBridge, cert: ClientCert | None, token: str | None = None,
               base_url: str | None = None, tls: ssl.TLSVersion | None = None) -> httpx.Client:
    """httpx over TLS trusting the bridge's CA, presenting `cert` (httpx 0.28 deprecates
    `cert=`; the same load_cert_chain on the context it takes instead)."""
    context = ssl.create_default_context(cafile=bridge.ca_file)
    if cert is not None:
        context.load_cert_chain(cert.cert, cert.key)
    if tls is not None:
        context.maximum_version = tls
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=base_url or api_url(bridge), verify=context, headers=headers, timeout=30)


def test_a_client_certificate_authenticates_its_account_until_revoked(system: RunningBridge,
                                                                     tmp_path: Path) -> None:
    mine = issue(system, SYSTEM, tmp_path)
    with tls_client(system, mine) as c:
        r = post_memo(c, memo_for_anna())
        assert r.status_code == 201, r.text
        location = r.headers["location"]
        status = c.get(location)
        assert status.status_code == 200 and status.json()["sender"] == SYSTEM
        assert status.json()["origin"] == "http"

    lawyer_token = add_token(system, LAWYER)             # a token wins over the certificate
    with tls_client(system, mine, token=lawyer_token) as both:
        assert_problem(both.get(location), 403)
    with tls_client(system, issue(system, LAWYER, tmp_path)) as lawyer:   # the advokat tenant's CA
        assert lawyer.get(f"/v1/messages/{uuidlib.uuid4()}").status_code == 404   # authenticated
        assert_problem(lawyer.get(location), 403)
    with tls_client(system, None) as anonymous:
        r = anonymous.get(location)
        doc = assert_problem(r, 401)
        assert "client certificate" in doc["detail"] and r.headers["www-authenticate"].startswith("Bearer")

    with tls_client(system, mine) as c:
        cli(system, "cert", "revoke", SYSTEM)
        r = c.get(location)                              # the same connection: checked per request
        doc = assert_problem(r, 401)
        assert "dp2bridge cert issue LOGIN" in doc["detail"] and "revoked" in doc["detail"]
        assert_problem(post_memo(c, memo_for_anna()), 401)


def test_a_certificate_from_no_tenant_ca_is_refused_in_the_handshake(system: RunningBridge,
                                                                     tmp_path: Path) -> None:
    # The server's verification fails and asyncio closes the connection without sending the
    # alert it wrote (sslproto._on_handshake_complete -> _fatal_error), so the client sees EOF:
    # in TLS 1.2 inside the handshake, in TLS 1.3 (client handshake already done) on the reply.
    theirs = self_signed(tmp_path)
    with tls_client(system, theirs, tls=ssl.TLSVersion.TLSv1_2) as c:
        with pytest.raises(httpx.ConnectError, match="UNEXPECTED_EOF_WHILE_READING"):
            c.get(f"/v1/messages/{uuidlib.uuid4()}")
    with tls_client(system, theirs) as c:
        with pytest.raises(httpx.RemoteProtocolError, match="Server disconnected without sending a response"):
            c.get(f"/v1/messages/{uuidlib.uuid4()}")
    with tls_client(system, issue(system, SYSTEM, tmp_path)) as c:   # the listener still serves
        assert_problem(c.get(f"/v1/messages/{uuidlib.uuid4()}"), 404)


def test_a_tenant_ca_made_while_serving_is_trusted_within_the_reload_interval(
        bridge: RunningBridge, tmp_path: Path) -> None:
    ca = bridge.config.resolve("certs") / "tenants" / "nyfirma" / "ca.pem"
    assert not ca.exists()
    cli(bridge, "tenant", "add", "nyfirma", "--kind", "company", "--cvr", "12345678",
        "--domain", "nyfirma.dp2.test")
    cli(bridge, "account", "add", NEW_SYSTEM, "--system", "--name", "Nyt system")
    theirs = issue(bridge, NEW_SYSTEM, tmp_path)          # makes the tenant CA, in this process
    assert ca.exists()

    def status() -> int | None:
        try:
            with tls_client(bridge, theirs) as c:
                return c.get(f"/v1/messages/{uuidlib.uuid4()}").status_code
        except httpx.RemoteProtocolError:                # not trusted yet: refused (see above)
            return None
    assert wait_for(status, timeout=RELOAD_SECONDS * 2 + 1, interval=0.2) == 404


def test_the_asgi_tls_extension_describes_the_connection(sqlite_bridge: RunningBridge,
                                                         tmp_path: Path) -> None:
    cli(sqlite_bridge, "account", "add", SYSTEM, "--system", "--name", "Sagssystem")
    mine = issue(sqlite_bridge, SYSTEM, tmp_path)
    config = sqlite_bridge.config
    cert_file, key_file = str(config.resolve(config.tls.cert_file)), str(config.resolve(config.tls.key_file))
    server = sqlite_bridge.call(_echo_server(cert_file, key_file, config.resolve("certs")))
    try:
        base = f"https://localhost:{server.servers[0].sockets[0].getsockname()[1]}"
        with tls_client(sqlite_bridge, mine, base_url=base) as c:
            r = c.get("/")
            ssl_object = r.extensions["network_stream"].get_extra_info("ssl_object")
            tls = r.json()
        assert tls["client_cert_chain"] == [mine.pem]
        assert tls["client_cert_name"] == "CN=Sagssystem" and tls["client_cert_error"] is None
        assert tls["tls_version"] == 0x0304 and ssl_object.version() == "TLSv1.3"
        suites = {"TLS_AES_256_GCM_SHA384": 0x1302, "TLS_AES_128_GCM_SHA256": 0x1301,
                  "TLS_CHACHA20_POLY1305_SHA256": 0x1303}
        assert tls["cipher_suite"] == suites[ssl_object.cipher()[0]]
        first = Path(cert_file).read_text().split("-----END CERTIFICATE-----")[0]
        assert tls["server_cert"] == first + "-----END CERTIFICATE-----\n"
        with tls_client(sqlite_bridge, None, base_url=base) as anonymous:
            tls = anonymous.get("/").json()
        assert tls["client_cert_chain"] == [] and tls["client_cert_name"] is None
    finally:
        sqlite_bridge.call(server.shutdown())


async def _echo_server(cert_file: str, key_file: str, certs_dir: Path) -> uvicorn.Server:
    """uvicorn with the API's TLS and protocol class, answering every request with its
    scope["extensions"]["tls"] as JSON."""
    async def echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
        body = json.dumps(scope["extensions"]["tls"]).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})
    context = server_context(cert_file, key_file)
    await ClientCAs(context, certs_dir).refresh(asyncio.to_thread)
    config = uvicorn.Config(echo, ssl_context_factory=lambda _c, _d: context, http=protocol_class(cert_file),
                            log_config=None, lifespan="off", access_log=False)
    config.load()
    sock = socket.create_server(("127.0.0.1", 0))
    sock.setblocking(False)
    server = uvicorn.Server(config)
    server.lifespan = config.lifespan_class(config)       # as httpapi.server does
    await server.startup(sockets=[sock])
    return server
