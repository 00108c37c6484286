"""A hospital CA made by the tests (with ``cryptography``) and clinicians' signing keys from it,
laid out as ``records.signing`` expects them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from records.signing import (
    ca_certificate,
    cert_pem,
    clinician_certificate,
    new_key,
    pem,
)


@dataclass
class HospitalCa:
    folder: Path
    key: ec.EllipticCurvePrivateKey

    def __post_init__(self) -> None:
        self.cert = ca_certificate("Test Hospital CA", self.key)
        self.keys_dir = self.folder / "keys"
        self.keys_dir.mkdir(parents=True, exist_ok=True)
        self.anchors = self.folder / "ca.pem"
        self.anchors.write_bytes(cert_pem(self.cert))

    def issue(self, identity: str, name: str, days: int = 365,
              not_before: datetime | None = None) -> None:
        key = new_key()
        cert = clinician_certificate(identity, name, key.public_key(), self.key, self.cert,
                                     days=days, not_before=not_before)
        (self.keys_dir / f"{identity}.key.pem").write_bytes(pem(key))
        (self.keys_dir / f"{identity}.crt.pem").write_bytes(cert_pem(cert))

    def settings(self) -> dict[str, Any]:
        return {"records": {"signing": {"trust_anchors": str(self.anchors),
                                        "keys_dir": str(self.keys_dir)}}}


def make_ca(folder: Path) -> HospitalCa:
    return HospitalCa(folder, new_key())
