"""Loading and validating ``syncd.toml`` (every key is documented in config/syncd.example.toml).

Every problem becomes one :class:`~syncd.exceptions.ConfigError` naming the dotted key and what
to do about it. Secret values may be written literally or as ``env:NAME``, ``file:/path`` or
``credential:NAME`` (systemd ``LoadCredential=``); they are resolved here, registered with the
log redactor, and kept in :class:`Secret` wrappers whose ``repr`` never shows them.
"""

from __future__ import annotations

import os
import re
import tomllib
from datetime import date, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from syncd.cron import CronError, trigger_from_crontab
from syncd.exceptions import ConfigError
from syncd.log import register_secret

__all__ = [
    "DEFAULT_CONFIG_PATH",
    "AdminEntry",
    "AlertsConfig",
    "ChengjiyunConfig",
    "ClassChartsConfig",
    "Config",
    "EpaasConfig",
    "LogConfig",
    "PauseRange",
    "SafetyConfig",
    "ScheduleConfig",
    "Secret",
    "ServerConfig",
    "StoreConfig",
    "config_path_from",
    "load_config",
    "masked",
    "parse_config",
]

DEFAULT_CONFIG_PATH = Path("/etc/syncd/syncd.toml")


class Secret:
    """A resolved secret. ``str()``/``repr()`` show ``***``; ``reveal()`` gives the value."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def _resolve_secret(raw: Any) -> Secret:
    if isinstance(raw, Secret):
        return raw
    if not isinstance(raw, str):
        raise ValueError("must be a string (literal, env:NAME, file:/path or credential:NAME)")
    scheme, _, rest = raw.partition(":")
    if scheme == "env" and rest:
        value = os.environ.get(rest)
        if value is None:
            raise ValueError(
                f"environment variable {rest} is not set; export it or write the value in the file"
            )
    elif scheme == "file" and rest:
        value = _read_secret_file(Path(rest), f"file {rest}")
    elif scheme == "credential" and rest:
        directory = os.environ.get("CREDENTIALS_DIRECTORY")
        if not directory:
            raise ValueError(
                f"credential {rest} needs $CREDENTIALS_DIRECTORY (set by systemd LoadCredential=); "
                "outside systemd use env: or file: instead"
            )
        value = _read_secret_file(Path(directory) / rest, f"credential {rest}")
    else:
        value = raw
    if not value:
        raise ValueError("is empty")
    register_secret(value)
    return Secret(value)


def _read_secret_file(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise ValueError(f"{what} does not exist") from None
    except OSError as err:
        raise ValueError(f"{what} cannot be read ({err.strerror})") from None


SecretStr = Annotated[Secret, BeforeValidator(_resolve_secret)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)


def _base_url(value: str) -> str:
    if not re.match(r"^https?://[^/\s]+", value):
        raise ValueError("must be an http:// or https:// URL")
    return value.rstrip("/")


BaseUrl = Annotated[str, BeforeValidator(lambda v: _base_url(v) if isinstance(v, str) else v)]


class StoreConfig(_Section):
    path: Path = Path("/var/lib/syncd/syncd.db")
    # Online backup after the first good cycle of each day; default: beside the database.
    backup_path: Path | None = None
    # How long sent operations (`syncd history`) and cycle records are kept.
    history_days: int = Field(default=400, ge=1, le=36500)

    @property
    def backup(self) -> Path:
        return self.backup_path or self.path.with_name(self.path.name + ".bak")


class ChengjiyunConfig(_Section):
    base_url: BaseUrl = "https://chengjiyun.com"
    platform: str = Field(min_length=1)
    key: SecretStr
    org_id: str = Field(min_length=1)
    requests_per_second: float = Field(default=5.0, gt=0, le=1000)
    batch_size: int = Field(default=100, ge=1, le=1000)
    # Requests sent and not yet answered at once; 1 sends one at a time.
    # 32: 200 requests/s to a Chengjiyun 100 ms away needs 20 on the wire (bench/bench_drain.py).
    max_in_flight: int = Field(default=32, ge=1, le=256)
    timeout_s: float = Field(default=30.0, gt=0, le=600)
    # Accepted for old configs and ignored: a transient failure is retried until it succeeds
    # (or, in --run-once, until drain_timeout_s), never dead-lettered.
    max_attempts: int = Field(default=8, ge=1, le=100)
    retry_base_s: float = Field(default=1.0, gt=0, le=3600)
    retry_max_s: float = Field(default=60.0, gt=0, le=86400)
    drain_timeout_s: float = Field(default=600.0, gt=0, le=86400)
    max_response_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)


class ServerConfig(_Section):
    listen: str = "127.0.0.1:8087"
    base_path: str = ""
    max_connections: int = Field(default=256, ge=1, le=65536)
    listen_backlog: int = Field(default=1024, ge=1, le=65536)
    keepalive_timeout_s: float = Field(default=15, gt=0, le=3600)
    header_timeout_s: float = Field(default=10, gt=0, le=3600)

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
            raise ValueError('must be "HOST:PORT", e.g. "127.0.0.1:8087"')
        return value

    @field_validator("base_path")
    @classmethod
    def _path(cls, value: str) -> str:
        value = value.rstrip("/")
        if value and not value.startswith("/"):
            raise ValueError('must be empty or start with "/", e.g. "/cjy"')
        return value

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])


class ClassChartsParent(_Section):
    email: str = Field(min_length=3)
    password: SecretStr


class ClassChartsStudent(_Section):
    code: SecretStr
    dob: SecretStr

    @field_validator("dob")
    @classmethod
    def _dob_format(cls, value: Secret) -> Secret:
        try:
            datetime.strptime(value.reveal(), "%d/%m/%Y")
        except ValueError:
            raise ValueError("must be a date written DD/MM/YYYY, e.g. 01/09/2011") from None
        return value


class ClassChartsConfig(_Section):
    base_url: BaseUrl = "https://www.classcharts.com"
    id_prefix: str = "cc-"
    parents: list[ClassChartsParent] = []
    students: list[ClassChartsStudent] = []
    roster: Path | None = None
    timeout_s: float = Field(default=30.0, gt=0, le=600)

    @model_validator(mode="after")
    def _has_accounts(self) -> ClassChartsConfig:
        if not self.parents and not self.students:
            raise ValueError(
                "has no [[classcharts.parents]] or [[classcharts.students]] account; "
                "add one or remove the [classcharts] section to disable the source"
            )
        return self


class EpaasConfig(_Section):
    base_url: BaseUrl = "https://oapi.epaas.qq.com"
    id_prefix: str = "ep-"
    suite_id: str = Field(min_length=1)
    suite_secret: SecretStr
    suite_ticket: SecretStr
    auth_corpid: str = Field(min_length=1)
    permanent_code: SecretStr
    page_size: int = Field(default=100, ge=1, le=1000)
    timeout_s: float = Field(default=30.0, gt=0, le=600)
    # 文/理 per class, keyed by epaas class id: 1 = 文科, 2 = 理科 (queryClassStatus.subject; docs/protocols.md)
    class_subjects: dict[str, int] = {}

    @field_validator("class_subjects")
    @classmethod
    def _subjects(cls, value: dict[str, int]) -> dict[str, int]:
        bad = {k: v for k, v in value.items() if v not in (0, 1, 2)}
        if bad:
            raise ValueError(f"values must be 0 (未指定), 1 (文科) or 2 (理科); got {bad}")
        return value


class PauseRange(_Section):
    start: date
    end: date

    @model_validator(mode="after")
    def _ordered(self) -> PauseRange:
        if self.end < self.start:
            raise ValueError(f"end {self.end} is before start {self.start}")
        return self

    def contains(self, day: date) -> bool:
        return self.start <= day <= self.end


def _crontab(value: str) -> str:
    try:
        trigger_from_crontab(value)
    except CronError as err:
        raise ValueError(f'{err}; write e.g. "*/30 * * * *"') from None
    return value


Crontab = Annotated[str, BeforeValidator(lambda v: _crontab(v) if isinstance(v, str) else v)]
# The same, where "" means "never".
OptionalCrontab = Annotated[
    str, BeforeValidator(lambda v: _crontab(v) if isinstance(v, str) and v else v)
]


class ScheduleConfig(_Section):
    classcharts: Crontab = "*/30 * * * *"
    epaas: Crontab = "0 * * * *"
    full_resync: OptionalCrontab = "0 3 * * 0"  # the daemon's full reconcile; "" = never
    pause: list[PauseRange] = []

    def paused_on(self, day: date) -> bool:
        """Whether ``day`` is in one of the ``pause`` ranges (inclusive): no polling, no pushing."""
        return any(pause.contains(day) for pause in self.pause)


class SafetyConfig(_Section):
    delete_after_cycles: int = Field(default=2, ge=1, le=100)
    max_deletes: int = Field(default=50, ge=0)
    max_delete_fraction: float = Field(default=0.1, ge=0, le=1)
    # A source with no successful poll for this long makes /healthz unhealthy; 0 = three
    # times its schedule interval.
    stale_after_s: int = Field(default=0, ge=0)


class AdminEntry(_Section):
    """One ``[[admins]]``: the id of a synced user to make 管理员, or a new admin's id and name."""

    id: str = Field(min_length=1)
    name: str | None = Field(default=None, min_length=1)


