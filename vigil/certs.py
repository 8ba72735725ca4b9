"""Certificate helpers both sides of the agent channel need: keys, requests, the CA pin, TLS 1.3 contexts."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from vigil.errors import VigilError


class EnrollmentError(VigilError):
    """An enrollment or certificate request that must be refused; the message is safe to show the peer."""


AGENT_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def check_agent_name(name: str) -> None:
    if not AGENT_NAME_RE.match(name):
        raise EnrollmentError("agent names are 1-64 letters, digits, '.', '_' or '-', starting with a letter "
                              "or digit")


def ca_pin(ca_pem: bytes) -> str:
    """`sha256:<hex>` of the CA certificate's DER form."""
    der = x509.load_pem_x509_certificate(ca_pem).public_bytes(serialization.Encoding.DER)
    return "sha256:" + hashlib.sha256(der).hexdigest()


def write_private(path: Path, data: bytes) -> None:
    """Keys are readable by their owner only, written in one step so a crash leaves no half key."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.replace(tmp, path)


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def make_csr(key: ec.EllipticCurvePrivateKey, name: str) -> bytes:
    csr = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    ).sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM)


def check_pin(ca_pem: bytes, pin: str) -> None:
    """Agent side, first contact: the CA the manager sent is the one the operator pinned."""
    try:
        actual = ca_pin(ca_pem)
    except ValueError as exc:
        raise EnrollmentError("the manager sent something that is not a PEM certificate as its CA") from exc
    if actual != pin.strip().lower():
        raise EnrollmentError(f"the manager's CA {actual} does not match the pin {pin} "
                              "(wrong manager, or someone in between)")
