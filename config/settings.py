"""The one settings object every process is assembled from."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from config.branding import BrandingSettings
from config.examples import example_in_use
from config.redis import URL_KEY, RedisOptions, RedisTarget, RedisUrlError, parse_redis_url
from config.sites import Channel, CodePolicy, SiteConfig, SitesFile

ENV_PREFIX = "TIDINGS_"


class ConfigError(Exception):
    """Configuration that cannot work; the message names the key and is safe to print."""


class HttpSettings(BaseModel):
    """The web process."""

    model_config = ConfigDict(frozen=True)

    host: str = "0.0.0.0"  # noqa: S104 - containers listen on every interface
    port: Annotated[int, Field(ge=1, le=65_535)] = 8080
    max_body_bytes: Annotated[int, Field(ge=1_024, le=10_485_760)] = 65_536
    # Requests per client IP per minute to the public pages (magic links).
    page_requests_per_minute: Annotated[int, Field(ge=1)] = 30
    # Behind a reverse proxy: take the client IP from the last X-Forwarded-For hop.
    trust_forwarded_for: bool = False
    # Slow clients: a connection that has not sent a whole request head this long after it
    # opened (or after its last answer) is closed; a body must arrive within the read timeout.
    idle_timeout_seconds: Annotated[float, Field(gt=0, le=3_600)] = 15.0
    read_timeout_seconds: Annotated[float, Field(gt=0, le=600)] = 15.0
    # One request-head line (request line or header) at most; longer is answered 431.
    max_header_bytes: Annotated[int, Field(ge=1_024, le=65_536)] = 8_190
    # Web server processes on the port (``tidings web --workers``); 0: one per core.
    workers: Annotated[int, Field(ge=0, le=256)] = 0


class EmailSettings(BaseModel):
    """Outgoing email."""

    model_config = ConfigDict(frozen=True)

    backend: Literal["smtp", "outbox"] = "smtp"
    host: str = "localhost"
    port: Annotated[int, Field(ge=1, le=65_535)] = 587
    security: Literal["starttls", "tls", "none"] = "starttls"
    username: str | None = None
    password: SecretStr | None = None
    from_address: str = "no-reply@localhost"
    # Empty: the site's display name (a site's [sites.branding] from_name wins over both).
    from_name: str = ""
    timeout_seconds: Annotated[float, Field(gt=0, le=120)] = 15.0
    # SMTP connections per worker process. More sends in flight also let their Redis
    # calls share round trips: worker CPU per email 0.85 (4) -> 0.79 (8) -> 0.76 ms (16)
    # in bench/delivery.py; lower it for a relay that limits connections per client.
    pool_size: Annotated[int, Field(ge=1, le=64)] = 8
    # Reused connections older than this are reopened rather than trusted.
    max_idle_seconds: Annotated[float, Field(gt=0)] = 30.0
    validate_certs: bool = True
    # PEM bundle of the CAs trusted for the server's certificate (TLS and STARTTLS), for a
    # relay whose certificate is signed by a private CA; the system's CAs otherwise.
    ca_file: Path | None = None
    # The dev outbox keeps messages, codes included, in Redis: production refuses it unless
    # this says it is meant (a staging box without a mail server).
    allow_outbox_in_production: bool = False

    @field_validator("from_address")
    @classmethod
    def _check_from(cls, value: str) -> str:
        local, at, _ = value.rpartition("@")
        if not at or not local.isascii():
            # Every server must take the sender, with SMTPUTF8 or without.
            raise ValueError("an address whose local part is ASCII")
        return value

    @field_validator("ca_file")
    @classmethod
    def _check_ca_file(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"{value} is not a readable file")
        return value


class RonglianTemplate(BaseModel):
    """One approved Ronglian template and how its ``datas`` are filled."""

    model_config = ConfigDict(frozen=True)

    id: Annotated[str, Field(min_length=1)]
    # Each entry is formatted with the message's parameters ({code}, {minutes}, {domain},
    # {site_name}) in the template's placeholder order.
    datas: list[str] = ["{code}", "{minutes}"]


class RonglianSettings(BaseModel):
    """Ronglian Cloud (容联云通讯) template SMS."""

    model_config = ConfigDict(frozen=True)

    account_sid: str = ""
    auth_token: SecretStr = SecretStr("")
    app_id: str = ""
    # Production; the sandbox is https://sandboxapp.cloopen.com:8883 (same port).
    base_url: str = "https://app.cloopen.com:8883"
    # Template per purpose; "1" is Ronglian's built-in test template (code, minutes).
    templates: dict[str, RonglianTemplate] = {"verification": RonglianTemplate(id="1")}
    connect_timeout_seconds: Annotated[float, Field(gt=0, le=30)] = 3.0
    timeout_seconds: Annotated[float, Field(gt=0, le=60)] = 10.0


class SmsSettings(BaseModel):
    """Outgoing SMS and the phone numbers it may go to."""

    model_config = ConfigDict(frozen=True)

    # "none": the sms channel is unavailable; "console": printed and kept in the dev outbox.
    provider: Literal["none", "ronglian", "console"] = "none"
    # The console provider keeps texts, codes included, in Redis: production refuses it
    # unless this says it is meant.
    allow_console_in_production: bool = False
    # Region assumed for numbers written without a country code (ISO 3166 alpha-2).
    default_region: Annotated[str, Field(pattern=r"^[A-Z]{2}$")] = "CN"
    # Against SMS pumping: sends per hour to numbers sharing their first N E.164 digits
    # (country code included), across all sites; 0 turns the limit off.
    prefix_digits: Annotated[int, Field(ge=3, le=12)] = 7
    sends_per_prefix_per_hour: Annotated[int, Field(ge=0)] = 30
    ronglian: RonglianSettings = RonglianSettings()


class TelegramSettings(BaseModel):
    """The Telegram bot: webhook in the web app (polling in dev), sends from the workers."""

    model_config = ConfigDict(frozen=True)

    token: SecretStr | None = None
    # Resolved with getMe at start-up when empty.
    username: str = ""
    # Checked on every webhook call (X-Telegram-Bot-Api-Secret-Token); 1-256 of A-Za-z0-9_-.
    webhook_secret: Annotated[SecretStr, Field()] | None = None
    webhook_path: str = "/telegram/webhook"
    # Another Bot API server (a self-hosted telegram-bot-api, or a test emulator).
    api_base: str = "https://api.telegram.org"
    # Telegram user ids allowed to broadcast and read stats.
    admin_ids: list[int] = []
    # Messages per second a broadcast sends, across workers (Telegram allows about 30);
    # 0 sends as fast as Telegram accepts, still honouring its retry_after.
    broadcast_rate: Annotated[float, Field(ge=0, le=1_000)] = 25.0
    # Reminder times are read in this zone until a person sets theirs with /timezone.
    default_timezone: str = "UTC"

    @field_validator("webhook_secret")
    @classmethod
    def _check_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not re.fullmatch(
            r"[A-Za-z0-9_-]{1,256}", value.get_secret_value()
        ):
            raise ValueError("1-256 characters of A-Z, a-z, 0-9, _ and -")
        return value


class QueueSettings(BaseModel):
    """The taskiq stream broker and the delivery retry policy."""

    model_config = ConfigDict(frozen=True)

    # Entries read per round trip. Safe above 1 here: nothing is reclaimed by idle time, so
    # a worker's prefetched entries are never run by another (a dead worker's are handed
    # back by the reaper), and batching cut the worker's CPU per email by a fifth.
    xread_count: Annotated[int, Field(ge=1, le=100)] = 8
    # Far above any task: recovery of crashed work is done by the due-set pump,
    # not by XAUTOCLAIM, so a slow task is never stolen by another worker.
    idle_timeout_ms: Annotated[int, Field(ge=60_000)] = 3_600_000
    maxlen: Annotated[int, Field(ge=10_000)] = 1_000_000
    # taskiq task results: off, outcomes live on deliveries and events; if on, they expire.
    keep_results: bool = False
    result_ttl_seconds: Annotated[int, Field(ge=60)] = 3_600
    task_timeout_seconds: Annotated[float, Field(gt=0, le=600)] = 60.0
    max_attempts: Annotated[int, Field(ge=1, le=50)] = 8
    backoff_base_seconds: Annotated[float, Field(gt=0)] = 2.0
    backoff_max_seconds: Annotated[float, Field(gt=0)] = 600.0
    # A queued delivery not finished within this is enqueued again by the pump.
    requeue_after_seconds: Annotated[float, Field(ge=1)] = 120.0
    # A send attempt holds its delivery for this long, renewed while it runs; a worker
    # killed mid-send frees it after at most this.
    lease_seconds: Annotated[float, Field(ge=1, le=300)] = 15.0
    # Workers refresh a heartbeat this often; one silent for 3 beats is dead and its
    # unacknowledged stream entries are handed back.
    heartbeat_seconds: Annotated[float, Field(gt=0, le=60)] = 5.0
    pump_interval_seconds: Annotated[float, Field(gt=0, le=60)] = 1.0
    max_async_tasks: Annotated[int, Field(ge=1)] = 50


class EventSettings(BaseModel):
    """Outbound events to sites' callback URLs (Standard Webhooks)."""

    model_config = ConfigDict(frozen=True)

    timeout_seconds: Annotated[float, Field(gt=0, le=60)] = 15.0
    # Delays before attempts 2, 3, …: the Standard Webhooks / Svix schedule.
    retry_schedule_seconds: Annotated[list[float], Field(min_length=0, max_length=20)] = [
        5,
        300,
        1_800,
        7_200,
        18_000,
        36_000,
        36_000,
    ]


