"""`vigil k8s ...`: what a Kubernetes control plane needs to send Vigil its audit log.

`webhook-config` makes a small CA of its own (not the manager's, whose agent certificates must not be
able to post audit events), the audit webhook listener's certificate, a client certificate with CN
vigil-k8s-audit (or a bearer token), and the kubeconfig for kube-apiserver's
`--audit-webhook-config-file`.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import secrets
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import typer

from vigil.cli.common import CONFIG_OPTION, DATA_DIR_OPTION, console, fail, load

if TYPE_CHECKING:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec

# cryptography and the webhook module are imported when the command runs: `vigil` starts fast.

k8s_app = typer.Typer(help="Kubernetes: audit webhook setup.", no_args_is_help=True)

CA_DAYS = 3650
CERT_DAYS = 825
CLIENT_NAME = "vigil-k8s-audit"


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _pem(cert: x509.Certificate) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return cert.public_bytes(serialization.Encoding.PEM)


def _load_or_make_ca(cert_path: Path, key_path: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """Made once: the API server's kubeconfig and the listener both trust it, so it is kept."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    from vigil.certs import key_pem, new_key, write_private

    if cert_path.is_file() and key_path.is_file():
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{key_path}: not the EC key Vigil made")
        return x509.load_pem_x509_certificate(cert_path.read_bytes()), key
    key = new_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Vigil Kubernetes audit webhook CA")])
    usage = x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                          encipher_only=False, decipher_only=False)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(_now() - datetime.timedelta(minutes=5))
            .not_valid_after(_now() + datetime.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(usage, critical=True)
            .sign(key, hashes.SHA256()))
    write_private(key_path, key_pem(key))
    cert_path.write_bytes(_pem(cert))
    return cert, key


def sign(ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, common_name: str,
         usage: x509.ObjectIdentifier, names: list[str]) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A leaf certificate (server or client) signed by the webhook CA, with IP or DNS SANs."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    from vigil.certs import new_key

    key = new_key()
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
               .issuer_name(ca.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(_now() - datetime.timedelta(minutes=5))
               .not_valid_after(_now() + datetime.timedelta(days=CERT_DAYS))
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.ExtendedKeyUsage([usage]), critical=False))
    sans: list[x509.GeneralName] = []
    for name in dict.fromkeys(names):
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            sans.append(x509.DNSName(name))
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def webhook_kubeconfig(server: str, ca_pem: bytes, client: tuple[bytes, bytes] | None, token: str | None) -> str:
    """The kubeconfig kube-apiserver reads with --audit-webhook-config-file (everything embedded)."""
    import yaml

    user: dict[str, str] = {}
    if client is not None:
        user = {"client-certificate-data": _b64(client[0]), "client-key-data": _b64(client[1])}
    if token is not None:
        user["token"] = token
    doc = {"apiVersion": "v1", "kind": "Config", "preferences": {},
           "clusters": [{"name": "vigil", "cluster": {"server": server, "certificate-authority-data": _b64(ca_pem)}}],
           "users": [{"name": "kube-apiserver", "user": user}],
           "contexts": [{"name": "vigil", "context": {"cluster": "vigil", "user": "kube-apiserver"}}],
           "current-context": "vigil"}
    return yaml.safe_dump(doc, sort_keys=False)


@k8s_app.command("webhook-config")
def webhook_config(
    server: str = typer.Option(..., "--server", help="the URL kube-apiserver posts to, e.g. "
                               "https://vigil.example:7556/k8s-audit"),
    out: Path | None = typer.Option(None, "--out", help="where to write the files (default DATA_DIR/k8s-audit, "
                                    "where the webhook looks for them)"),
    token: bool = typer.Option(False, "--token", help="authenticate with a bearer token instead of a client "
                               "certificate"),
    name: list[str] = typer.Option([], "--name", help="another name or IP for the server certificate (repeatable)"),
    config: Path | None = CONFIG_OPTION,
    data_dir: Path | None = DATA_DIR_OPTION,
) -> None:
    """Make the webhook's certificates and the kubeconfig for kube-apiserver's --audit-webhook-config-file."""
    from cryptography.x509.oid import ExtendedKeyUsageOID

    from vigil.agent.modules.kubernetes.webhook_tls import default_files
    from vigil.certs import key_pem, write_private

    cfg = load(config, data_dir)
    url = urlsplit(server)
    if url.scheme != "https" or not url.hostname:
        raise fail(f"--server must be an https:// URL with a host, got {server!r}")
    files = default_files(cfg.data_dir)
    directory = out or files["dir"]
    paths = {key: directory / path.name for key, path in files.items() if key != "dir"}
    try:
        directory.mkdir(parents=True, exist_ok=True)
        ca, ca_key = _load_or_make_ca(paths["ca"], paths["ca_key"])
        server_cert, server_key = sign(ca, ca_key, "vigil-k8s-audit-webhook", ExtendedKeyUsageOID.SERVER_AUTH,
                                       [url.hostname, *name, "127.0.0.1", "localhost"])
        write_private(paths["server_key"], key_pem(server_key))
        paths["server_cert"].write_bytes(_pem(server_cert))
        client: tuple[bytes, bytes] | None = None
        secret: str | None = None
        if token:
            if paths["token"].is_file() and paths["token"].read_text().strip():
                secret = paths["token"].read_text().strip()
            else:
                secret = secrets.token_urlsafe(32)
                write_private(paths["token"], (secret + "\n").encode())
        else:
            client_cert, client_key = sign(ca, ca_key, CLIENT_NAME, ExtendedKeyUsageOID.CLIENT_AUTH, [])
            client = (_pem(client_cert), key_pem(client_key))
            write_private(paths["client_key"], client[1])
            paths["client_cert"].write_bytes(client[0])
        write_private(paths["kubeconfig"], webhook_kubeconfig(server, _pem(ca), client, secret).encode())
    except (OSError, ValueError) as exc:
        raise fail(f"cannot write the webhook files in {directory}: {exc}", 1) from None
    console.print(f"wrote {paths['kubeconfig']} (copy it to the control plane, mode 0600)", highlight=False)
    console.print("kube-apiserver flags:\n"
                  f"  --audit-webhook-config-file={paths['kubeconfig']}\n"
                  "  --audit-policy-file=/etc/kubernetes/audit-policy.yaml   (deploy/kubernetes/audit-policy.yaml)\n"
                  "  --audit-webhook-batch-max-size=400", highlight=False)
    snippet = [f"  audit_webhook:\n    enabled: true\n    host: 0.0.0.0   # an address the API server can reach\n"
               f"    port: {url.port or 443}\n    path: {url.path or '/'}"]
    if directory != files["dir"]:
        snippet.append(f"    tls_cert_file: {paths['server_cert']}\n    tls_key_file: {paths['server_key']}")
        snippet.append(f"    bearer_token_file: {paths['token']}" if token
                       else f"    client_ca_file: {paths['ca']}")
    console.print("Vigil configuration:\nkubernetes:\n" + "\n".join(snippet), highlight=False)
