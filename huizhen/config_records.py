"""The options of recording/ and records/: where recordings are stored (a folder or S3), how
uploads retry, the keys that encrypt recordings and seal the audit log, retention, FHIR.
Part of the one ``Settings`` model (huizhen/config.py), which puts them under ``recording``
and ``records``.
"""

from __future__ import annotations

import base64
import binascii
import re
from pathlib import Path
from typing import ClassVar, Literal
from urllib.parse import urlparse

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator

#: Smallest multipart part S3 accepts (every part but the last).
S3_MIN_PART_MB = 5
KEY_ID = r"^[A-Za-z0-9._-]{1,64}$"


class S3Config(BaseModel):
    """An S3-compatible bucket (AWS S3, MinIO, Ceph RGW, a cloud OSS with an S3 endpoint)."""

    endpoint_url: str = ""
    region: str = "us-east-1"
    bucket: str = ""
    prefix: str = ""
    access_key_id: str = ""
    secret_access_key: SecretStr = SecretStr("")
    addressing_style: Literal["path", "virtual", "auto"] = "path"
    part_size_mb: int = Field(8, ge=S3_MIN_PART_MB, le=5 * 1024)
    verify_tls: bool = True

    @field_validator("endpoint_url")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        if value:
            parsed = urlparse(value)
            if parsed.scheme not in ("http", "https") or not parsed.netloc:
                raise ValueError("must be an http(s) URL such as https://minio.hospital.internal")
        return value.rstrip("/")

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        value = value.strip("/")
        if ".." in value.split("/"):
            raise ValueError("must not contain '..'")
        return value


class StorageConfig(BaseModel):
    backend: Literal["local", "s3"] = "local"
    s3: S3Config = S3Config()

    @model_validator(mode="after")
    def _bucket(self) -> StorageConfig:
        if self.backend == "s3" and not self.s3.bucket:
            raise ValueError("backend s3 needs s3.bucket (HUIZHEN_RECORDING__STORAGE__S3__BUCKET)")
        return self


class UploadConfig(BaseModel):
    attempts: int = Field(8, ge=1, le=100)
    backoff_s: float = Field(2.0, ge=0)
    max_backoff_s: float = Field(120.0, ge=0)
    keep_local: bool = False


class KeySet(BaseModel):
    """Keys as base64 of 32 random bytes, by key id; ``active_key`` is used for new data, the
    others stay for reading (rotation). ``OPTION`` names the option in messages."""

    OPTION: ClassVar[str] = ""
    keys: dict[str, SecretStr] = {}
    active_key: str = ""

    @field_validator("keys")
    @classmethod
    def _keys(cls, value: dict[str, SecretStr]) -> dict[str, SecretStr]:
        for key_id, key in value.items():
            if not re.match(KEY_ID, key_id):
                raise ValueError(f"key id {key_id!r}: use 1-64 characters of A-Z a-z 0-9 . _ -")
            if len(decode_key(key.get_secret_value())) != 32:
                raise ValueError(
                    f"key {key_id!r} must be base64 of exactly 32 random bytes; "
                    "generate one with: python -c 'import os,base64;"
                    "print(base64.b64encode(os.urandom(32)).decode())'")
        return value

    @model_validator(mode="after")
    def _active(self) -> KeySet:
        if self.active_key and self.active_key not in self.keys:
            raise ValueError(f"active_key {self.active_key!r} is not one of the key ids in keys "
                             f"(set them in {keys_env(self.OPTION)})")
        if self.keys and not self.active_key:
            raise ValueError("keys are set but active_key is empty: name the key id to use "
                             "for new data")
        return self

    @property
    def enabled(self) -> bool:
        return bool(self.active_key)

    def key_bytes(self) -> dict[str, bytes]:
        return {k: decode_key(v.get_secret_value()) for k, v in self.keys.items()}


def keys_env(option: str) -> str:
    """The environment variable of a key set's keys: HUIZHEN_RECORDS__AUDIT__KEYS and so on."""
    return "HUIZHEN_" + option.upper().replace(".", "__") + "__KEYS"


class EncryptionConfig(KeySet):
    """Encryption at rest of recordings (AES-256-GCM); empty: off."""

    OPTION: ClassVar[str] = "recording.encryption"


class AuditConfig(KeySet):
    """HMAC-SHA256 keys that seal the audit log's chain. Dev mode without keys: one is made in
    ``<data_dir>/dev-audit-key``; outside dev mode they are required."""

    OPTION: ClassVar[str] = "records.audit"


class RetentionConfig(BaseModel):
    """How long each artifact class is kept (days), from its end; then ``huizhen retention
    purge`` deletes it, unless its encounter is on legal hold."""

    #: audio/video recordings, from the end of the recording
    recordings_days: int = Field(3 * 365, ge=0)
    #: clinical documents (from their newest version) and MDT case images (from the upload)
    documents_days: int = Field(15 * 365, ge=0)


class FhirConfig(BaseModel):
    """The record as FHIR R4 at /fhir/ (docs/records.md)."""

    #: the identifier system of the hospital's patient references (a URI: its MRN's OID)
    patient_system: str = Field("urn:huizhen:patient-ref", min_length=1, pattern=r"^\S+:\S+$")


class SigningConfig(BaseModel):
    """Electronic signatures of clinical documents (records/signing.py, docs/records.md)."""

    #: PEM file with the hospital CA certificate(s) that signatures must chain to; empty in
    #: dev mode: a development CA in <data_dir>/dev-ca (never trusted outside dev mode)
    trust_anchors: Path | None = None
    #: folder with each clinician's <identity>.key.pem and <identity>.crt.pem; empty:
    #: <data_dir>/signing-keys
    keys_dir: Path | None = None


class RecordsConfig(BaseModel):
    audit: AuditConfig = AuditConfig()
    retention: RetentionConfig = RetentionConfig()
    fhir: FhirConfig = FhirConfig()
    signing: SigningConfig = SigningConfig()


def decode_key(text: str) -> bytes:
    try:
        return base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        return b""


class RecordingConfig(BaseModel):
    folder: Path | None = None
    workers: int = Field(1, ge=0, le=16)
    storage: StorageConfig = StorageConfig()
    upload: UploadConfig = UploadConfig()
    encryption: EncryptionConfig = EncryptionConfig()