class OpsSettings(BaseModel):
    """The health and metrics port of workers and schedulers (the web serves its own)."""

    model_config = ConfigDict(frozen=True)

    host: str = "0.0.0.0"  # noqa: S104 - probes and scrapers come from outside the container
    # None: the role's default (worker 9101, each further ``--workers`` child the next port;
    # scheduler 9102); 0 turns the port off.
    port: Annotated[int, Field(ge=0, le=65_535)] | None = None


class LogSettings(BaseModel):
    """Logging."""

    model_config = ConfigDict(frozen=True)

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["json", "text"] = "json"


class Settings(BaseSettings):
    """Everything a Tidings process needs to know, read from ``TIDINGS_*`` and ``.env``."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        env_file=".env",
        extra="ignore",
        frozen=True,
    )

    redis_url: str | None = None
    redis: RedisOptions = RedisOptions()
    redis_prefix: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")] = "tidings"
    secret_key: SecretStr | None = None
    public_url: str = "http://localhost:8080"
    http: HttpSettings = HttpSettings()
    email: EmailSettings = EmailSettings()
    sms: SmsSettings = SmsSettings()
    telegram: TelegramSettings = TelegramSettings()
    queue: QueueSettings = QueueSettings()
    events: EventSettings = EventSettings()
    log: LogSettings = LogSettings()
    ops: OpsSettings = OpsSettings()
    codes: CodePolicy = CodePolicy()
    sites_file: Path | None = None
    sites: list[SiteConfig] = []
    # A folder of email, SMS and page templates over the package's (see config/templates.py).
    templates_dir: Path | None = None
    branding: BrandingSettings = BrandingSettings()
    webhook_tolerance_seconds: Annotated[int, Field(ge=30, le=3_600)] = 300
    webhook_replay_seconds: Annotated[int, Field(ge=600)] = 86_400
    retention_seconds: Annotated[int, Field(ge=60)] = 86_400
    dev: bool = False

    @field_validator("secret_key")
    @classmethod
    def _check_secret_key(cls, value: SecretStr | None) -> SecretStr | None:
        # A field validator, so the error's location names TIDINGS_SECRET_KEY.
        if value is not None and len(value.get_secret_value()) < 32:
            raise ValueError("secret_key must be at least 32 characters")
        return value

    @property
    def deliverable_channels(self) -> frozenset[Channel]:
        """Channels this deployment can verify on."""
        channels = {Channel.EMAIL, Channel.LINK}
        if self.sms.provider != "none":
            channels.add(Channel.SMS)
        if self.telegram.token is not None:
            channels.add(Channel.TELEGRAM)
        return frozenset(channels)

    def policy_for(self, site: SiteConfig) -> CodePolicy:
        """The code policy in force for ``site``."""
        return site.codes.apply(self.codes)

    def require_redis_url(self) -> str:
        """The Redis URL, or a :class:`ConfigError` naming the key."""
        if not self.redis_url:
            raise ConfigError(f"{ENV_PREFIX}REDIS_URL: required (e.g. redis://localhost:6379/0)")
        return self.redis_url

    def redis_target(self) -> RedisTarget:
        """The parsed Redis URL (any topology), or a :class:`ConfigError` naming the key."""
        try:
            return parse_redis_url(self.require_redis_url())
        except RedisUrlError as exc:
            raise ConfigError(f"{URL_KEY}: {exc}") from None

    @property
    def durable_replicas(self) -> int:
        """Replicas every acknowledged write waits for (0: none)."""
        configured = self.redis.durable_replicas
        if configured is not None:
            return configured
        return 1 if self.redis_url and self.redis_target().has_replicas else 0

    def require_secret_key(self) -> bytes:
        """The server key that hashes codes, or a :class:`ConfigError` naming the key."""
        if self.secret_key is None:
            raise ConfigError(
                f"{ENV_PREFIX}SECRET_KEY: required, at least 32 random characters "
                '(python -c "import secrets; print(secrets.token_urlsafe(48))")'
            )
        return self.secret_key.get_secret_value().encode()


def _describe(error: ValidationError, origin: str) -> str:
    # Only the location and message: pydantic's own text would echo the input, maybe a secret.
    first = error.errors()[0]
    where = "__".join(str(part) for part in first["loc"] if part != "__root__").upper()
    if origin == "env":
        key = f"{ENV_PREFIX}{where}" if where else f"{ENV_PREFIX}*"
    else:
        key = f"{origin}: {'.'.join(str(part) for part in first['loc'])}"
    return f"{key}: {first['msg'].removeprefix('Value error, ')}"


def _load_sites_file(path: Path) -> list[SiteConfig]:
    try:
        raw: dict[str, Any] = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{ENV_PREFIX}SITES_FILE: {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        # A directory, no permission, not UTF-8: still one line naming the key.
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise ConfigError(f"{ENV_PREFIX}SITES_FILE: {path} cannot be read ({reason})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{ENV_PREFIX}SITES_FILE: {path} is not valid TOML ({exc})") from None
    try:
        return SitesFile.model_validate(raw).sites
    except ValidationError as exc:
        raise ConfigError(_describe(exc, str(path))) from None


def _refuse_dev_providers(settings: Settings) -> None:
    """Dev providers keep messages, codes included, in Redis in plain text: not in production."""
    if settings.dev:
        return
    if settings.sms.provider == "console" and not settings.sms.allow_console_in_production:
        raise ConfigError(
            f"{ENV_PREFIX}SMS__PROVIDER: console keeps texts and their codes in Redis in plain "
            f"text; outside development use ronglian, or set "
            f"{ENV_PREFIX}SMS__ALLOW_CONSOLE_IN_PRODUCTION=true"
        )
    if settings.email.backend == "outbox" and not settings.email.allow_outbox_in_production:
        raise ConfigError(
            f"{ENV_PREFIX}EMAIL__BACKEND: outbox keeps emails and their codes in Redis in plain "
            f"text; outside development use smtp, or set "
            f"{ENV_PREFIX}EMAIL__ALLOW_OUTBOX_IN_PRODUCTION=true"
        )


def _check_templates(folder: Path | None, sites: list[SiteConfig]) -> None:
    """A broken override template stops start-up here, not a delivery later."""
    if folder is not None:
        from config.templates import check_folder  # Jinja only where there are overrides

        check_folder(folder, [site.id for site in sites])


def load_settings(**overrides: Any) -> Settings:
    """Read settings from the environment (and sites from their TOML file).

    Raises :class:`ConfigError` with one line naming the offending key.
    """
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, "env")) from None
    except SettingsError as exc:
        # pydantic-settings names the field in its message: 'error parsing value for field "x"'.
        match = re.search(r'field "([^"]+)"', str(exc))
        name = match.group(1).upper() if match else "*"
        raise ConfigError(f"{ENV_PREFIX}{name}: not valid JSON") from None
    if settings.redis_url:
        target = settings.redis_target()  # a bad URL stops start-up here, naming the key
        if settings.queue.keep_results and target.topology != "standalone":
            raise ConfigError(
                f"{ENV_PREFIX}QUEUE__KEEP_RESULTS: task results are kept only on a single "
                "Redis server; outcomes are on deliveries and events anyway"
            )
    sites = list(settings.sites)
    if settings.sites_file is not None:
        sites.extend(_load_sites_file(settings.sites_file))
    seen: set[str] = set()
    for site in sites:
        if site.id in seen:
            raise ConfigError(f"sites: site id {site.id!r} is declared twice")
        seen.add(site.id)
    telegram = settings.telegram
    # Development polls instead of taking a webhook.
    if telegram.token is not None and telegram.webhook_secret is None and not settings.dev:
        raise ConfigError(
            f"{ENV_PREFIX}TELEGRAM__WEBHOOK_SECRET: required with a bot token, so that "
            "only Telegram can post updates"
        )
    if settings.sms.provider == "ronglian":
        ronglian = settings.sms.ronglian
        for name, value in (
            ("ACCOUNT_SID", ronglian.account_sid),
            ("AUTH_TOKEN", ronglian.auth_token.get_secret_value()),
            ("APP_ID", ronglian.app_id),
        ):
            if not value:
                raise ConfigError(
                    f"{ENV_PREFIX}SMS__RONGLIAN__{name}: required when SMS__PROVIDER is ronglian"
                )
    _refuse_dev_providers(settings)
    _check_templates(settings.templates_dir, sites)
    # Outside development, a published example secret is no secret: refuse it.
    example = None if settings.dev else example_in_use(settings, sites)
    if example is not None:
        raise ConfigError(example)
    return settings.model_copy(update={"sites": sites})
