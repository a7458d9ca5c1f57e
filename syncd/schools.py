"""Which schools a ``--config`` path names: one file is one school; a directory holds one school
per ``*.toml`` file directly in it.

Each file of a directory is loaded and validated on its own, so one bad file never stops the
others: it becomes an :class:`InvalidSchool` (reported by ``run``, ``status``, ``/healthz`` and
``check-config``) while the valid ones run. The files must also agree with each other: one
``orgId`` and one database per file, and one listener for all (``[server]`` equal or absent).
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from pydantic import ValidationError

from syncd.config import AlertsConfig, Config, LogConfig, ServerConfig, load_config
from syncd.exceptions import ConfigError

__all__ = ["DEFAULT_STATE_DIR", "InvalidSchool", "SchoolConfigs", "load_schools"]

# Where a school of a directory keeps its database when its file has no ``[store] path``.
DEFAULT_STATE_DIR = Path("/var/lib/syncd")
_SAFE_FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


@dataclass(frozen=True)
class InvalidSchool:
    """A school file that does not validate: not started, and reported with its problems."""

    path: Path
    error: ConfigError
    # What the file itself says, as far as it can be read: for naming it and alerting.
    org_id: str | None = None
    alerts: AlertsConfig | None = None

    @property
    def name(self) -> str:
        return self.org_id or self.path.stem


@dataclass(frozen=True)
class SchoolConfigs:
    """The schools of one ``--config`` path, by ``orgId`` (in file-name order)."""

    source: Path
    schools: Mapping[str, Config]
    invalid: tuple[InvalidSchool, ...] = ()
    is_directory: bool = False
    # One listener and one log configuration serve the whole process.
    server: ServerConfig = field(default_factory=ServerConfig)
    log: LogConfig = field(default_factory=LogConfig)

    def only(self, org_id: str) -> SchoolConfigs:
        """The same, restricted to the school ``org_id`` (``run --school``)."""
        config = self.one(org_id)
        return replace(self, schools=MappingProxyType({org_id: config}), invalid=())

    def one(self, org_id: str | None) -> Config:
        """The school a one-school command acts on: ``--school ORG_ID``, or the only one."""
        if org_id is not None:
            if org_id in self.schools:
                return self.schools[org_id]
            bad = next((i for i in self.invalid if i.org_id == org_id), None)
            if bad is not None:
                raise ConfigError(
                    "", f"the file of school {org_id} ({bad.path}) does not validate: {bad.error}"
                )
            known = ", ".join(self.schools) or "none"
            raise ConfigError(
                "", f"no school has orgId {org_id!r} in {self.source} (known: {known})"
            )
        if len(self.schools) == 1 and not self.invalid:
            return next(iter(self.schools.values()))
        if not self.schools and not self.invalid:
            raise ConfigError("", f"{self.source} holds no *.toml school file")
        if not self.schools:
            raise ConfigError("", f"no school file in {self.source} validates")
        names = ", ".join([*self.schools, *(i.name for i in self.invalid)])
        raise ConfigError(
            "", f"{self.source} holds several schools ({names}): name one with --school ORG_ID"
        )


def load_schools(path: Path, *, state_dir: Path = DEFAULT_STATE_DIR) -> SchoolConfigs:
    """The school at ``path`` (a file: raises ConfigError if it is invalid) or the schools of
    the directory ``path`` (never raises for one bad file)."""
    if not path.is_dir():
        config = load_config(path)
        return SchoolConfigs(
            source=path,
            schools=MappingProxyType({config.chengjiyun.org_id: config}),
            server=config.server,
            log=config.log,
        )
    schools: dict[str, Config] = {}
    invalid: list[InvalidSchool] = []
    files_of: dict[str, Path] = {}  # org_id or database path -> the file that claimed it
    server: tuple[ServerConfig, Path] | None = None
    for file in sorted(path.glob("*.toml")):
        try:
            config = _with_default_store(load_config(file), state_dir)
            server = _check_shared(config, file, files_of, server)
        except ConfigError as err:
            invalid.append(_invalid(file, err))
            continue
        files_of[config.chengjiyun.org_id] = file
        files_of[str(config.store.path)] = file
        schools[config.chengjiyun.org_id] = config
    first = next(iter(schools.values()), None)
    return SchoolConfigs(
        source=path,
        schools=MappingProxyType(schools),
        invalid=tuple(invalid),
        is_directory=True,
        server=server[0] if server else ServerConfig(),
        log=first.log if first is not None else LogConfig(),
    )


def _with_default_store(config: Config, state_dir: Path) -> Config:
    """In a directory, a school without ``[store] path`` keeps ``<state_dir>/<org_id>.db``."""
    if "path" in config.store.model_fields_set:
        return config
    org_id = config.chengjiyun.org_id
    if not _SAFE_FILE_NAME.fullmatch(org_id):
        raise ConfigError(
            "store.path",
            f"is required: orgId {org_id!r} cannot name a file, so give this school's "
            "database path",
        )
    store = config.store.model_copy(update={"path": state_dir / f"{org_id}.db"})
    return config.model_copy(update={"store": store})


def _check_shared(
    config: Config,
    file: Path,
    files_of: Mapping[str, Path],
    server: tuple[ServerConfig, Path] | None,
) -> tuple[ServerConfig, Path] | None:
    """Refuse a file that claims another file's orgId or database, or another listener; return
    the listener the directory has agreed on so far."""
    org_id = config.chengjiyun.org_id
    if org_id in files_of:
        raise ConfigError(
            "chengjiyun.org_id",
            f"{org_id!r} is already the school of {files_of[org_id].name}; one file per school",
        )
    database = str(config.store.path)
    if database in files_of:
        raise ConfigError(
            "store.path", f"{database} is already the database of {files_of[database].name}"
        )
    if "server" not in config.model_fields_set:
        return server
    if server is not None and config.server != server[0]:
        raise ConfigError(
            "server",
            f"differs from the [server] of {server[1].name}; all schools of a directory share "
            "one listener, so give [server] once or identically",
        )
    return server or (config.server, file)


def _invalid(file: Path, err: ConfigError) -> InvalidSchool:
    """Keep what can still be read from a bad file: its orgId, and an ``[alerts]`` section that
    validates on its own (so the school's admin hears that the school is not running)."""
    try:
        data: dict[str, Any] = tomllib.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return InvalidSchool(file, err)
    org_id = (
        data.get("chengjiyun", {}).get("org_id")
        if isinstance(data.get("chengjiyun"), dict)
        else None
    )
    alerts = None
    if isinstance(data.get("alerts"), dict):
        try:
            alerts = AlertsConfig.model_validate(data["alerts"])
        except (ValidationError, ConfigError):
            alerts = None
    return InvalidSchool(
        file, err, org_id=org_id if isinstance(org_id, str) else None, alerts=alerts
    )
