"""Electronic signatures of clinical documents: JWS (RFC 7515) with a detached payload and the
signer's X.509 certificate chain in ``x5c``, the way Chinese internet hospitals sign records
with a certificate from the hospital's CA.

A signature is ``<protected header>..<signature>`` (compact JWS, payload detached, RFC 7515
appendix F) over the exact bytes of the document. The header carries ``alg`` (ES256 for an EC
P-256 key, PS256 for RSA), ``x5c`` (the signer's certificate, then intermediates, base64 DER)
and ``sigT`` (the signing time, as in ETSI JAdES). :func:`verify` checks, in this order: the
signature over the bytes, the chain up to one of the trust anchors (the hospital CA, from
configuration) *at the signing time*, and that the signing time is not in the future.
PyJWT makes and checks the JWS; ``cryptography`` builds and validates the chain.

Keys: each clinician's private key and certificate sit in ``records.signing.keys_dir`` as
``<identity>.key.pem`` and ``<identity>.crt.pem`` (the certificate, then any intermediates),
as a hospital's signing service would hold them. In dev mode, without configured anchors, a
development CA in ``<data_dir>/dev-ca`` issues a certificate to a clinician the first time
they sign; its signatures verify only against that dev CA.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509 import verification
from cryptography.x509.oid import NameOID

from huizhen.config import Settings
from rooms.models import utcnow

_IDENTITY = re.compile(r"[A-Za-z0-9._@-]{1,128}")
CLOCK_SKEW = timedelta(minutes=5)


class SigningError(Exception):
    """Signing or verifying failed; ``code`` says which check (docs/records.md)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Signer:
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
    chain: list[x509.Certificate]  # the signer's certificate first

    @property
    def certificate(self) -> x509.Certificate:
        return self.chain[0]


@dataclass(frozen=True)
class Verified:
    """What a valid signature tells: who signed (the certificate's subject) and when."""

    subject: str
    serial: str
    issuer: str
    signed_at: datetime
    cert_sha256: str

    def as_dict(self) -> dict[str, str]:
        return {"subject": self.subject, "serial": self.serial, "issuer": self.issuer,
                "signed_at": self.signed_at.isoformat(), "cert_sha256": self.cert_sha256}


def cert_sha256(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


def _algorithm(key: object) -> str:
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        if key.curve.name != "secp256r1":
            raise SigningError("unsupported_key", f"EC keys must be P-256, not {key.curve.name}")
        return "ES256"
    if isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey):
        if key.key_size < 2048:
            raise SigningError("unsupported_key", "RSA keys must be at least 2048 bits")
        return "PS256"
    raise SigningError("unsupported_key", "signing keys must be EC P-256 or RSA ≥ 2048 bits")


