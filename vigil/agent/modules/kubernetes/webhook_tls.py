"""The audit webhook's credentials: its server certificate, the client CA and the bearer token
(from config, else what `vigil k8s webhook-config` made under DATA_DIR), and who may post.

Kept apart from the listener so `vigil k8s webhook-config` can find the files without loading it.
"""

from __future__ import annotations

import hmac
import logging
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vigil.config_kubernetes import AuditWebhookConfig
from vigil.errors import VigilError

log = logging.getLogger(__name__)

FILES_DIR = "k8s-audit"  # under DATA_DIR: what `vigil k8s webhook-config` makes


def default_files(data_dir: Path) -> dict[str, Path]:
    d = data_dir / FILES_DIR
    return {"dir": d, "ca": d / "ca.pem", "ca_key": d / "ca.key", "server_cert": d / "server.pem",
            "server_key": d / "server.key", "client_cert": d / "client.pem", "client_key": d / "client.key",
            "token": d / "token", "kubeconfig": d / "webhook-kubeconfig.yaml"}


@dataclass(frozen=True)
class WebhookTls:
    """Where the listener's certificate, the client CA and the token come from (config, else DATA_DIR)."""

    cert: Path
    key: Path
    client_ca: Path | None
    token_file: Path | None

    @classmethod
    def resolve(cls, config: AuditWebhookConfig, data_dir: Path) -> WebhookTls:
        files = default_files(data_dir)
        cert = config.tls_cert_file or files["server_cert"]
        key = config.tls_key_file or (cert.with_suffix(".key") if config.tls_cert_file else files["server_key"])
        for path, what in ((cert, "tls_cert_file"), (key, "tls_key_file")):
            if not path.is_file():
                raise VigilError(f"kubernetes.audit_webhook: {what} {path} does not exist; run `vigil k8s "
                                 "webhook-config --server https://HOST:PORT/k8s-audit` to make the certificates, "
                                 "or set tls_cert_file and tls_key_file")
        ca = config.client_ca_file or (files["ca"] if files["ca"].is_file() else None)
        if config.client_ca_file is not None and not ca.is_file():  # type: ignore[union-attr]
            raise VigilError(f"kubernetes.audit_webhook: client_ca_file {ca} does not exist")
        token = config.bearer_token_file or (files["token"] if files["token"].is_file() else None)
        if config.bearer_token_file is not None and not config.bearer_token_file.is_file():
            raise VigilError(f"kubernetes.audit_webhook: bearer_token_file {token} does not exist")
        if ca is None and token is None:
            raise VigilError("kubernetes.audit_webhook: no client CA and no bearer token, so anyone could post "
                             "audit events; set client_ca_file or bearer_token_file (or run `vigil k8s "
                             "webhook-config`)")
        return cls(cert, key, ca, token)

    def context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.cert, self.key)
        if self.client_ca is not None:
            context.load_verify_locations(cafile=str(self.client_ca))
            # Optional: a token client need not have a certificate; one from another CA still fails.
            context.verify_mode = ssl.CERT_OPTIONAL
        return context

    def token(self) -> bytes | None:
        if self.token_file is None:
            return None
        token = self.token_file.read_bytes().strip()
        if not token:
            raise VigilError(f"kubernetes.audit_webhook: the bearer token file {self.token_file} is empty")
        if self.token_file.stat().st_mode & 0o077:
            log.warning("audit webhook: %s is readable by other users; chmod 600 it", self.token_file)
        return token


def refusal(cert: Any, authorization: str, client_names: list[str], token: bytes | None) -> tuple[int, str] | None:
    """None when the client may post (an allowed certificate CN or the right bearer token), else the
    HTTP status (401, or 403 for a certificate we trust but a name we do not) and why, for the log."""
    names = common_names(cert)
    if any(n in client_names for n in names):
        return None
    given = authorization[7:].strip().encode() if authorization[:7].lower() == "bearer " else b""
    if token is not None and hmac.compare_digest(given, token):
        return None
    if names:
        return 403, f"client certificate CN {names[0]!r} is not in client_names"
    if authorization:
        return 401, "wrong credentials in the Authorization header"
    return 401, "no client certificate and no bearer token"


def common_names(cert: Any) -> list[str]:
    """The subject CNs of a verified peer certificate (`getpeercert()`: RDNs of (key, value) pairs)."""
    if not isinstance(cert, dict):
        return []
    return [str(pair[1]) for rdn in cert.get("subject", ()) for pair in rdn
            if len(pair) == 2 and pair[0] == "commonName"]
