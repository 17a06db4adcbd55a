"""TLS for both ports (server side) and for the clients."""
from __future__ import annotations

import ssl
from pathlib import Path

from streamrnn.config import ConfigError, TlsConfig


def read_pem(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as err:
        raise ConfigError(f"cannot read {what} {path}: {err}") from err


def server_context(tls: TlsConfig) -> ssl.SSLContext | None:
    """https/wss for the HTTP port; None when no certificate is configured."""
    if not tls.cert:
        return None
    for path, what in ((tls.cert, "tls.cert"), (tls.key, "tls.key")):
        read_pem(path, what)  # a missing file is named before ssl's terser error
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(tls.cert, tls.key)
    except ssl.SSLError as err:
        raise ConfigError(f"tls.cert {tls.cert} and tls.key {tls.key} are not a usable pair: {err}") from err
    return context


def grpc_server_credentials(tls: TlsConfig):
    """TLS for the gRPC port; None when no certificate is configured."""
    if not tls.cert:
        return None
    import grpc
    return grpc.ssl_server_credentials([(read_pem(tls.key, "tls.key"), read_pem(tls.cert, "tls.cert"))])


def client_context(ca: str | None = None, insecure: bool = False) -> ssl.SSLContext:
    """For wss:// URLs: the system's trusted CAs, or `ca` (a PEM file, e.g. a self-signed
    certificate); `insecure` skips verification (testing only)."""
    context = ssl.create_default_context(cafile=ca)
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def grpc_channel_credentials(ca: str | None = None):
    """For a TLS gRPC channel: the system's trusted CAs, or `ca` (a PEM file)."""
    import grpc
    return grpc.ssl_channel_credentials(read_pem(ca, "CA file") if ca else None)