def sign(content: bytes, signer: Signer, at: datetime | None = None) -> str:
    """A detached JWS over ``content`` by ``signer``."""
    when = (at or utcnow()).astimezone(UTC).replace(microsecond=0)
    header = {
        "x5c": [base64.b64encode(c.public_bytes(serialization.Encoding.DER)).decode()
                for c in signer.chain],
        "sigT": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    return jwt.api_jws.PyJWS().encode(content, signer.key, algorithm=_algorithm(signer.key),
                                      headers=header, is_payload_detached=True)


def _header(signature: str) -> dict[str, object]:
    parts = signature.strip().split(".")
    if len(parts) != 3 or parts[1]:
        raise SigningError("bad_format", "not a detached JWS (expected header..signature)")
    try:
        header = json.loads(base64.urlsafe_b64decode(parts[0] + "=" * (-len(parts[0]) % 4)))
    except (ValueError, UnicodeDecodeError) as exc:
        raise SigningError("bad_format", "the JWS header is not base64url JSON") from exc
    if not isinstance(header, dict):
        raise SigningError("bad_format", "the JWS header is not a JSON object")
    return header


def _chain(header: dict[str, object]) -> list[x509.Certificate]:
    x5c = header.get("x5c")
    if not isinstance(x5c, list) or not x5c or not all(isinstance(c, str) for c in x5c):
        raise SigningError("bad_format", "the JWS header has no x5c certificate chain")
    try:
        return [x509.load_der_x509_certificate(base64.b64decode(c, validate=True))
                for c in x5c]
    except ValueError as exc:
        raise SigningError("bad_format", f"a certificate in x5c cannot be read: {exc}") from exc


def _signing_time(header: dict[str, object]) -> datetime:
    value = header.get("sigT")
    try:
        if not isinstance(value, str):
            raise ValueError(value)
        return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError as exc:
        raise SigningError("bad_format", "the JWS header has no valid sigT signing time") \
            from exc


def verify(content: bytes, signature: str, anchors: list[x509.Certificate],
           now: datetime | None = None) -> Verified:
    """Check ``signature`` over ``content``: the bytes, the chain to ``anchors`` at the signing
    time, the time itself. Raises :class:`SigningError` naming the failed check."""
    header = _header(signature)
    chain = _chain(header)
    signed_at = _signing_time(header)
    leaf = chain[0]
    public_key = leaf.public_key()
    if not isinstance(public_key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
        raise SigningError("unsupported_key", "the signer's key is neither EC nor RSA")
    try:
        algorithm = _algorithm(public_key)
        jwt.api_jws.PyJWS().decode_complete(signature.strip(), key=public_key,
                                            algorithms=[algorithm], detached_payload=content)
    except jwt.InvalidSignatureError as exc:
        raise SigningError("bad_signature", "the signature does not match the document: it "
                           "was changed after signing, or signed by another key") from exc
    except jwt.PyJWTError as exc:
        raise SigningError("bad_format", f"the JWS cannot be checked: {exc}") from exc
    if signed_at > (now or utcnow()) + CLOCK_SKEW:
        raise SigningError("future_signing_time", f"signed at {signed_at.isoformat()}, which "
                           "is in the future: the signer's clock or the document is wrong")
    if not anchors:
        raise SigningError("no_trust_anchor", "no trusted CA is configured "
                           "(records.signing.trust_anchors)")
    if not leaf.not_valid_before_utc <= signed_at <= leaf.not_valid_after_utc:
        raise SigningError("certificate_not_valid", "the signer's certificate was not valid "
                           f"at the signing time {signed_at.isoformat()} (valid "
                           f"{leaf.not_valid_before_utc.isoformat()} to "
                           f"{leaf.not_valid_after_utc.isoformat()})")
    builder = verification.PolicyBuilder().store(verification.Store(anchors)).time(
        signed_at).extension_policies(
        ca_policy=verification.ExtensionPolicy.webpki_defaults_ca(),
        ee_policy=verification.ExtensionPolicy.permit_all())
    try:
        builder.build_client_verifier().verify(leaf, chain[1:])
    except verification.VerificationError as exc:
        raise SigningError("untrusted_chain", "the signer's certificate does not chain to a "
                           f"trusted CA at the signing time: {exc}") from exc
    _check_usage(leaf)
    return Verified(subject=leaf.subject.rfc4514_string(), serial=format(leaf.serial_number, "x"),
                    issuer=leaf.issuer.rfc4514_string(), signed_at=signed_at,
                    cert_sha256=cert_sha256(leaf))


def _check_usage(leaf: x509.Certificate) -> None:
    try:
        usage = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return
    if not (usage.digital_signature or usage.content_commitment):
        raise SigningError("untrusted_chain", "the signer's certificate is not for signing "
                           "(key usage has neither digitalSignature nor nonRepudiation)")


def load_certificates(data: bytes) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise SigningError("bad_certificate", f"not PEM certificates: {exc}") from exc


def content_sha256(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


# ---- where the keys are -------------------------------------------------------------------

class KeyStore:
    """Clinicians' signing keys and certificates in a folder (see the module docstring)."""

    def __init__(self, keys_dir: Path, anchors: list[x509.Certificate],
                 dev_ca: DevCa | None = None) -> None:
        self.keys_dir = keys_dir
        self.anchors = anchors
        self._dev_ca = dev_ca

    def signer(self, identity: str, name: str) -> Signer:
        if not _IDENTITY.fullmatch(identity):
            raise SigningError("no_signing_key", "this identity cannot have a signing key file")
        key_path = self.keys_dir / f"{identity}.key.pem"
        cert_path = self.keys_dir / f"{identity}.crt.pem"
        if not key_path.exists() and self._dev_ca is not None:
            self._dev_ca.issue(identity, name, key_path, cert_path)
        if not key_path.exists() or not cert_path.exists():
            raise SigningError("no_signing_key", "you have no signing certificate on this "
                               "server: ask IT to install your key and certificate from the "
                               "hospital CA (records.signing.keys_dir)")
        try:
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        except (ValueError, TypeError) as exc:
            raise SigningError("no_signing_key", f"your signing key file cannot be read: "
                               f"{exc}") from exc
        if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
            raise SigningError("unsupported_key", "signing keys must be EC P-256 or RSA")
        return Signer(key=key, chain=load_certificates(cert_path.read_bytes()))


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def ca_certificate(name: str, key: ec.EllipticCurvePrivateKey, days: int = 3650,
                   not_before: datetime | None = None) -> x509.Certificate:
    """A self-signed CA certificate (the dev CA; tests make theirs the same way)."""
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    start = not_before or utcnow() - timedelta(minutes=5)
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(start + timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False,
                                         decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .sign(key, hashes.SHA256()))


def clinician_certificate(identity: str, name: str, public_key: ec.EllipticCurvePublicKey,
                          ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate,
                          days: int = 365, not_before: datetime | None = None
                          ) -> x509.Certificate:
    """A signing certificate for one clinician, issued by ``ca_cert``."""
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name),
                         x509.NameAttribute(NameOID.USER_ID, identity)])
    start = not_before or utcnow() - timedelta(minutes=5)
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(ca_cert.subject)
            .public_key(public_key).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(start + timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=True,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))


def pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def cert_pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


class DevCa:
    """Dev mode only: a CA in ``folder`` that issues a clinician a certificate when they first
    sign, so that signing works out of the box (``make run``). Never used outside dev mode."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        key_path, cert_path = folder / "ca.key.pem", folder / "ca.crt.pem"
        if not key_path.exists():
            folder.mkdir(parents=True, exist_ok=True)
            key = new_key()
            cert = ca_certificate("Huizhen development CA (not for clinical use)", key)
            key_path.write_bytes(pem(key))
            key_path.chmod(0o600)
            cert_path.write_bytes(cert_pem(cert))
        loaded = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        assert isinstance(loaded, ec.EllipticCurvePrivateKey)
        self.key = loaded
        self.cert = x509.load_pem_x509_certificate(cert_path.read_bytes())

    def issue(self, identity: str, name: str, key_path: Path, cert_path: Path) -> None:
        key = new_key()
        cert = clinician_certificate(identity, name or identity, key.public_key(), self.key,
                                     self.cert)
        key_path.parent.mkdir(parents=True, exist_ok=True)
        key_path.write_bytes(pem(key))
        key_path.chmod(0o600)
        cert_path.write_bytes(cert_pem(cert))


def key_store(settings: Settings) -> KeyStore:
    """The configured keys and anchors; in dev mode without anchors, the dev CA."""
    config = settings.records.signing
    keys_dir = config.keys_dir or settings.data_dir / "signing-keys"
    if config.trust_anchors is not None:
        try:
            anchors = load_certificates(config.trust_anchors.read_bytes())
        except OSError as exc:
            raise SigningError("bad_certificate", f"records.signing.trust_anchors: cannot read "
                               f"{config.trust_anchors}: {exc.strerror}") from exc
        return KeyStore(keys_dir, anchors)
    if settings.mode == "dev":
        dev_ca = DevCa(settings.data_dir / "dev-ca")
        return KeyStore(keys_dir, [dev_ca.cert], dev_ca)
    return KeyStore(keys_dir, [])  # signing is refused with no_trust_anchor until set
