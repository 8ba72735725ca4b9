"""The manager's certificate authority: created on first start, it signs the manager's server
certificate and one client certificate per enrolled agent. Every channel is TLS 1.3 only.

Agents learn nothing about the CA in advance except its pin (`sha256:<hex of the CA cert DER>`,
`ManagerPKI.pin`), which the operator copies from the manager; the pin is what makes enrollment
safe against a man in the middle, as with `kubeadm join --discovery-token-ca-cert-hash`.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from vigil.certs import EnrollmentError, ca_pin, key_pem, new_key, write_private
from vigil.errors import VigilError

CA_DAYS = 3650
SERVER_DAYS = 825
AGENT_DAYS = 365
AGENT_ORG = "vigil-agent"


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


@dataclass
class ManagerPKI:
    """Files under DATA_DIR/pki: ca.pem, ca.key, server.pem, server.key (keys mode 0600)."""

    directory: Path
    ca_cert: x509.Certificate
    ca_key: ec.EllipticCurvePrivateKey

    @property
    def ca_pem(self) -> bytes:
        return self.ca_cert.public_bytes(serialization.Encoding.PEM)

    @property
    def pin(self) -> str:
        return ca_pin(self.ca_pem)

    @classmethod
    def load_or_create(cls, directory: Path, server_names: list[str]) -> ManagerPKI:
        """The CA is made once; the server certificate is reissued when the names it must carry change."""
        directory.mkdir(parents=True, exist_ok=True)
        ca_path, key_path = directory / "ca.pem", directory / "ca.key"
        if ca_path.exists() and key_path.exists():
            ca_cert = x509.load_pem_x509_certificate(ca_path.read_bytes())
            loaded = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
            if not isinstance(loaded, ec.EllipticCurvePrivateKey):
                raise VigilError(f"{key_path}: not the EC key Vigil made for its CA")
            pki = cls(directory, ca_cert, loaded)
        else:
            ca_key = new_key()
            subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Vigil manager CA")])
            ca_cert = (
                x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
                .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(_now() - datetime.timedelta(minutes=5))
                .not_valid_after(_now() + datetime.timedelta(days=CA_DAYS))
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                             key_encipherment=False, data_encipherment=False, key_agreement=False,
                                             key_cert_sign=True, crl_sign=True, encipher_only=False,
                                             decipher_only=False), critical=True)
                .sign(ca_key, hashes.SHA256())
            )
            write_private(key_path, key_pem(ca_key))
            ca_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
            pki = cls(directory, ca_cert, ca_key)
        pki._ensure_server_cert(sorted(set(server_names)))
        return pki

    def _ensure_server_cert(self, names: list[str]) -> None:
        cert_path, key_path = self.directory / "server.pem", self.directory / "server.key"
        if cert_path.exists() and key_path.exists():
            cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
            if sorted(_san_names(cert)) == names and cert.not_valid_after_utc > _now() + datetime.timedelta(days=30):
                return
        key = new_key()
        sans: list[x509.GeneralName] = []
        for name in names:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(name)))
            except ValueError:
                sans.append(x509.DNSName(name))
        cert = self._sign(key.public_key(), "vigil-manager", None, SERVER_DAYS, ExtendedKeyUsageOID.SERVER_AUTH, sans)
        write_private(key_path, key_pem(key))
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    @staticmethod
    def request_key(csr_pem: bytes) -> ec.EllipticCurvePublicKey:
        """The key of a sound certificate request (PEM, self-signed, EC P-256), or why it is refused."""
        try:
            csr = x509.load_pem_x509_csr(csr_pem)
        except ValueError as exc:
            raise EnrollmentError("the certificate request is not a PEM CSR") from exc
        if not csr.is_signature_valid:
            raise EnrollmentError("the certificate request's signature does not verify")
        public_key = csr.public_key()
        if not isinstance(public_key, ec.EllipticCurvePublicKey) or public_key.curve.name != "secp256r1":
            raise EnrollmentError("the certificate request must carry an EC P-256 key")
        return public_key

    def sign_agent(self, public_key: ec.EllipticCurvePublicKey, agent_id: str) -> x509.Certificate:
        """A client certificate for one agent: CN = its id, O = vigil-agent (the request's subject is ignored)."""
        return self._sign(public_key, agent_id, AGENT_ORG, AGENT_DAYS, ExtendedKeyUsageOID.CLIENT_AUTH, [])

    def _sign(self, public_key: ec.EllipticCurvePublicKey, common_name: str, org: str | None, days: int,
              usage: x509.ObjectIdentifier, sans: list[x509.GeneralName]) -> x509.Certificate:
        attrs = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
        if org:
            attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
        builder = (
            x509.CertificateBuilder().subject_name(x509.Name(attrs)).issuer_name(self.ca_cert.subject)
            .public_key(public_key).serial_number(x509.random_serial_number())
            .not_valid_before(_now() - datetime.timedelta(minutes=5))
            .not_valid_after(_now() + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return builder.sign(self.ca_key, hashes.SHA256())

    def server_context(self, require_client_cert: bool) -> ssl.SSLContext:
        """TLS 1.3 only. With client certificates required, only certificates from this CA get through."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_3
        context.load_cert_chain(self.directory / "server.pem", self.directory / "server.key")
        if require_client_cert:
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(cadata=self.ca_pem.decode())
        return context


def _san_names(cert: x509.Certificate) -> list[str]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [str(v) for v in ext.get_values_for_type(x509.DNSName)] + [
        str(v) for v in ext.get_values_for_type(x509.IPAddress)
    ]


