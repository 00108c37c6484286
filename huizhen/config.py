"""Service configuration: ``config.yaml`` overridden by ``HUIZHEN_…`` environment variables.

Every option lives in one typed model below. Nested options are addressed in the environment
with a double underscore, e.g. ``HUIZHEN_SERVER__PORT=8443`` or
``HUIZHEN_ICE__GATHER_ADDRESSES='["10.0.0.5"]'`` (lists and maps take JSON).
Validation happens once, at start; an error names the option and what is wrong with it.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import os
import secrets
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

import yaml
from pydantic import (
    BaseModel,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from huizhen.config_records import (
    AuditConfig,
    EncryptionConfig,
    RecordingConfig,
    RecordsConfig,
    StorageConfig,
    decode_key,
    keys_env,
)

#: The development API key. In dev mode with no key configured, the service makes one with a
#: random secret in ``<data_dir>/dev-credentials.json``; outside dev mode it refuses that key.
DEV_API_KEY = "dev"
DEV_CREDENTIALS_FILE = "dev-credentials.json"
DEV_AUDIT_KEY_FILE = "dev-audit-key"
MIN_SECRET_LENGTH = 32
CONFIG_ENV = "HUIZHEN_CONFIG"


class ConfigError(Exception):
    """The configuration is unusable; the message names the option and the fix."""


class TlsConfig(BaseModel):
    cert_file: Path | None = None
    key_file: Path | None = None
    self_signed: bool = False

    @model_validator(mode="after")
    def _pair(self) -> TlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("set both tls.cert_file and tls.key_file, or neither")
        if self.self_signed and self.cert_file is not None:
            raise ValueError("tls.self_signed and tls.cert_file exclude each other")
        return self

    @property
    def enabled(self) -> bool:
        return self.self_signed or self.cert_file is not None


class ServerConfig(BaseModel):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    public_url: str = ""
    tls: TlsConfig = TlsConfig()
    #: a drain (SIGTERM, ``huizhen drain``) waits this long for this node's rooms to empty and
    #: its recordings to finish before the process exits anyway (signaling/drain.py)
    drain_timeout_s: float = Field(30.0, ge=0, le=3600)
    #: how soon clients told to reconnect by a drain try again (the ``reconnect`` hint)
    drain_retry_ms: int = Field(500, ge=100, le=10000)

    @field_validator("public_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if value:
            parsed = urlparse(value)
            if parsed.scheme not in ("http", "https") or not parsed.netloc:
                raise ValueError("must be an absolute http(s) URL such as https://video.example.org")
        return value.rstrip("/")


class DatabaseConfig(BaseModel):
    url: str = ""

    @field_validator("url")
    @classmethod
    def _scheme(cls, value: str) -> str:
        if value and not value.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            raise ValueError(
                "supported: sqlite+aiosqlite:///path/file.db or postgresql+asyncpg://user@host/db"
            )
        return value


class RedisConfig(BaseModel):
    url: str = ""

    @field_validator("url")
    @classmethod
    def _scheme(cls, value: str) -> str:
        if value and urlparse(value).scheme not in ("redis", "rediss", "unix"):
            raise ValueError("must be a redis://host:port/db URL")
        return value


class TurnServer(BaseModel):
    url: str
    username: str = ""
    credential: str = ""

    @field_validator("url")
    @classmethod
    def _scheme(cls, value: str) -> str:
        if not value.startswith(("turn:", "turns:")):
            raise ValueError("a TURN server URL starts with turn: or turns:")
        return value


class TurnConfig(BaseModel):
    """coturn with ``use-auth-secret``: per-participant credentials (docs/turn.md)."""

    #: coturn's ``static-auth-secret``; in the environment (HUIZHEN_ICE__TURN__SECRET)
    secret: SecretStr = SecretStr("")
    #: turn:host:3478?transport=udp, turn:host:3478?transport=tcp, turns:host:443?transport=tcp
    urls: list[str] = []
    #: a credential lives as long as the participant's token, never longer than this
    max_credential_ttl_s: int = Field(12 * 3600, ge=60)

    @field_validator("urls")
    @classmethod
    def _schemes(cls, value: list[str]) -> list[str]:
        for item in value:
            if not item.startswith(("turn:", "turns:")):
                raise ValueError(f"{item!r}: a TURN server URL starts with turn: or turns:")
        return value

    @model_validator(mode="after")
    def _both(self) -> TurnConfig:
        if bool(self.urls) != bool(self.secret.get_secret_value()):
            raise ValueError("set both ice.turn.urls and ice.turn.secret (coturn's "
                             "static-auth-secret, HUIZHEN_ICE__TURN__SECRET), or neither")
        return self


class IceConfig(BaseModel):
    gather_addresses: list[str] = ["127.0.0.1"]
    announce_addresses: dict[str, str] = {}
    stun_servers: list[str] = []
    #: static TURN credentials, the same for every client: dev mode only (use ``turn``)
    turn_servers: list[TurnServer] = []
    turn: TurnConfig = TurnConfig()
    ignore_mdns_candidates: bool = True

    @field_validator("gather_addresses")
    @classmethod
    def _ips(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("give at least one local IP address to gather ICE candidates on")
        for item in value:
            ipaddress.ip_address(item)
        return value

    @field_validator("announce_addresses")
    @classmethod
    def _announce(cls, value: dict[str, str]) -> dict[str, str]:
        for local, public in value.items():
            ipaddress.ip_address(local)
            ipaddress.ip_address(public)
        return value

    @field_validator("stun_servers")
    @classmethod
    def _stun(cls, value: list[str]) -> list[str]:
        for item in value:
            if not item.startswith("stun:"):
                raise ValueError(f"{item!r}: a STUN server URL starts with stun:")
        return value


class ApiKey(BaseModel):
    key: str = Field(min_length=1)
    secret: str
    #: may call the admin API (/api/admin/…: node load, drain, kick, end any room)
    admin: bool = False


class AuthConfig(BaseModel):
    api_keys: list[ApiKey] = []
    audience: str = "huizhen"
    default_token_ttl_s: int = Field(3600, gt=0)
    max_token_ttl_s: int = Field(7 * 24 * 3600, gt=0)


class RoomsConfig(BaseModel):
    #: a room whose clinicians have all left ends by itself after this many seconds
    unattended_end_s: float = Field(600.0, gt=0)
    #: a booked room's links open this many seconds before its start
    join_early_s: float = Field(900.0, ge=0)


class SignalingConfig(BaseModel):
    heartbeat_s: float = Field(3.0, gt=0, le=30)
    max_message_bytes: int = Field(256 * 1024, ge=1024)


class MediaConfig(BaseModel):
    video_codec: Literal["VP8", "H264"] = "VP8"
    pli_throttle_ms: int = Field(500, ge=50, le=5000)
    #: every media connection on this one UDP port (0: a port per connection)
    udp_port: int = Field(7882, ge=0, le=65535)


class ImagesConfig(BaseModel):
    """MDT case images (caseimages/): PNG, JPEG and DICOM shown to the room at full size."""

    #: the largest upload accepted, in MiB (larger: 413 too_large)
    max_upload_mb: int = Field(64, ge=1, le=2048)
    #: the largest image decoded, in pixels (width × height; larger: 400 too_many_pixels)
    max_pixels: int = Field(60_000_000, ge=10_000)
    #: the shared view (pointer, zoom) goes to the room at most once per this many ms; what
    #: comes in between is merged into the next one
    view_interval_ms: int = Field(50, ge=10, le=1000)


class LoggingConfig(BaseModel):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["json", "text"] = "json"


class MetricsConfig(BaseModel):
    """Prometheus metrics at ``/metrics`` (docs/operations.md)."""

    enabled: bool = True
    #: the bearer token a scrape must send (``Authorization: Bearer <token>``), from the
    #: environment: HUIZHEN_METRICS__TOKEN. Empty: ``/metrics`` is open, which only dev mode
    #: accepts (outside it the service refuses to start)
    token: SecretStr = SecretStr("")


class WebhookEndpoint(BaseModel):
    """Where the hospital system hears of what happens (docs/api.md, "Webhooks")."""

    url: str = Field(pattern=r"^https?://\S+$")
    #: the API key whose secret signs what is sent here (auth.api_keys)
    api_key: str = Field(min_length=1)
    #: the event types sent here; empty: all of them
    events: list[str] = []


class WebhooksConfig(BaseModel):
    endpoints: list[WebhookEndpoint] = []
    timeout_s: float = Field(10.0, gt=0, le=120)
    max_attempts: int = Field(12, ge=1, le=100)
    backoff_s: float = Field(2.0, gt=0)
    max_backoff_s: float = Field(900.0, gt=0)
    poll_s: float = Field(1.0, gt=0, le=60)


class Settings(BaseSettings):
    """All options; see config.yaml for the commented defaults."""

    model_config = SettingsConfigDict(
        env_prefix="HUIZHEN_", env_nested_delimiter="__", extra="forbid", case_sensitive=False
    )

    mode: Literal["dev", "production"] = "dev"
    data_dir: Path = Path("var")
    server: ServerConfig = ServerConfig()
    database: DatabaseConfig = DatabaseConfig()
    redis: RedisConfig = RedisConfig()
    recording: RecordingConfig = RecordingConfig()
    records: RecordsConfig = RecordsConfig()
    ice: IceConfig = IceConfig()
    auth: AuthConfig = AuthConfig()
    rooms: RoomsConfig = RoomsConfig()
    signaling: SignalingConfig = SignalingConfig()
    media: MediaConfig = MediaConfig()
    images: ImagesConfig = ImagesConfig()
    logging: LoggingConfig = LoggingConfig()
    metrics: MetricsConfig = MetricsConfig()
    webhooks: WebhooksConfig = WebhooksConfig()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # environment first (wins), then values handed in (the YAML file)
        return (env_settings, init_settings)

    # ---- derived values -------------------------------------------------------------
    @property
    def database_url(self) -> str:
        return self.database.url or f"sqlite+aiosqlite:///{self.data_dir / 'huizhen.db'}"

    @property
    def recordings_folder(self) -> Path:
        return self.recording.folder or self.data_dir / "recordings"

    @property
    def base_url(self) -> str:
        if self.server.public_url:
            return self.server.public_url
        scheme = "https" if self.server.tls.enabled else "http"
        return f"{scheme}://{self.server.host}:{self.server.port}"

    def handover(self) -> dict[str, Any]:
        """Every option as plain JSON values, secrets included: for a child process of the
        service (its recording workers), passed in its environment, never written to disk."""
        def reveal(value: Any) -> Any:
            if isinstance(value, SecretStr):
                return value.get_secret_value()
            if isinstance(value, dict):
                return {k: reveal(v) for k, v in value.items()}
            if isinstance(value, list):
                return [reveal(v) for v in value]
            if isinstance(value, Path):
                return str(value)
            return value
        return {k: reveal(v) for k, v in self.model_dump().items()}

    def is_admin(self, key: str) -> bool:
        return any(item.key == key and item.admin for item in self.auth.api_keys)

    def secret_for(self, key: str) -> str | None:
        for item in self.auth.api_keys:
            if item.key == key:
                return item.secret
        return None

    @property
    def primary_key(self) -> ApiKey:
        return self.auth.api_keys[0]


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError as exc:
        raise ConfigError(f"configuration file {path} does not exist (set {CONFIG_ENV})") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"configuration file {path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"configuration file {path} must hold a mapping of options")
    return data


def _describe(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        option = ".".join(str(p) for p in err["loc"]) or "(root)"
        env = "HUIZHEN_" + "__".join(str(p) for p in err["loc"] if not isinstance(p, int)).upper()
        lines.append(f"  {option}: {err['msg']} (config.yaml option {option}, or {env})")
    return "invalid configuration:\n" + "\n".join(lines)


def load_settings(path: Path | None = None, **overrides: Any) -> Settings:
    """Read ``path`` (or $HUIZHEN_CONFIG, or ./config.yaml if present) and the environment."""
    if path is None:
        env_path = os.environ.get(CONFIG_ENV)
        if env_path:
            path = Path(env_path)
        elif Path("config.yaml").exists():
            path = Path("config.yaml")
    data = _read_yaml(path) if path is not None else {}
    keys_in_file = _keys_in(data)
    data.update(overrides)
    try:
        settings = Settings(**data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from exc
    check_secure(settings)
    if keys_in_file and settings.mode != "dev":
        option = keys_in_file[0]
        raise ConfigError(
            f"{option}.keys is written in {path}; outside dev mode keys belong in the "
            f"environment, never in a file that is copied or committed: move them to "
            f"{keys_env(option)}='{{\"<key id>\": \"<base64 of 32 bytes>\"}}'"
        )
    return settings


def _keys_in(data: dict[str, Any]) -> list[str]:
    """The key sets (``recording.encryption``, ``records.audit``) whose keys a config file's
    own mapping holds."""
    found = []
    for option in (EncryptionConfig.OPTION, AuditConfig.OPTION):
        node: Any = data
        for part in option.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict) and node.get("keys"):
            found.append(option)
    return found


def check_secure(settings: Settings) -> None:
    """Refuse insecure set-ups outside dev mode; error messages say what to set."""
    if settings.mode == "dev":
        return
    if not settings.auth.api_keys:
        raise ConfigError(
            "production mode needs at least one API key: set HUIZHEN_AUTH__API_KEYS="
            '\'[{"key": "hospital-his", "secret": "<32+ random characters>"}]\''
        )
    dev_secret = _stored_dev_secret(settings.data_dir)
    for item in settings.auth.api_keys:
        if item.key == DEV_API_KEY or item.secret == dev_secret:
            raise ConfigError(
                f"auth.api_keys[{item.key}] uses the development key or secret; production mode "
                "refuses to start with it. Generate one with: huizhen key generate"
            )
        if len(item.secret) < MIN_SECRET_LENGTH:
            raise ConfigError(
                f"auth.api_keys[{item.key}].secret is shorter than {MIN_SECRET_LENGTH} characters"
            )
    _check_turn(settings.ice)
    if settings.server.tls.self_signed:
        raise ConfigError(
            "server.tls.self_signed is for LAN testing in dev mode; production needs "
            "server.tls.cert_file/key_file, or TLS terminated by a proxy in front"
        )
    _check_recording_storage(settings.recording.storage)
    for endpoint in settings.webhooks.endpoints:
        if not endpoint.url.startswith("https://"):
            raise ConfigError(
                f"webhooks.endpoints: {endpoint.url} is plain http; outside dev mode events "
                "(they name rooms, people and recordings) go over https only"
            )
    if not settings.records.audit.enabled:
        raise ConfigError(
            "production mode needs a key that seals the audit log: set "
            f"{keys_env(AuditConfig.OPTION)}='{{\"a1\": \"<base64 of 32 random bytes>\"}}' and "
            "HUIZHEN_RECORDS__AUDIT__ACTIVE_KEY=a1 (keep every key that sealed rows you keep)"
        )
    metrics = settings.metrics
    if metrics.enabled and len(metrics.token.get_secret_value()) < MIN_SECRET_LENGTH:
        raise ConfigError(
            "metrics.enabled (Prometheus at /metrics) needs a bearer token of at least "
            f"{MIN_SECRET_LENGTH} characters outside dev mode: set HUIZHEN_METRICS__TOKEN "
            "(e.g. a secret from: huizhen key generate) and give Prometheus the same "
            "(docs/operations.md), or set metrics.enabled: false"
        )



def _check_turn(ice: IceConfig) -> None:
    """Outside dev mode TURN credentials are per participant and signed with a real secret."""
    if ice.turn_servers:
        raise ConfigError(
            "ice.turn_servers hands every client the same static TURN password; outside dev "
            "mode use short-lived credentials instead: run coturn with use-auth-secret and set "
            "HUIZHEN_ICE__TURN__SECRET (its static-auth-secret) and ice.turn.urls (docs/turn.md)"
        )
    secret = ice.turn.secret.get_secret_value()
    if ice.turn.urls and len(secret) < MIN_SECRET_LENGTH:
        raise ConfigError(
            f"ice.turn.secret is shorter than {MIN_SECRET_LENGTH} characters; set "
            "HUIZHEN_ICE__TURN__SECRET to a random one (e.g. from: huizhen key generate) and "
            "the same value as static-auth-secret in coturn's turnserver.conf"
        )


def _check_recording_storage(storage: StorageConfig) -> None:
    """Outside dev mode an S3 backend needs explicit credentials: no silent fallback to
    whatever the machine's AWS environment happens to hold."""
    s3 = storage.s3
    if storage.backend == "s3" and not (
        s3.access_key_id and s3.secret_access_key.get_secret_value()
    ):
        raise ConfigError(
            "recording.storage.backend is s3 but recording.storage.s3.access_key_id/"
            "secret_access_key are empty; production mode needs them: set "
            "HUIZHEN_RECORDING__STORAGE__S3__ACCESS_KEY_ID and "
            "HUIZHEN_RECORDING__STORAGE__S3__SECRET_ACCESS_KEY"
        )