class LogConfig(_Section):
    """``[log]``: ``auto`` = journal under systemd, console on a terminal, json otherwise."""

    format: Literal["auto", "journal", "json", "console"] = "auto"
    level: Annotated[
        Literal["debug", "info", "warning", "error"],
        BeforeValidator(lambda v: v.lower() if isinstance(v, str) else v),
    ] = "info"


class AlertsConfig(_Section):
    """``[alerts]``: a webhook and/or e-mail, one message per state change."""

    webhook_url: SecretStr | None = None
    webhook_format: Literal["json", "wecom", "dingtalk"] = "json"
    smtp_host: str | None = None
    smtp_port: int = Field(default=587, ge=1, le=65535)
    smtp_starttls: bool = True
    smtp_user: str | None = None
    smtp_password: SecretStr | None = None
    mail_from: str | None = None
    mail_to: list[str] = []
    timeout_s: float = Field(default=10.0, gt=0, le=300)

    @field_validator("webhook_url")
    @classmethod
    def _webhook_url(cls, value: Secret | None) -> Secret | None:
        if value is not None and not re.match(r"^https?://[^/\s]+", value.reveal()):
            raise ValueError("must be an http:// or https:// URL")  # never echo the secret
        return value

    @model_validator(mode="after")
    def _mail_complete(self) -> AlertsConfig:
        mail_keys = (self.smtp_user, self.smtp_password, self.mail_from, self.mail_to)
        if self.smtp_host is None:
            if any(mail_keys):
                raise ValueError("has e-mail keys but no smtp_host; add smtp_host or remove them")
        elif not self.mail_from or not self.mail_to:
            raise ValueError("smtp_host needs mail_from and mail_to (a list of addresses)")
        if self.smtp_password is not None and not self.smtp_user:
            raise ValueError("smtp_password needs smtp_user")
        if self.webhook_url is None and self.smtp_host is None:
            raise ValueError("has neither webhook_url nor smtp_host; add one or remove [alerts]")
        return self


