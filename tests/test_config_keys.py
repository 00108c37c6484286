"""huizhen/config.py: recording storage, upload and encryption options, and the key sets
(encryption and audit keys: validation, rotation, kept out of files in production)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from huizhen.config import ConfigError, audit_keys, load_settings
from tests.test_config import AUDIT_KEYS, clean_env, production, write_yaml  # noqa: F401

# ---- recording storage, upload and encryption ------------------------------------------------

KEY_A = base64.b64encode(b"\x0a" * 32).decode()
KEY_B = base64.b64encode(b"\x0b" * 32).decode()
S3_FULL = {"backend": "s3", "s3": {"endpoint_url": "https://minio.hospital.internal:9000/",
                                   "bucket": "recordings", "prefix": "/huizhen/",
                                   "access_key_id": "AKIA-HUIZHEN",
                                   "secret_access_key": "s3-secret-value"}}


def test_recording_defaults() -> None:
    recording = load_settings().recording
    assert recording.workers == 1
    assert recording.storage.backend == "local"
    assert recording.storage.s3.addressing_style == "path"
    assert recording.storage.s3.part_size_mb == 8
    assert recording.storage.s3.verify_tls is True
    assert (recording.upload.attempts, recording.upload.keep_local) == (8, False)
    assert recording.upload.backoff_s == 2.0 and recording.upload.max_backoff_s == 120.0
    assert recording.encryption.keys == {} and not recording.encryption.enabled


def test_recording_s3_from_file_and_environment(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_yaml(tmp_path / "c.yaml", {"recording": {"folder": "/mnt/rec",
                                                          "storage": {"backend": "s3"}}})
    monkeypatch.setenv("HUIZHEN_RECORDING__STORAGE__S3__BUCKET", "from-env")
    monkeypatch.setenv("HUIZHEN_RECORDING__STORAGE__S3__ENDPOINT_URL", "http://10.0.0.9:9000/")
    monkeypatch.setenv("HUIZHEN_RECORDING__STORAGE__S3__SECRET_ACCESS_KEY", "s3-secret-value")
    monkeypatch.setenv("HUIZHEN_RECORDING__UPLOAD__ATTEMPTS", "9")
    monkeypatch.setenv("HUIZHEN_RECORDING__ENCRYPTION__KEYS", json.dumps({"2025-01": KEY_A}))
    monkeypatch.setenv("HUIZHEN_RECORDING__ENCRYPTION__ACTIVE_KEY", "2025-01")
    settings = load_settings(path)
    recording = settings.recording
    assert recording.folder == Path("/mnt/rec")  # the file's values stay beside the env's
    assert recording.storage.backend == "s3"
    assert recording.storage.s3.bucket == "from-env"
    assert recording.storage.s3.endpoint_url == "http://10.0.0.9:9000"
    assert recording.storage.s3.secret_access_key.get_secret_value() == "s3-secret-value"
    assert recording.upload.attempts == 9
    assert recording.encryption.enabled
    assert recording.encryption.key_bytes() == {"2025-01": b"\x0a" * 32}
    # secrets stay out of reprs (and so out of logs that print the settings)
    assert "s3-secret-value" not in repr(settings) and KEY_A not in repr(settings)


@pytest.mark.parametrize(("recording", "option", "needle"), [
    ({"storage": {"backend": "s3"}}, "recording.storage", "s3.bucket"),
    ({"storage": {"backend": "nfs"}}, "recording.storage.backend", "local"),
    ({"storage": {"s3": {"endpoint_url": "minio:9000"}}}, "recording.storage.s3.endpoint_url",
     "http"),
    ({"storage": {"s3": {"part_size_mb": 4}}}, "recording.storage.s3.part_size_mb", "5"),
    ({"storage": {"s3": {"prefix": "a/../b"}}}, "recording.storage.s3.prefix", ".."),
    ({"storage": {"s3": {"addressing_style": "dns"}}}, "recording.storage.s3.addressing_style",
     "path"),
    ({"upload": {"attempts": 0}}, "recording.upload.attempts", "1"),
    ({"upload": {"backoff_s": -1}}, "recording.upload.backoff_s", "0"),
    ({"encryption": {"keys": {"k": base64.b64encode(b"short").decode()}, "active_key": "k"}},
     "recording.encryption.keys", "32"),
    ({"encryption": {"keys": {"k": "not base64!"}, "active_key": "k"}},
     "recording.encryption.keys", "base64"),
    ({"encryption": {"keys": {"bad id": KEY_A}, "active_key": "bad id"}},
     "recording.encryption.keys", "key id"),
    ({"encryption": {"keys": {"a": KEY_A}, "active_key": "b"}}, "recording.encryption",
     "active_key 'b'"),
    ({"encryption": {"keys": {"a": KEY_A}}}, "recording.encryption", "active_key is empty"),
    ({"encryption": {"active_key": "a"}}, "recording.encryption", "active_key 'a'"),
])
def test_invalid_recording_options_name_the_option(
        tmp_path: Path, recording: dict[str, Any], option: str, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(write_yaml(tmp_path / "c.yaml", {"recording": recording}))
    message = str(info.value)
    assert option in message, message
    assert needle in message, message
    assert "HUIZHEN_RECORDING__" in message, message


def test_invalid_key_errors_do_not_echo_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    leaked = base64.b64encode(b"\x0c" * 31).decode()
    monkeypatch.setenv("HUIZHEN_RECORDING__ENCRYPTION__KEYS", json.dumps({"k": leaked}))
    monkeypatch.setenv("HUIZHEN_RECORDING__ENCRYPTION__ACTIVE_KEY", "k")
    with pytest.raises(ConfigError, match=r"recording\.encryption\.keys") as info:
        load_settings()
    assert leaked not in str(info.value)


def test_production_refuses_s3_without_credentials(tmp_path: Path) -> None:
    s3 = {"backend": "s3", "s3": {"bucket": "recordings"}}
    with pytest.raises(ConfigError) as info:
        load_settings(Path("/dev/null"), **production(tmp_path, recording={"storage": s3}))
    message = str(info.value)
    assert "HUIZHEN_RECORDING__STORAGE__S3__ACCESS_KEY_ID" in message
    assert "HUIZHEN_RECORDING__STORAGE__S3__SECRET_ACCESS_KEY" in message
    # dev mode lets botocore find credentials its own way (env, ~/.aws)
    assert load_settings(Path("/dev/null"), recording={"storage": s3}).recording.storage


def test_production_accepts_s3_with_credentials(tmp_path: Path) -> None:
    settings = load_settings(Path("/dev/null"),
                             **production(tmp_path, recording={"storage": S3_FULL}))
    assert settings.recording.storage.s3.prefix == "huizhen"
    assert settings.recording.storage.s3.endpoint_url == "https://minio.hospital.internal:9000"


def test_production_refuses_encryption_keys_in_the_config_file(tmp_path: Path) -> None:
    encryption = {"keys": {"2025-01": KEY_A}, "active_key": "2025-01"}
    path = write_yaml(tmp_path / "c.yaml", production(tmp_path,
                                                      recording={"encryption": encryption}))
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    message = str(info.value)
    assert "HUIZHEN_RECORDING__ENCRYPTION__KEYS" in message and str(path) in message
    assert KEY_A not in message
    # in dev mode a file is fine (test keys)
    dev = write_yaml(tmp_path / "dev.yaml", {"recording": {"encryption": encryption}})
    assert load_settings(dev).recording.encryption.enabled


def test_production_takes_encryption_keys_from_the_environment(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = production(tmp_path, recording={"encryption": {"active_key": "2025-02"}})
    data.pop("records")  # its keys in the environment too
    path = write_yaml(tmp_path / "c.yaml", data)
    monkeypatch.setenv("HUIZHEN_RECORDS__AUDIT__KEYS", json.dumps(AUDIT_KEYS["keys"]))
    monkeypatch.setenv("HUIZHEN_RECORDS__AUDIT__ACTIVE_KEY", "a1")
    monkeypatch.setenv("HUIZHEN_RECORDING__ENCRYPTION__KEYS",
                       json.dumps({"2025-01": KEY_A, "2025-02": KEY_B}))
    encryption = load_settings(path).recording.encryption
    assert encryption.active_key == "2025-02"
    assert encryption.key_bytes() == {"2025-01": b"\x0a" * 32, "2025-02": b"\x0b" * 32}


# ---- key sets: the audit log's keys, keys kept out of files ---------------------------------

def test_production_refuses_no_audit_key(tmp_path: Path) -> None:
    data = production(tmp_path)
    del data["records"]
    with pytest.raises(ConfigError, match="HUIZHEN_RECORDS__AUDIT__KEYS"):
        load_settings(Path("/dev/null"), **data)


def test_production_refuses_audit_keys_written_in_the_file(tmp_path: Path) -> None:
    """As the encryption keys (above): fine in a dev machine's file, from the environment
    in production (a config file gets copied and committed)."""
    data = production(tmp_path)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    option, env = "records.audit", "HUIZHEN_RECORDS__AUDIT__KEYS"
    with pytest.raises(ConfigError, match=rf"{option}\.keys is written in .*{env}"):
        load_settings(path)
    data["mode"] = "dev"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    assert load_settings(path).mode == "dev"


def test_audit_keys_in_dev_mode_are_made_once_and_kept(tmp_path: Path) -> None:
    settings = load_settings(Path("/dev/null"), data_dir=str(tmp_path / "d"))
    keys, active = audit_keys(settings)
    assert active == "dev" and len(keys["dev"]) == 32
    assert (tmp_path / "d" / "dev-audit-key").stat().st_mode & 0o077 == 0
    assert audit_keys(load_settings(Path("/dev/null"), data_dir=str(tmp_path / "d"))) == (
        keys, active)
    configured = load_settings(Path("/dev/null"), data_dir=str(tmp_path / "e"),
                               records={"audit": AUDIT_KEYS})
    assert audit_keys(configured) == ({"a1": b"\x07" * 32}, "a1")
    assert not (tmp_path / "e" / "dev-audit-key").exists()
