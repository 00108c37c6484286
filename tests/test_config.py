"""huizhen/config.py: defaults, YAML file, HUIZHEN_… overrides, validation, production checks."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
import yaml

from huizhen.config import (
    DEV_API_KEY,
    DEV_CREDENTIALS_FILE,
    MIN_SECRET_LENGTH,
    ApiKey,
    ConfigError,
    check_secure,
    ensure_dev_credentials,
    generate_secret,
    load_settings,
)

GOOD_SECRET = "k" * MIN_SECRET_LENGTH + "-production-secret"
METRICS_TOKEN = "m" * MIN_SECRET_LENGTH
AUDIT_KEYS = {"keys": {"a1": base64.b64encode(b"\x07" * 32).decode()}, "active_key": "a1"}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No HUIZHEN_… variable of the machine leaks in, and no ./config.yaml is picked up."""
    for name in list(os.environ):
        if name.upper().startswith("HUIZHEN_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def write_yaml(path: Path, data: Any) -> Path:
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def production(tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"mode": "production", "data_dir": str(tmp_path / "data"),
                            "auth": {"api_keys": [{"key": "hospital-his",
                                                   "secret": GOOD_SECRET}]},
                            "records": {"audit": AUDIT_KEYS},
                            "metrics": {"token": METRICS_TOKEN}}
    base.update(overrides)
    return base


# ---- defaults --------------------------------------------------------------------------------

def test_defaults_without_any_file_or_environment() -> None:
    settings = load_settings()
    assert settings.mode == "dev"
    assert settings.data_dir == Path("var")
    assert settings.server.host == "127.0.0.1"
    assert settings.server.port == 8080
    assert settings.server.public_url == ""
    assert not settings.server.tls.enabled
    assert settings.base_url == "http://127.0.0.1:8080"
    assert settings.database_url == "sqlite+aiosqlite:///var/huizhen.db"
    assert settings.recordings_folder == Path("var/recordings")
    assert settings.redis.url == ""
    assert settings.ice.gather_addresses == ["127.0.0.1"]
    assert settings.ice.stun_servers == []
    assert settings.ice.turn_servers == []
    assert settings.ice.ignore_mdns_candidates is True
    assert settings.auth.api_keys == []
    assert settings.auth.audience == "huizhen"
    assert settings.auth.default_token_ttl_s == 3600
    assert settings.auth.max_token_ttl_s == 7 * 24 * 3600
    assert settings.signaling.heartbeat_s == 3.0
    assert settings.signaling.max_message_bytes == 256 * 1024
    assert settings.media.video_codec == "VP8"
    assert settings.media.pli_throttle_ms == 500
    assert settings.logging.level == "INFO"
    assert settings.logging.format == "json"
    assert settings.secret_for("anything") is None


def test_dev_null_is_an_empty_file() -> None:
    assert load_settings(Path("/dev/null")).server.port == 8080


def test_config_yaml_in_the_working_folder_is_read(tmp_path: Path) -> None:
    write_yaml(tmp_path / "config.yaml", {"server": {"port": 9100}})
    assert load_settings().server.port == 9100


# ---- the YAML file ---------------------------------------------------------------------------

FILE = {
    "mode": "dev",
    "data_dir": "/srv/huizhen",
    "server": {"host": "0.0.0.0", "port": 8443, "public_url": "https://video.example.org/"},
    "database": {"url": "postgresql+asyncpg://huizhen@db/huizhen"},
    "redis": {"url": "redis://cache:6379/0"},
    "recording": {"folder": "/mnt/recordings"},
    "ice": {"gather_addresses": ["10.0.0.5", "127.0.0.1"],
            "announce_addresses": {"10.0.0.5": "203.0.113.7"},
            "stun_servers": ["stun:stun.example.org:3478"],
            "turn_servers": [{"url": "turn:turn.example.org:3478", "username": "u",
                              "credential": "c"}],
            "ignore_mdns_candidates": False},
    "auth": {"api_keys": [{"key": "his", "secret": GOOD_SECRET}], "audience": "hosp",
             "default_token_ttl_s": 600, "max_token_ttl_s": 7200},
    "signaling": {"heartbeat_s": 5, "max_message_bytes": 65536},
    "media": {"video_codec": "H264", "pli_throttle_ms": 250},
    "logging": {"level": "DEBUG", "format": "text"},
}


def test_yaml_file_values(tmp_path: Path) -> None:
    settings = load_settings(write_yaml(tmp_path / "huizhen.yaml", FILE))
    assert settings.data_dir == Path("/srv/huizhen")
    assert settings.server.host == "0.0.0.0"
    assert settings.server.port == 8443
    assert settings.server.public_url == "https://video.example.org"  # trailing / dropped
    assert settings.base_url == "https://video.example.org"
    assert settings.database_url == "postgresql+asyncpg://huizhen@db/huizhen"
    assert settings.redis.url == "redis://cache:6379/0"
    assert settings.recordings_folder == Path("/mnt/recordings")
    assert settings.ice.gather_addresses == ["10.0.0.5", "127.0.0.1"]
    assert settings.ice.announce_addresses == {"10.0.0.5": "203.0.113.7"}
    assert settings.ice.stun_servers == ["stun:stun.example.org:3478"]
    assert settings.ice.turn_servers[0].url == "turn:turn.example.org:3478"
    assert settings.ice.turn_servers[0].username == "u"
    assert settings.ice.ignore_mdns_candidates is False
    assert settings.secret_for("his") == GOOD_SECRET
    assert settings.primary_key == ApiKey(key="his", secret=GOOD_SECRET)
    assert settings.auth.audience == "hosp"
    assert settings.auth.default_token_ttl_s == 600
    assert settings.auth.max_token_ttl_s == 7200
    assert settings.signaling.heartbeat_s == 5
    assert settings.signaling.max_message_bytes == 65536
    assert settings.media.video_codec == "H264"
    assert settings.media.pli_throttle_ms == 250
    assert settings.logging.level == "DEBUG"
    assert settings.logging.format == "text"


def test_huizhen_config_env_names_the_file(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_yaml(tmp_path / "elsewhere.yaml", {"server": {"port": 9200}})
    write_yaml(tmp_path / "config.yaml", {"server": {"port": 9300}})
    monkeypatch.setenv("HUIZHEN_CONFIG", str(path))
    assert load_settings().server.port == 9200


def test_derived_values_from_the_data_dir(tmp_path: Path) -> None:
    settings = load_settings(write_yaml(tmp_path / "c.yaml", {"data_dir": str(tmp_path / "d")}))
    assert settings.database_url == f"sqlite+aiosqlite:///{tmp_path / 'd' / 'huizhen.db'}"
    assert settings.recordings_folder == tmp_path / "d" / "recordings"


def test_base_url_is_https_when_tls_is_on(tmp_path: Path) -> None:
    settings = load_settings(write_yaml(tmp_path / "c.yaml", {
        "server": {"host": "10.1.2.3", "port": 8443, "tls": {"self_signed": True}}}))
    assert settings.server.tls.enabled
    assert settings.base_url == "https://10.1.2.3:8443"


@pytest.mark.parametrize(("content", "needle"), [
    ("server: [unclosed", "not valid YAML"),
    ("- a\n- b\n", "mapping"),
    ("just a string\n", "mapping"),
])
def test_unusable_files(tmp_path: Path, content: str, needle: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ConfigError, match=needle) as info:
        load_settings(path)
    assert str(path) in str(info.value)


def test_missing_file_names_the_path_and_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(tmp_path / "nope.yaml")
    assert "nope.yaml" in str(info.value)
    assert "HUIZHEN_CONFIG" in str(info.value)


# ---- the environment -------------------------------------------------------------------------

def test_env_overrides_win_over_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_yaml(tmp_path / "c.yaml", FILE)
    monkeypatch.setenv("HUIZHEN_SERVER__PORT", "9443")
    monkeypatch.setenv("HUIZHEN_SIGNALING__MAX_MESSAGE_BYTES", "131072")
    monkeypatch.setenv("HUIZHEN_MEDIA__VIDEO_CODEC", "VP8")
    monkeypatch.setenv("HUIZHEN_LOGGING__LEVEL", "WARNING")
    monkeypatch.setenv("HUIZHEN_AUTH__AUDIENCE", "from-env")
    settings = load_settings(path)
    assert settings.server.port == 9443
    assert settings.signaling.max_message_bytes == 131072
    assert settings.media.video_codec == "VP8"
    assert settings.logging.level == "WARNING"
    assert settings.auth.audience == "from-env"
    # options the environment does not touch keep the file's values (a deep merge)
    assert settings.server.host == "0.0.0.0"
    assert settings.server.public_url == "https://video.example.org"
    assert settings.signaling.heartbeat_s == 5
    assert settings.media.pli_throttle_ms == 250
    assert settings.auth.default_token_ttl_s == 600
    assert settings.secret_for("his") == GOOD_SECRET


def test_env_names_are_case_insensitive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("huizhen_server__port", "9555")
    assert load_settings().server.port == 9555


def test_env_lists_and_maps_take_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUIZHEN_ICE__GATHER_ADDRESSES", '["10.0.0.5"]')
    monkeypatch.setenv("HUIZHEN_ICE__ANNOUNCE_ADDRESSES", '{"10.0.0.5": "198.51.100.2"}')
    monkeypatch.setenv("HUIZHEN_AUTH__API_KEYS",
                       json.dumps([{"key": "his", "secret": GOOD_SECRET}]))
    settings = load_settings()
    assert settings.ice.gather_addresses == ["10.0.0.5"]
    assert settings.ice.announce_addresses == {"10.0.0.5": "198.51.100.2"}
    assert settings.secret_for("his") == GOOD_SECRET


def test_env_wins_over_keyword_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUIZHEN_SERVER__PORT", "9666")
    assert load_settings(Path("/dev/null"), server={"port": 1234}).server.port == 9666


def test_keyword_overrides_replace_file_values(tmp_path: Path) -> None:
    path = write_yaml(tmp_path / "c.yaml", {"mode": "dev", "logging": {"level": "DEBUG"}})
    settings = load_settings(path, logging={"level": "ERROR"})
    assert settings.logging.level == "ERROR"


# ---- invalid values ---------------------------------------------------------------------------

@pytest.mark.parametrize(("variable", "value", "option"), [
    ("HUIZHEN_SERVER__PORT", "99999", "server.port"),
    ("HUIZHEN_SERVER__PORT", "eighty", "server.port"),
    ("HUIZHEN_SIGNALING__MAX_MESSAGE_BYTES", "10", "signaling.max_message_bytes"),
    ("HUIZHEN_SIGNALING__HEARTBEAT_S", "0", "signaling.heartbeat_s"),
    ("HUIZHEN_MEDIA__VIDEO_CODEC", "AV1", "media.video_codec"),
    ("HUIZHEN_MEDIA__PLI_THROTTLE_MS", "1", "media.pli_throttle_ms"),
    ("HUIZHEN_MODE", "staging", "mode"),
    ("HUIZHEN_DATABASE__URL", "mysql://db/huizhen", "database.url"),
    ("HUIZHEN_REDIS__URL", "http://cache", "redis.url"),
    ("HUIZHEN_SERVER__PUBLIC_URL", "video.example.org", "server.public_url"),
    ("HUIZHEN_LOGGING__LEVEL", "LOUD", "logging.level"),
    ("HUIZHEN_AUTH__DEFAULT_TOKEN_TTL_S", "0", "auth.default_token_ttl_s"),
])
def test_invalid_env_value_names_the_option_and_the_variable(
        monkeypatch: pytest.MonkeyPatch, variable: str, value: str, option: str) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    message = str(info.value)
    assert option in message, message
    assert variable in message, message


@pytest.mark.parametrize(("data", "option", "variable"), [
    ({"server": {"port": -1}}, "server.port", "HUIZHEN_SERVER__PORT"),
    ({"signaling": {"max_message_bytes": 100}}, "signaling.max_message_bytes",
     "HUIZHEN_SIGNALING__MAX_MESSAGE_BYTES"),
    ({"ice": {"gather_addresses": ["not-an-ip"]}}, "ice.gather_addresses",
     "HUIZHEN_ICE__GATHER_ADDRESSES"),
    ({"ice": {"gather_addresses": []}}, "ice.gather_addresses",
     "HUIZHEN_ICE__GATHER_ADDRESSES"),
    ({"ice": {"stun_servers": ["turn:x"]}}, "ice.stun_servers", "HUIZHEN_ICE__STUN_SERVERS"),
    ({"ice": {"announce_addresses": {"10.0.0.1": "public"}}}, "ice.announce_addresses",
     "HUIZHEN_ICE__ANNOUNCE_ADDRESSES"),
])
def test_invalid_file_value_names_the_option_and_the_variable(
        tmp_path: Path, data: dict[str, Any], option: str, variable: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(write_yaml(tmp_path / "c.yaml", data))
    message = str(info.value)
    assert option in message, message
    assert variable in message, message


def test_unknown_option_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="colour"):
        load_settings(write_yaml(tmp_path / "c.yaml", {"colour": "blue"}))


def test_turn_url_must_be_turn(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"ice\.turn_servers"):
        load_settings(write_yaml(tmp_path / "c.yaml",
                                 {"ice": {"turn_servers": [{"url": "stun:x"}]}}))


# ---- TLS -------------------------------------------------------------------------------------

def test_tls_cert_without_key_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(write_yaml(tmp_path / "c.yaml",
                                 {"server": {"tls": {"cert_file": "/etc/huizhen/cert.pem"}}}))
    message = str(info.value)
    assert "server.tls" in message
    assert "key_file" in message
    assert "HUIZHEN_SERVER__TLS" in message


def test_tls_key_without_cert_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUIZHEN_SERVER__TLS__KEY_FILE", "/etc/huizhen/key.pem")
    with pytest.raises(ConfigError, match="cert_file"):
        load_settings()


def test_tls_self_signed_and_cert_exclude_each_other(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="self_signed"):
        load_settings(write_yaml(tmp_path / "c.yaml", {"server": {"tls": {
            "self_signed": True, "cert_file": "/c.pem", "key_file": "/k.pem"}}}))


def test_tls_cert_and_key_together_are_fine(tmp_path: Path) -> None:
    settings = load_settings(write_yaml(tmp_path / "c.yaml", {"server": {"tls": {
        "cert_file": "/c.pem", "key_file": "/k.pem"}}}))
    assert settings.server.tls.enabled
    assert settings.server.tls.cert_file == Path("/c.pem")


# ---- production mode -------------------------------------------------------------------------

def test_production_without_api_keys_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(Path("/dev/null"), mode="production", data_dir=str(tmp_path))
    assert "HUIZHEN_AUTH__API_KEYS" in str(info.value)


def test_production_via_the_environment_without_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUIZHEN_MODE", "production")
    with pytest.raises(ConfigError, match="API key"):
        load_settings()


def test_production_with_the_dev_key_id_is_refused(tmp_path: Path) -> None:
    data = production(tmp_path, auth={"api_keys": [{"key": DEV_API_KEY,
                                                    "secret": GOOD_SECRET}]})
    with pytest.raises(ConfigError) as info:
        load_settings(Path("/dev/null"), **data)
    assert "development" in str(info.value)
    assert "huizhen key generate" in str(info.value)


def test_production_with_the_stored_dev_secret_is_refused(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / DEV_CREDENTIALS_FILE).write_text(
        json.dumps({"key": DEV_API_KEY, "secret": GOOD_SECRET}), encoding="utf-8")
    with pytest.raises(ConfigError, match="development"):
        load_settings(Path("/dev/null"), **production(tmp_path))


def test_production_with_a_short_secret_is_refused(tmp_path: Path) -> None:
    short = "s" * (MIN_SECRET_LENGTH - 1)
    data = production(tmp_path, auth={"api_keys": [{"key": "his", "secret": short}]})
    with pytest.raises(ConfigError) as info:
        load_settings(Path("/dev/null"), **data)
    assert "auth.api_keys[his].secret" in str(info.value)
    assert str(MIN_SECRET_LENGTH) in str(info.value)


def test_production_checks_every_key(tmp_path: Path) -> None:
    data = production(tmp_path, auth={"api_keys": [{"key": "his", "secret": GOOD_SECRET},
                                                   {"key": "pacs", "secret": "short"}]})
    with pytest.raises(ConfigError, match="pacs"):
        load_settings(Path("/dev/null"), **data)


def test_production_with_a_self_signed_certificate_is_refused(tmp_path: Path) -> None:
    data = production(tmp_path, server={"tls": {"self_signed": True}})
    with pytest.raises(ConfigError, match="self_signed"):
        load_settings(Path("/dev/null"), **data)


def test_production_with_a_proper_key_is_accepted(tmp_path: Path) -> None:
    secret = generate_secret()
    assert len(secret) >= MIN_SECRET_LENGTH
    data = production(tmp_path, auth={"api_keys": [{"key": "his", "secret": secret}]})
    settings = load_settings(Path("/dev/null"), **data)
    assert settings.mode == "production"
    assert settings.secret_for("his") == secret
    check_secure(settings)  # idempotent


def test_production_keys_from_the_environment(monkeypatch: pytest.MonkeyPatch,
                                              tmp_path: Path) -> None:
    monkeypatch.setenv("HUIZHEN_MODE", "production")
    monkeypatch.setenv("HUIZHEN_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("HUIZHEN_AUTH__API_KEYS",
                       json.dumps([{"key": "his", "secret": GOOD_SECRET}]))
    with pytest.raises(ConfigError, match="HUIZHEN_RECORDS__AUDIT__KEYS"):
        load_settings()  # the audit log's key is required too
    monkeypatch.setenv("HUIZHEN_RECORDS__AUDIT__KEYS", json.dumps(AUDIT_KEYS["keys"]))
    monkeypatch.setenv("HUIZHEN_RECORDS__AUDIT__ACTIVE_KEY", "a1")
    with pytest.raises(ConfigError, match="HUIZHEN_METRICS__TOKEN"):
        load_settings()  # and the token Prometheus scrapes with
    monkeypatch.setenv("HUIZHEN_METRICS__TOKEN", METRICS_TOKEN)
    settings = load_settings()
    assert settings.mode == "production"
    assert settings.primary_key.key == "his"
    assert settings.records.audit.key_bytes() == {"a1": b"\x07" * 32}


def test_generated_secrets_differ() -> None:
    assert len({generate_secret() for _ in range(20)}) == 20


# ---- dev credentials -------------------------------------------------------------------------

def test_ensure_dev_credentials_creates_the_file_once(tmp_path: Path) -> None:
    data_dir = tmp_path / "fresh" / "data"
    settings = load_settings(Path("/dev/null"), data_dir=str(data_dir))
    created = ensure_dev_credentials(settings)
    assert created is not None
    assert created.key == DEV_API_KEY
    assert len(created.secret) >= MIN_SECRET_LENGTH
    assert settings.primary_key == created
    path = data_dir / DEV_CREDENTIALS_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    stored = json.loads(path.read_text(encoding="utf-8"))
    assert stored == {"key": DEV_API_KEY, "secret": created.secret}
    before = path.read_bytes(), path.stat().st_mtime_ns

    again = load_settings(Path("/dev/null"), data_dir=str(data_dir))
    assert ensure_dev_credentials(again) is None
    # the same key is loaded, and the file is left as it was
    assert again.secret_for(DEV_API_KEY) == created.secret
    assert (path.read_bytes(), path.stat().st_mtime_ns) == before
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_ensure_dev_credentials_does_nothing_with_configured_keys(tmp_path: Path) -> None:
    settings = load_settings(Path("/dev/null"), data_dir=str(tmp_path / "d"),
                             auth={"api_keys": [{"key": "his", "secret": GOOD_SECRET}]})
    assert ensure_dev_credentials(settings) is None
    assert not (tmp_path / "d" / DEV_CREDENTIALS_FILE).exists()
    assert [k.key for k in settings.auth.api_keys] == ["his"]


def test_ensure_dev_credentials_does_nothing_in_production(tmp_path: Path) -> None:
    settings = load_settings(Path("/dev/null"), **production(tmp_path))
    assert ensure_dev_credentials(settings) is None
    assert not (tmp_path / "data" / DEV_CREDENTIALS_FILE).exists()



def test_generated_secrets_never_start_with_a_dash(monkeypatch: pytest.MonkeyPatch) -> None:
    """``--api-secret -abc`` would read as an option: such secrets are drawn again."""
    from huizhen import config

    drawn = iter(["-starts-with-a-dash", "fine-secret"])
    monkeypatch.setattr(config.secrets, "token_urlsafe", lambda n: next(drawn))
    assert config.generate_secret() == "fine-secret"


def _leaves(data: Any, prefix: str = "") -> set[str]:
    if isinstance(data, dict) and data and all(isinstance(k, str) for k in data) \
            and not prefix.endswith(("keys", "announce_addresses")):
        return set().union(*(_leaves(v, f"{prefix}.{k}" if prefix else k)
                             for k, v in data.items()))
    return {prefix}


def test_the_shipped_config_yaml_holds_every_option_at_its_default(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """config.yaml holds every option (commented there) and sets none to
    anything but its default: `make run` with it is the embedded default set-up."""
    shipped = Path(__file__).resolve().parents[1] / "config.yaml"
    data = yaml.safe_load(shipped.read_text(encoding="utf-8"))
    defaults = load_settings(Path("/dev/null")).model_dump(mode="json")
    missing = _leaves(defaults) - _leaves(data)
    assert not missing, f"options missing from config.yaml: {sorted(missing)}"
    assert load_settings(shipped).model_dump(mode="json") == defaults