class Config(_Section):
    store: StoreConfig = StoreConfig()
    chengjiyun: ChengjiyunConfig
    server: ServerConfig = ServerConfig()
    classcharts: ClassChartsConfig | None = None
    epaas: EpaasConfig | None = None
    schedule: ScheduleConfig = ScheduleConfig()
    safety: SafetyConfig = SafetyConfig()
    admins: list[AdminEntry] = []
    log: LogConfig = LogConfig()
    alerts: AlertsConfig | None = None

    @property
    def enabled_sources(self) -> list[str]:
        return [name for name in ("classcharts", "epaas") if getattr(self, name) is not None]


def _error_key(loc: tuple[Any, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts[-1:] = [f"{parts[-1]}[{item}]"] if parts else [f"[{item}]"]
        elif item in ("function-before[_resolve_secret(), is-instance[Secret]]",):
            continue
        else:
            parts.append(str(item))
    return ".".join(parts)


def _error_reason(error: Any) -> str:
    kind = error["type"]
    if kind == "missing":
        return "is required but missing; see config/syncd.example.toml"
    if kind == "extra_forbidden":
        return "is not a known key (check its spelling and section; see config/syncd.example.toml)"
    message = str(error["msg"])
    return message.removeprefix("Value error, ")


def parse_config(data: dict[str, Any]) -> Config:
    """Validate a parsed TOML document; raise ConfigError naming every problem (up to
    ``MAX_PROBLEMS``), the first one first."""
    try:
        return Config.model_validate(data)
    except ValidationError as err:
        problems = [
            (_error_key(tuple(p for p in e["loc"] if not _is_validator(p))), _error_reason(e))
            for e in err.errors(include_url=False, include_input=False)[:MAX_PROBLEMS]
        ]
        (key, reason), *more = problems
        raise ConfigError(key, reason, more=tuple(more)) from err


MAX_PROBLEMS = 50  # a file with more has a bigger problem than its list


def _is_validator(part: Any) -> bool:
    return isinstance(part, str) and part.startswith("function-")


def load_config(path: Path) -> Config:
    """Read, parse and validate the file at ``path``."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            "",
            f"config file {path} does not exist; pass --config PATH, set $SYNCD_CONFIG, "
            "or copy config/syncd.example.toml there",
        ) from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError("", f"config file {path} cannot be read: {err}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError("", f"{path} is not valid TOML: {err}") from None
    return parse_config(data)


def config_path_from(cli_value: str | None) -> Path:
    """``--config``, else ``$SYNCD_CONFIG``, else /etc/syncd/syncd.toml."""
    if cli_value:
        return Path(cli_value)
    env = os.environ.get("SYNCD_CONFIG")
    return Path(env) if env else DEFAULT_CONFIG_PATH


def masked(config: Config) -> dict[str, Any]:
    """The effective configuration as plain data with every secret shown as ``***``."""

    def walk(value: Any) -> Any:
        if isinstance(value, Secret):
            return "***"
        if isinstance(value, BaseModel):
            return {k: walk(getattr(value, k)) for k in type(value).model_fields}
        if isinstance(value, dict):
            return {k: walk(v) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v) for v in value]
        if isinstance(value, Path | date):
            return str(value)
        return value

    masked_config: dict[str, Any] = walk(config)
    return masked_config