def generate_secret() -> str:
    """A random API secret (48 URL-safe characters). Never one starting with "-": on a command
    line (``--api-secret SECRET``) that would read as an option."""
    while True:
        secret = secrets.token_urlsafe(36)
        if not secret.startswith("-"):
            return secret


def _stored_dev_secret(data_dir: Path) -> str | None:
    try:
        data = json.loads((data_dir / DEV_CREDENTIALS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    secret = data.get("secret") if isinstance(data, dict) else None
    return secret if isinstance(secret, str) else None


def audit_keys(settings: Settings) -> tuple[dict[str, bytes], str]:
    """The audit log's keys and the active key id. In dev mode without configured keys, a
    random key kept in ``<data_dir>/dev-audit-key`` (made on first use)."""
    audit = settings.records.audit
    if audit.enabled:
        return audit.key_bytes(), audit.active_key
    if settings.mode != "dev":
        raise ConfigError(f"records.audit has no keys: set {keys_env(AuditConfig.OPTION)}")
    path = settings.data_dir / DEV_AUDIT_KEY_FILE
    key = decode_key(path.read_text(encoding="ascii")) if path.exists() else b""
    if len(key) != 32:
        key = secrets.token_bytes(32)
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(base64.b64encode(key).decode(), encoding="ascii")
        path.chmod(0o600)
    return {DEV_API_KEY: key}, DEV_API_KEY


def ensure_dev_credentials(settings: Settings) -> ApiKey | None:
    """In dev mode with no API key configured, load or create the dev key.

    Returns the key when it was created just now (the caller prints it once), else None.
    """
    if settings.mode != "dev" or settings.auth.api_keys:
        return None
    existing = _stored_dev_secret(settings.data_dir)
    created = existing is None
    secret = existing or generate_secret()
    if created:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        path = settings.data_dir / DEV_CREDENTIALS_FILE
        path.write_text(json.dumps({"key": DEV_API_KEY, "secret": secret}), encoding="utf-8")
        path.chmod(0o600)
    key = ApiKey(key=DEV_API_KEY, secret=secret, admin=True)  # dev mode: `huizhen drain` works
    settings.auth.api_keys.append(key)
    return key if created else None
