"""TLS for both ports, the daemon's side (the clients' side: streamrnn_client.tls)."""
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
