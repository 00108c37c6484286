"""TLS for the HTTP/WebSocket server: configured files, or a self-signed pair for LAN tests.

Phones on a LAN need HTTPS for getUserMedia; a self-signed certificate (accepted once on the
phone) is the quickest way to try the service with real devices. It is refused outside dev mode.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import ssl
from pathlib import Path

import ifaddr
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from huizhen.config import ConfigError, Settings

log = logging.getLogger("huizhen.tls")


def _local_ips() -> list[str]:
    ips = {"127.0.0.1"}
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            if isinstance(ip.ip, str):
                ips.add(ip.ip)
    return sorted(ips)


def self_signed(folder: Path, hosts: list[str]) -> tuple[Path, Path]:
    """Create (or reuse) a self-signed certificate valid for ``hosts`` (names or IPs)."""
    cert_path, key_path = folder / "self-signed.crt", folder / "self-signed.key"
    if cert_path.exists() and key_path.exists():
        return cert_path, key_path
    folder.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Huizhen dev")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=365))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .sign(key, hashes.SHA256()))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    log.info("created a self-signed certificate", extra={"path": str(cert_path),
                                                          "hosts": hosts})
    return cert_path, key_path


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    tls = settings.server.tls
    if not tls.enabled:
        return None
    if tls.self_signed:
        cert, key = self_signed(settings.data_dir / "tls", ["localhost", *_local_ips()])
    else:
        assert tls.cert_file is not None and tls.key_file is not None
        cert, key = tls.cert_file, tls.key_file
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(str(cert), str(key))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"server.tls: cannot load certificate {cert} / key {key}: {exc}") \
            from exc
    return context
