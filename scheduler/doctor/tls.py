"""When an etcd endpoint's server certificate expires (standard library ``ssl``).

The handshake verifies the certificate as the daemons' gRPC channels do: the
config's CA, client certificate and ``tls_server_name`` (else the endpoint's
host). An expired certificate fails verification, so that error is told
apart from the others.
"""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass

from scheduler.config import EtcdConfig

WARN_DAYS = 30.0
"""A certificate that expires within this many days is a warning."""

_EXPIRED = 10  # X509_V_ERR_CERT_HAS_EXPIRED


@dataclass(frozen=True)
class CertExpiry:
    not_after: float | None
    """Epoch seconds; None when the certificate could not be read."""
    expired: bool = False
    error: str = ""


def server_certificate(config: EtcdConfig, endpoint: str, timeout: float) -> CertExpiry:
    """Handshake with ``endpoint`` and read its certificate's ``notAfter`` (blocking)."""
    host, _, port = endpoint.rpartition(":")
    host = host.removeprefix("https://").removeprefix("http://")
    ctx = ssl.create_default_context(
        cafile=str(config.ca_file) if config.ca_file is not None else None
    )
    if config.cert_file is not None:
        key = str(config.key_file) if config.key_file is not None else None
        ctx.load_cert_chain(str(config.cert_file), key)
    name = config.tls_server_name or host
    try:
        with (
            socket.create_connection((host, int(port)), timeout=timeout) as sock,
            ctx.wrap_socket(sock, server_hostname=name) as tls,
        ):
            cert = tls.getpeercert()
    except ssl.SSLCertVerificationError as exc:
        if exc.verify_code == _EXPIRED:
            return CertExpiry(None, expired=True, error=exc.verify_message)
        return CertExpiry(None, error=f"certificate not trusted: {exc.verify_message}")
    except (OSError, ValueError) as exc:
        return CertExpiry(None, error=f"TLS handshake failed: {exc}")
    not_after = cert.get("notAfter") if cert else None
    if not isinstance(not_after, str):
        return CertExpiry(None, error="the server sent no certificate")
    return CertExpiry(float(ssl.cert_time_to_seconds(not_after)))


def days_left(expiry: CertExpiry, now: float) -> float | None:
    if expiry.not_after is None:
        return None
    return (expiry.not_after - now) / 86400.0
