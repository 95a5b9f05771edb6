"""TLS for both transports: what the server and a client are given, read and checked once.

Files are read and their PEM checked by Python's ssl module before anything binds or
connects, so a wrong path or a key that does not match its certificate is a ConfigError
naming the file, not an obscure handshake failure later. gRPC takes the PEM bytes read
here; uvicorn takes the same files, httpx an ssl context built from them.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

from fedgate.errors import ConfigError

# Words gRPC's and OpenSSL's messages use when a handshake, not the network, failed.
TLS_FAILURE_WORDS = ("ssl", "tls", "handshake", "certificate")


@dataclass(frozen=True)
class TlsSettings:
    """The server's side: its certificate and key; with ``client_ca``, mutual TLS."""

    cert: Path
    key: Path
    client_ca: Path | None = None  # clients must present a certificate this CA signed

    @property
    def mutual(self) -> bool:
        return self.client_ca is not None


@dataclass(frozen=True)
class ClientTls:
    """A client's side: the CA it trusts (None: the system's) and, for mutual TLS, its own
    certificate and key."""

    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None

    def __post_init__(self) -> None:
        if (self.cert is None) != (self.key is None):
            raise ConfigError("a TLS client certificate needs its key, and a key its certificate")


@dataclass(frozen=True)
class ServerTls:
    """TLS material the server has read and checked: PEM bytes for gRPC; uvicorn loads the
    same files (``settings``) itself."""

    settings: TlsSettings
    cert_pem: bytes
    key_pem: bytes
    client_ca_pem: bytes | None


@dataclass(frozen=True, eq=False)
class ClientTlsMaterial:
    """TLS material a client has read and checked: PEM bytes for gRPC, a context for httpx."""

    ca_pem: bytes | None
    cert_pem: bytes | None
    key_pem: bytes | None
    context: ssl.SSLContext


def read_pem(path: Path, what: str) -> bytes:
    """The bytes of a PEM file, or a ConfigError that names the file and why it cannot be read."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ConfigError(f"cannot read the TLS {what} {path}: {error.strerror or error}") from None
    if b"-----BEGIN " not in data:
        raise ConfigError(f"the TLS {what} {path} is not a PEM file")
    return data


def load_server_tls(settings: TlsSettings) -> ServerTls:
    """Read the server's certificate, key and (mutual TLS) client CA, and check them by
    loading them as a server would."""
    cert = read_pem(settings.cert, "certificate")
    key = read_pem(settings.key, "private key")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    _load_chain(context, settings.cert, settings.key)
    client_ca = None
    if settings.client_ca is not None:
        client_ca = read_pem(settings.client_ca, "client CA")
        _load_ca(context, settings.client_ca, client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return ServerTls(settings, cert, key, client_ca)


def load_client_tls(tls: ClientTls) -> ClientTlsMaterial:
    """Read and check a client's CA and (mutual TLS) certificate and key."""
    ca = cert = key = None
    if tls.ca is None:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)  # the system's CAs
    else:
        ca = read_pem(tls.ca, "CA certificate")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # this CA only, hostname checked
        _load_ca(context, tls.ca, ca)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if tls.cert is not None and tls.key is not None:
        cert = read_pem(tls.cert, "client certificate")
        key = read_pem(tls.key, "client key")
        _load_chain(context, tls.cert, tls.key)
    return ClientTlsMaterial(ca, cert, key, context)


def looks_like_tls_failure(message: str) -> bool:
    lowered = message.lower()
    return any(word in lowered for word in TLS_FAILURE_WORDS)


def _load_chain(context: ssl.SSLContext, cert: Path, key: Path) -> None:
    try:
        context.load_cert_chain(cert, key)
    except (ssl.SSLError, OSError) as error:
        raise ConfigError(
            f"the TLS certificate {cert} and key {key} do not load as a pair: "
            f"{getattr(error, 'reason', None) or error}"
        ) from None


def _load_ca(context: ssl.SSLContext, path: Path, pem: bytes) -> None:
    try:
        context.load_verify_locations(cadata=pem.decode("ascii"))
    except (ssl.SSLError, UnicodeDecodeError, ValueError) as error:
        raise ConfigError(
            f"the TLS CA {path} holds no usable certificate: "
            f"{getattr(error, 'reason', None) or error}"
        ) from None
