"""TLS on the client side: the context for wss:// URLs and the credentials of a TLS gRPC channel.
(The daemon's side is streamrnn.serve.tls.)"""
from __future__ import annotations

import ssl
from pathlib import Path

from streamrnn_client.protocol import StreamrnnError


class TlsError(StreamrnnError):
    """A certificate file that cannot be used."""


def read_ca(path: str) -> bytes:
    """A PEM file of certificates to trust, with a one-line error naming the file."""
    try:
        return Path(path).read_bytes()
    except FileNotFoundError as err:
        raise TlsError(f"no such CA file: {path}") from err
    except OSError as err:
        raise TlsError(f"cannot read CA file {path}: {err.strerror or err}") from err


def client_context(ca: str | None = None, insecure: bool = False) -> ssl.SSLContext:
    """For wss:// URLs: the system's trusted CAs, or `ca` (a PEM file, e.g. a self-signed
    certificate); `insecure` skips verification (testing only)."""
    if ca:
        read_ca(ca)  # a missing file is named before ssl's terser error
    try:
        context = ssl.create_default_context(cafile=ca)
    except ssl.SSLError as err:
        raise TlsError(f"CA file {ca} holds no usable PEM certificate: {err}") from err
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def grpc_channel_credentials(ca: str | None = None):
    """For a TLS gRPC channel: the system's trusted CAs, or `ca` (a PEM file)."""
    import grpc
    return grpc.ssl_channel_credentials(read_ca(ca) if ca else None)
