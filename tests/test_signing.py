"""records/signing.py: detached JWS with the x5c chain from a CA the test makes; each check
(bytes, chain, validity at the signing time, signing time itself, format) fails on its own."""

from __future__ import annotations

import base64
import json
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import Certificate

from records.signing import (
    DevCa,
    KeyStore,
    Signer,
    SigningError,
    ca_certificate,
    clinician_certificate,
    new_key,
    sign,
    verify,
)
from rooms.models import utcnow

DOC = '{"text":"建议：术前化疗两周期","version":1}'.encode()


def make_chain(days: int = 365, ca_days: int = 3650, back: timedelta = timedelta(0)
               ) -> tuple[Certificate, Signer]:
    ca_key = new_key()
    ca = ca_certificate("Test CA", ca_key, days=ca_days, not_before=utcnow() - back
                        - timedelta(minutes=5))
    key = new_key()
    cert = clinician_certificate("dr-zhang", "Zhang Wei", key.public_key(), ca_key, ca,
                                 days=days, not_before=utcnow() - back - timedelta(minutes=5))
    return ca, Signer(key, [cert])


def failure(content: bytes, signature: str, anchors: list[Certificate],
            now: datetime | None = None) -> str:
    with pytest.raises(SigningError) as info:
        verify(content, signature, anchors, now=now)
    return info.value.code


def test_a_signature_verifies_and_names_its_signer_and_time() -> None:
    ca, signer = make_chain()
    signature = sign(DOC, signer)
    header, payload, _ = signature.split(".")
    assert payload == ""  # detached: the document is not inside the signature
    fields = json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))
    assert fields["alg"] == "ES256" and len(fields["x5c"]) == 1 and fields["sigT"]
    checked = verify(DOC, signature, [ca])
    assert "dr-zhang" in checked.subject and "Zhang Wei" in checked.subject
    assert checked.issuer == "CN=Test CA"
    assert abs((checked.signed_at - utcnow()).total_seconds()) < 5


def test_one_changed_byte_fails_as_bad_signature() -> None:
    ca, signer = make_chain()
    signature = sign(DOC, signer)
    tampered = DOC.replace("两".encode(), "三".encode())
    assert failure(tampered, signature, [ca]) == "bad_signature"
    assert failure(DOC + b" ", signature, [ca]) == "bad_signature"


def test_a_certificate_from_another_ca_is_untrusted() -> None:
    _, signer = make_chain()
    other_ca, _ = make_chain()
    assert failure(DOC, sign(DOC, signer), [other_ca]) == "untrusted_chain"
    assert failure(DOC, sign(DOC, signer), []) == "no_trust_anchor"


def test_the_certificate_must_be_valid_at_the_signing_time() -> None:
    # valid from 10 days ago for one day: a signature made now is outside it
    ca, signer = make_chain(days=1, back=timedelta(days=10))
    assert failure(DOC, sign(DOC, signer), [ca]) == "certificate_not_valid"
    # signed while it was valid: still verifies today, after it expired
    made_then = sign(DOC, signer, at=utcnow() - timedelta(days=9, hours=20))
    assert verify(DOC, made_then, [ca]).signed_at < utcnow() - timedelta(days=9)


def test_a_signing_time_in_the_future_is_refused() -> None:
    ca, signer = make_chain()
    later = sign(DOC, signer, at=utcnow() + timedelta(hours=2))
    assert failure(DOC, later, [ca]) == "future_signing_time"
    assert verify(DOC, later, [ca], now=utcnow() + timedelta(hours=3))


def test_a_changed_header_or_chain_fails() -> None:
    ca, signer = make_chain()
    signature = sign(DOC, signer)
    header, _, sig = signature.split(".")
    fields = json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))
    fields["sigT"] = "2026-01-01T00:00:00Z"  # backdated: the signature no longer matches
    forged = base64.urlsafe_b64encode(json.dumps(fields).encode()).decode().rstrip("=")
    assert failure(DOC, f"{forged}..{sig}", [ca]) in ("bad_signature", "certificate_not_valid")
    _, other = make_chain()  # someone else's certificate put in the chain
    fields = json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))
    fields["x5c"] = [base64.b64encode(other.certificate.public_bytes(Encoding.DER)).decode()]
    swapped = base64.urlsafe_b64encode(json.dumps(fields).encode()).decode().rstrip("=")
    assert failure(DOC, f"{swapped}..{sig}", [ca]) == "bad_signature"


@pytest.mark.parametrize("garbage", ["", "abc", "a.b.c", "e30..AAAA", "not base64!..x",
                                     "eyJ4NWMiOlsiISJdfQ..AAAA"])
def test_garbage_is_a_format_error(garbage: str) -> None:
    ca, _ = make_chain()
    assert failure(DOC, garbage, [ca]) == "bad_format"


def test_small_rsa_keys_are_refused() -> None:
    ca_key = new_key()
    ca = ca_certificate("Test CA", ca_key)
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    cert = clinician_certificate("dr-x", "X", new_key().public_key(), ca_key, ca)
    with pytest.raises(SigningError) as info:
        sign(DOC, Signer(weak, [cert]))
    assert info.value.code == "unsupported_key"


def test_key_store_without_a_key_says_what_to_do(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys", [])
    with pytest.raises(SigningError) as info:
        store.signer("dr-nobody", "Nobody")
    assert info.value.code == "no_signing_key" and "records.signing.keys_dir" in str(info.value)
    with pytest.raises(SigningError):
        store.signer("../etc/passwd", "x")


def test_the_dev_ca_issues_on_first_use_and_keeps_its_key(tmp_path: Path) -> None:
    dev = DevCa(tmp_path / "dev-ca")
    store = KeyStore(tmp_path / "keys", [dev.cert], dev)
    signer = store.signer("dr-li", "Li Na")
    assert verify(DOC, sign(DOC, signer), [dev.cert]).subject.startswith("UID=dr-li")
    again = DevCa(tmp_path / "dev-ca")  # a restart: the same CA
    assert again.cert == dev.cert
    assert store.signer("dr-li", "Li Na").certificate == signer.certificate
    assert (tmp_path / "keys" / "dr-li.key.pem").stat().st_mode & 0o077 == 0
