"""The TLS flags of `fedgate serve` and `fedgate client`, and the settings they make."""

from __future__ import annotations

import argparse
from pathlib import Path

from fedgate.errors import ConfigError
from fedgate.transport.tls import ClientTls, TlsSettings


def add_server_tls_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("TLS (both transports)")
    group.add_argument("--tls-cert", type=Path, help="the server's certificate chain (PEM)")
    group.add_argument("--tls-key", type=Path, help="the server's private key (PEM)")
    group.add_argument(
        "--tls-client-ca",
        type=Path,
        help="mutual TLS: clients must present a certificate signed by this CA (PEM)",
    )


def server_tls(args: argparse.Namespace) -> TlsSettings | None:
    """The server's TLS settings from its flags (None: plain text)."""
    if args.tls_cert is None and args.tls_key is None:
        if args.tls_client_ca is not None:
            raise ConfigError("--tls-client-ca needs --tls-cert and --tls-key")
        return None
    if args.tls_cert is None or args.tls_key is None:
        raise ConfigError("--tls-cert and --tls-key go together")
    return TlsSettings(args.tls_cert, args.tls_key, args.tls_client_ca)


def add_client_tls_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("TLS")
    group.add_argument(
        "--tls-ca",
        type=Path,
        help="connect over TLS, trusting this CA (PEM) to sign the server's certificate",
    )
    group.add_argument("--tls-cert", type=Path, help="mutual TLS: this client's certificate")
    group.add_argument("--tls-key", type=Path, help="mutual TLS: this client's private key")


def client_tls(args: argparse.Namespace) -> ClientTls | None:
    """The client's TLS settings from its flags (None: plain text, or for an https:// REST
    URL the system's CAs)."""
    if args.tls_ca is None and args.tls_cert is None and args.tls_key is None:
        return None
    return ClientTls(args.tls_ca, args.tls_cert, args.tls_key)
