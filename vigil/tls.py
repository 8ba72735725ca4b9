"""The agent's TLS context, apart from certs.py: a running agent needs only `ssl`, and the
`cryptography` package that enrollment uses would add about 15 MB to its memory."""

from __future__ import annotations

import ssl
from pathlib import Path


def client_context(ca_pem: bytes, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    """Agent side: TLS 1.3 only, the manager verified against the pinned CA and its name."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.load_verify_locations(cadata=ca_pem.decode())
    if cert is not None and key is not None:
        context.load_cert_chain(cert, key)
    return context
