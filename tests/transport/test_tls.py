"""TLS on both transports: certificates made here, a real gateway on loopback, fedgate's clients.

Every transport in the client registry is covered: a client with the CA runs a round; one
without it, with a stranger's CA, or in plain text is refused with a TransportError; with
mutual TLS only a client holding a certificate the server's client CA signed gets in.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import stat
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fedgate.cli import build_parser
from fedgate.cli_tls import client_tls, server_tls
from fedgate.codecs import get_codec
from fedgate.core.config import RunConfig
from fedgate.core.federation import Federation
from fedgate.core.messages import JoinRequest, TaskKind, Update
from fedgate.core.transport import Session, Transport
from fedgate.errors import ConfigError, TlsError, TransportError
from fedgate.gateway.serve import ServeOptions, announce, plain_text_warning
from fedgate.gateway.server import Gateway, GatewaySettings
from fedgate.run.results import write_json
from fedgate.transport.connect import TRANSPORTS, connect
from fedgate.transport.tls import ClientTls, TlsSettings
from tests.conftest import tiny_model, until
from tests.transport.conftest import ADMIN_TOKEN

NAMES = sorted(TRANSPORTS)
JOIN = JoinRequest(name="tls-probe", codec="raw", num_examples=10)


@dataclass(frozen=True)
class Pki:
    ca: Path  # signed the server's and the client's certificates
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    stranger_ca: Path  # a CA nobody here trusts...
    stranger_cert: Path  # ... and a client certificate it signed
    stranger_key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write(
    directory: Path, stem: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey
) -> None:
    (directory / f"{stem}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / f"{stem}.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def _builder(
    subject: str, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey
) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
    )


def make_ca(directory: Path, stem: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        _builder(f"fedgate test {stem}", _name(f"fedgate test {stem}"), key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write(directory, stem, cert, key)
    return cert, key


def make_leaf(
    directory: Path,
    stem: str,
    ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey],
    usage: x509.ObjectIdentifier,
    names: list[x509.GeneralName],
) -> None:
    ca_cert, ca_key = ca
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        _builder(stem, ca_cert.subject, key.public_key())
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    _write(directory, stem, cert, key)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    ca = make_ca(d, "ca")
    server_names: list[x509.GeneralName] = [
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    ]
    make_leaf(d, "server", ca, ExtendedKeyUsageOID.SERVER_AUTH, server_names)
    make_leaf(d, "client", ca, ExtendedKeyUsageOID.CLIENT_AUTH, [x509.DNSName("client")])
    stranger = make_ca(d, "stranger-ca")
    make_leaf(d, "stranger", stranger, ExtendedKeyUsageOID.CLIENT_AUTH, [x509.DNSName("x")])
    return Pki(
        d / "ca.crt",
        d / "server.crt",
        d / "server.key",
        d / "client.crt",
        d / "client.key",
        d / "stranger-ca.crt",
        d / "stranger.crt",
        d / "stranger.key",
    )


def server_tls_settings(pki: Pki, mutual: bool = False) -> TlsSettings:
    return TlsSettings(pki.server_cert, pki.server_key, pki.ca if mutual else None)


@asynccontextmanager
async def gateway(tls: TlsSettings | None) -> AsyncIterator[Gateway]:
    federation = Federation(tiny_model(), RunConfig(rounds=1, min_clients=1, round_deadline_s=10.0))
    settings = GatewaySettings(grpc_port=0, http_port=0, admin_token=ADMIN_TOKEN, tls=tls)
    async with Gateway(federation, settings) as serving:
        yield serving


def address(serving: Gateway, transport: str) -> str:
    return serving.addresses[transport]


@asynccontextmanager
async def client(transport: str, server: str, tls: ClientTls | None) -> AsyncIterator[Transport]:
    opened = connect(transport, server, tls)
    try:
        yield opened
    finally:
        await opened.close()


async def refused(transport: str, server: str, tls: ClientTls | None) -> TransportError:
    async with client(transport, server, tls) as probe:
        with pytest.raises(TransportError) as caught:
            await probe.join(JOIN)
    return caught.value


async def run_one_round(probe: Transport, serving: Gateway) -> None:
    """join, next_task, fetch_model, submit_update: the round completes with this update."""
    federation = serving.federation
    assert isinstance(federation, Federation)  # the gateway knows only its service seam
    federation.start()
    session = Session.from_ack(await probe.join(JOIN))
    task = await probe.next_task(session, 5.0)
    assert task.kind is TaskKind.TRAIN
    model = await probe.fetch_model(session, task.model_version, "raw")
    weights = get_codec("raw").decode(model.payload)
    payload = get_codec("raw").encode(weights)
    update = Update(task.round_id, task.model_version, 10, "raw", payload)
    receipt = await probe.submit_update(session, update)
    assert receipt.accepted == 1
    await until(lambda: federation.status().rounds_completed == 1)


@pytest.mark.parametrize("transport", NAMES)
async def test_a_client_holding_the_ca_runs_a_round_over_tls(pki: Pki, transport: str) -> None:
    async with gateway(server_tls_settings(pki)) as serving:
        assert serving.http_url.startswith("https://")
        async with client(transport, address(serving, transport), ClientTls(pki.ca)) as probe:
            await run_one_round(probe, serving)


@pytest.mark.parametrize("transport", NAMES)
async def test_a_client_without_the_ca_is_refused(pki: Pki, transport: str) -> None:
    async with gateway(server_tls_settings(pki)) as serving:
        server = address(serving, transport)
        for trusted in (ClientTls(), ClientTls(pki.stranger_ca)):  # the system's CAs; a stranger
            error = await refused(transport, server, trusted)
            assert isinstance(error, TlsError), error
            assert "TLS handshake" in error.message and "--tls-ca" in error.message
        assert not serving.federation.status().clients


@pytest.mark.parametrize("transport", NAMES)
async def test_mutual_tls_admits_only_a_client_with_a_certificate_the_ca_signed(
    pki: Pki, transport: str
) -> None:
    async with gateway(server_tls_settings(pki, mutual=True)) as serving:
        server = address(serving, transport)
        error = await refused(transport, server, ClientTls(pki.ca))
        assert "client certificate" in error.message, error
        stranger = ClientTls(pki.ca, pki.stranger_cert, pki.stranger_key)
        await refused(transport, server, stranger)
        assert not serving.federation.status().clients
        trusted = ClientTls(pki.ca, pki.client_cert, pki.client_key)
        async with client(transport, server, trusted) as probe:
            await run_one_round(probe, serving)


@pytest.mark.parametrize("transport", NAMES)
async def test_plain_text_and_tls_do_not_mix_and_fail_cleanly(pki: Pki, transport: str) -> None:
    async with gateway(server_tls_settings(pki)) as serving:
        plain = address(serving, transport).replace("https://", "http://")
        error = await refused(transport, plain, None)
        assert "TLS" in error.message, error
    async with gateway(None) as serving:
        server = address(serving, transport).replace("http://", "https://")
        error = await refused(transport, server, ClientTls(pki.ca))
        assert isinstance(error, TlsError), error


async def test_unreadable_or_mismatched_certificates_are_config_errors_before_binding(
    pki: Pki, tmp_path: Path
) -> None:
    missing = tmp_path / "missing.crt"
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("hello")
    cases = [
        (TlsSettings(missing, pki.server_key), str(missing)),
        (TlsSettings(not_pem, pki.server_key), str(not_pem)),
        (TlsSettings(pki.server_cert, pki.client_key), str(pki.server_cert)),  # not its key
        (TlsSettings(pki.server_cert, pki.server_key, missing), str(missing)),
    ]
    for tls, named in cases:
        federation = Federation(tiny_model(), RunConfig())
        serving = Gateway(federation, GatewaySettings(grpc_port=0, http_port=0, tls=tls))
        with pytest.raises(ConfigError, match=named):
            await serving.start()
        assert serving.grpc_port == serving.http_port == 0  # nothing bound
        await federation.close()
    for transport in NAMES:
        with pytest.raises(ConfigError, match=str(missing)):
            connect(transport, "127.0.0.1:1", ClientTls(missing))
        with pytest.raises(ConfigError, match="key"):
            connect(transport, "127.0.0.1:1", ClientTls(pki.ca, pki.client_cert))


def test_tls_flags_make_the_settings() -> None:
    parser = build_parser()
    args = parser.parse_args(["serve", "--tls-cert", "s.crt", "--tls-key", "s.key"])
    assert server_tls(args) == TlsSettings(Path("s.crt"), Path("s.key"))
    args = parser.parse_args(
        ["serve", "--tls-cert", "s.crt", "--tls-key", "s.key", "--tls-client-ca", "ca.crt"]
    )
    assert server_tls(args) == TlsSettings(Path("s.crt"), Path("s.key"), Path("ca.crt"))
    assert server_tls(parser.parse_args(["serve"])) is None
    with pytest.raises(ConfigError):
        server_tls(parser.parse_args(["serve", "--tls-cert", "s.crt"]))
    base = ["client", "--server", "h:1", "--transport", "grpc"]
    assert client_tls(parser.parse_args(base)) is None
    args = parser.parse_args([*base, "--tls-ca", "ca.crt"])
    assert client_tls(args) == ClientTls(Path("ca.crt"))


def test_serving_beyond_loopback_without_tls_warns(pki: Pki) -> None:
    assert plain_text_warning(GatewaySettings(host="127.0.0.1")) == ""
    assert plain_text_warning(GatewaySettings(host="localhost")) == ""
    assert plain_text_warning(GatewaySettings(host="0.0.0.0", tls=server_tls_settings(pki))) == ""
    warning = plain_text_warning(GatewaySettings(host="0.0.0.0"))
    assert "without TLS" in warning and "--tls-cert" in warning


@contextmanager
def permissive_umask() -> Iterator[None]:
    """umask 0: a file's mode is then exactly what its creator asked for."""
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_the_ready_file_holding_the_admin_token_is_owner_only(tmp_path: Path) -> None:
    federation = Federation(tiny_model(), RunConfig())
    settings = GatewaySettings(grpc_port=0, http_port=0, admin_token=ADMIN_TOKEN)
    ready = tmp_path / "run" / "ready.json"
    with permissive_umask():
        announce(
            Gateway(federation, settings), ServeOptions(settings, RunConfig(), ready_file=ready)
        )
    assert mode_of(ready) == 0o600
    assert ADMIN_TOKEN in ready.read_text()
    assert [p.name for p in ready.parent.iterdir()] == ["ready.json"]  # no temporary left
    await federation.close()


def test_a_private_json_file_replaces_a_world_readable_one(tmp_path: Path) -> None:
    path = tmp_path / "secret.json"
    with permissive_umask():
        write_json(path, {"a": 1})
        assert mode_of(path) == 0o666  # the ordinary kind follows the umask
        write_json(path, {"admin_token": "x"}, private=True)
    assert mode_of(path) == 0o600
    assert path.read_text() == '{\n  "admin_token": "x"\n}\n'
