"""Static configuration: `bridge.toml` parsed into frozen dataclasses.

Owns the schema of the file, its defaults and its validation.  `load_config`
collects every problem with the key it belongs to and raises one ConfigError
listing them all (the CLI prints them and exits 2), the way mox's config
checker does.  Tenants, accounts and policies are not here: they live in the
database and change through `dp2bridge` (STYLE.md section 5).

Relative paths in the file are resolved against the directory that holds it,
so a home directory can be moved as a whole.  Imports only the stdlib and
bridge.errors.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bridge.errors import ConfigError

LOG_LEVELS = ("trace", "debug", "info", "warning", "error")


@dataclass(frozen=True)
class Listen:
    """A parsed "host:port" listener address (IPv6 as "[::1]:587")."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class BridgeSection:
    # Host name used in SMTP greetings, Received and Authentication-Results headers.
    hostname: str = "localhost"
    # Domain under which parties are addressed by legal id: <cpr>@cpr.<domain>, <cvr>@cvr.<domain>.
    directory_domain: str = "dp2.test"
    # Directory for message blobs (content-addressed files). Relative to the config file.
    blob_dir: str = "blobs"


@dataclass(frozen=True)
class DatabaseSection:
    # SQLAlchemy URL. "sqlite:///bridge.sqlite3" (relative to the config file) is the embedded
    # default; "postgresql+psycopg://user@host/db" runs several nodes on one database.
    url: str = "sqlite:///bridge.sqlite3"


@dataclass(frozen=True)
class TLSSection:
    # Certificate chain (leaf first) presented by every listener. Relative to the config file.
    cert_file: str = "certs/server.pem"
    # Private key for cert_file; must not be readable by group or others.
    key_file: str = "certs/server.key"
    # The CA that issued cert_file, shown to users so their mail clients can trust it.
    ca_file: str = "certs/ca.pem"


@dataclass(frozen=True)
class SMTPSection:
    # Submission with STARTTLS (RFC 6409); AUTH is offered only after STARTTLS.
    listen_starttls: tuple[str, ...] = ("127.0.0.1:1587",)
    # Submission over implicit TLS (RFC 8314 "submissions").
    listen_implicit_tls: tuple[str, ...] = ("127.0.0.1:1465",)
    # Largest message accepted, in bytes; announced in EHLO as SIZE. aiosmtpd holds a whole
    # message in memory (about 2.2x its size at peak), so keep this in the tens of MiB.
    max_message_size: int = 32 * 1024 * 1024
    # Most RCPT TO per message; more get "452 4.5.3".
    max_recipients: int = 100
    # Largest top-level header section, in bytes.
    max_header_bytes: int = 256 * 1024
    # Most top-level header fields.
    max_header_count: int = 1000
    # Deepest nesting of multipart and message/rfc822 parts.
    max_mime_depth: int = 20
    # Seconds of client silence before the connection is closed.
    timeout: int = 300
    # Seconds during which a resubmission of the same Message-ID by the same account returns
    # the first acceptance instead of a second message (0 turns this off).
    dedup_window: int = 86400


@dataclass(frozen=True)
class IMAPSection:
    # IMAP with STARTTLS; LOGIN is disabled until TLS is up (LOGINDISABLED).
    listen_starttls: tuple[str, ...] = ("127.0.0.1:1143",)
    # IMAP over implicit TLS.
    listen_implicit_tls: tuple[str, ...] = ("127.0.0.1:1993",)


@dataclass(frozen=True)
class AuthSection:
    # Seconds a failed login is delayed the first time; doubles with each recent failure for
    # the same connection, the same account from the same IP, or the same IP.
    failure_delay: float = 1.0
    # Upper bound of that delay, in seconds.
    failure_delay_max: float = 16.0
    # Failed logins after which a connection is closed.
    max_failures_per_connection: int = 5
    # Seconds for which a failure counts towards the delays above.
    failure_window: int = 900


@dataclass(frozen=True)
class DeliverySection:
    # Seconds between scans of the delivery queue when nothing woke the worker.
    poll_interval: float = 1.0
    # Attempts before a delivery job is marked failed.
    max_attempts: int = 10
    # Seconds before a failed attempt is retried (grows linearly with the attempt number).
    retry_delay: float = 30.0


@dataclass(frozen=True)
class DropFolderSection:
    # Watch the MeMo drop folders: <base_dir>/<tenant>/incoming/ for each tenant.
    enabled: bool = True
    # Directory holding one folder per tenant. Relative to the config file.
    base_dir: str = "dropfolders"
    # Seconds between scans of the incoming/ folders.
    poll_interval: float = 1.0


@dataclass(frozen=True)
class APISection:
    # Serve the HTTP API (POST /v1/messages with MeMo XML, status, evidence; OpenAPI at
    # /openapi.json) over HTTPS with the [tls] certificate; callers use bearer tokens.
    enabled: bool = True
    # Addresses of the HTTPS listeners of the API.
    listen: tuple[str, ...] = ("127.0.0.1:1443",)
    # Largest request body accepted, in bytes; larger requests get 413 before they are read.
    max_body_bytes: int = 16 * 1024 * 1024


@dataclass(frozen=True)
class LoggingSection:
    # Root level: trace (protocol transcripts, AUTH always masked), debug, info, warning, error.
    level: str = "info"
    # Log file; empty means standard error.
    file: str = ""
    # Per-logger levels, e.g. { "bridge.smtp" = "debug" }.
    levels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Config:
    path: Path
    bridge: BridgeSection
    database: DatabaseSection
    tls: TLSSection
    smtp: SMTPSection
    imap: IMAPSection
    auth: AuthSection
    delivery: DeliverySection
    dropfolder: DropFolderSection
    api: APISection
    logging: LoggingSection

    @property
    def home(self) -> Path:
        return self.path.parent

    def resolve(self, value: str) -> Path:
        """A path from the file, resolved against the config file's directory."""
        p = Path(value).expanduser()
        return p if p.is_absolute() else self.home / p

    @property
    def database_url(self) -> str:
        """The URL with a relative SQLite path made absolute."""
        url = self.database.url
        prefix = "sqlite:///"
        if url.startswith(prefix) and not url.startswith(prefix + "/") and url != "sqlite://":
            return prefix + str(self.resolve(url[len(prefix):]))
        return url

    def smtp_listeners(self) -> dict[str, list[Listen]]:
        return {"starttls": [parse_listen(s) for s in self.smtp.listen_starttls],
                "implicit": [parse_listen(s) for s in self.smtp.listen_implicit_tls]}


SECTIONS: dict[str, type] = {
    "bridge": BridgeSection, "database": DatabaseSection, "tls": TLSSection,
    "smtp": SMTPSection, "imap": IMAPSection, "auth": AuthSection,
    "delivery": DeliverySection, "dropfolder": DropFolderSection, "api": APISection,
    "logging": LoggingSection,
}


def parse_listen(text: str) -> Listen:
    """"127.0.0.1:587" or "[::1]:587" -> Listen; raises ValueError with a readable text."""
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise ValueError(f"{text!r} is not host:port")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{text!r} has no valid port (0-65535)")
    return Listen(host, int(port))


def load_config(path: Path | str) -> Config:
    """Read and validate bridge.toml; raises ConfigError listing every problem."""
    path = Path(os.path.abspath(path))          # absolute and without "..", symlinks kept
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, [f"not valid TOML: {exc}"]) from None
    except (UnicodeDecodeError, OSError) as exc:
        raise ConfigError(path, [_unreadable(path, exc)]) from None
    problems: list[str] = []
    sections = _build_sections(raw, problems)
    config = Config(path=path, **sections)
    _check_values(config, problems)
    if problems:
        raise ConfigError(path, problems)
    return config


def _unreadable(path: Path, exc: Exception) -> str:
    """What is wrong with a config file that could not be read, and what to do."""
    if isinstance(exc, FileNotFoundError):
        if path.name == "bridge.toml":
            return f"file not found (hint: create one with `dp2bridge init --home {path.parent}`)"
        return "file not found; check the path (`dp2bridge init --home DIR` writes DIR/bridge.toml)"
    if isinstance(exc, IsADirectoryError):
        return f"is a directory; give the configuration file in it, e.g. {path / 'bridge.toml'}"
    if isinstance(exc, PermissionError):
        return ("this user may not read it (permission denied); run the command as the user "
                "that owns the home, or fix the file's permissions")
    if isinstance(exc, UnicodeDecodeError):
        return "not a TOML text file (it is not UTF-8); is this the right file?"
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "it cannot be read"
    return f"cannot read it: {reason}"


def _without_password(url: str) -> str:
    """url with the password of its user:password@ part replaced by ***."""
    return re.sub(r"^([^/]*//[^/@:]*:).*@", r"\1***@", url, flags=re.DOTALL)   # to the last @


def _build_sections(raw: dict[str, Any], problems: list[str]) -> dict[str, Any]:
    for name in raw:
        if name not in SECTIONS:
            problems.append(f"{name}: unknown section (known: {', '.join(SECTIONS)})")
    out = {}
    for name, cls in SECTIONS.items():
        values = raw.get(name, {})
        if not isinstance(values, dict):
            problems.append(f"{name}: must be a table ([{name}])")
            values = {}
        out[name] = _build_section(name, cls, values, problems)
    return out


def _build_section(section: str, cls: type, values: dict[str, Any], problems: list[str]) -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        f = fields.get(key)
        if f is None:
            problems.append(f"{section}.{key}: unknown option (known: {', '.join(fields)})")
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        coerced = _coerce(value, default)
        if coerced is None:
            problems.append(f"{section}.{key}: expected {_kind(default)}, got {value!r}")
            continue
        kwargs[key] = coerced
    return cls(**kwargs)


def _kind(default: Any) -> str:
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string",
            tuple: "a list of strings", dict: "a table of strings"}[type(default)]


def _coerce(value: Any, default: Any) -> Any:
    """Value converted to the type of `default`, or None when it does not fit."""
    if isinstance(default, bool):
        return value if isinstance(value, bool) else None
    if isinstance(default, int):
        return value if isinstance(value, int) and not isinstance(value, bool) else None
    if isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return float(value) if ok else None
    if isinstance(default, str):
        return value if isinstance(value, str) else None
    if isinstance(default, tuple):
        if isinstance(value, str):
            value = [value]
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
        return tuple(value) if ok else None
    if isinstance(default, dict):
        ok = isinstance(value, dict) and all(isinstance(v, str) for v in value.values())
        return dict(value) if ok else None
    return None  # pragma: no cover - every field type is listed above


def _check_values(c: Config, problems: list[str]) -> None:
    _check_names(c, problems)
    _check_listeners(c, problems)
    _check_limits(c, problems)
    _check_files(c, problems)
    _check_logging(c, problems)


def _check_names(c: Config, problems: list[str]) -> None:
    for key, value in (("bridge.hostname", c.bridge.hostname),
                       ("bridge.directory_domain", c.bridge.directory_domain)):
        if not value or any(ch.isspace() for ch in value) or "@" in value:
            problems.append(f"{key}: {value!r} is not a domain name")
    url = c.database.url
    if not (url.startswith("sqlite://") or url.startswith("postgresql")):
        problems.append(f"database.url: {_without_password(url)!r} is neither sqlite:///FILE nor "
                        f"postgresql+psycopg://USER@HOST/DB")


def _check_listeners(c: Config, problems: list[str]) -> None:
    seen: dict[tuple[str, int], str] = {}
    for section, obj, keys in (("smtp", c.smtp, ("listen_starttls", "listen_implicit_tls")),
                               ("imap", c.imap, ("listen_starttls", "listen_implicit_tls")),
                               ("api", c.api, ("listen",))):
        for key in keys:
            for text in getattr(obj, key):
                try:
                    lst = parse_listen(text)
                except ValueError as exc:
                    problems.append(f"{section}.{key}: {exc}")
                    continue
                if section == "smtp" and lst.port == 25:
                    problems.append(f"smtp.{key}: port 25 is for relay, not submission")
                where = (lst.host, lst.port)
                if lst.port and where in seen:
                    problems.append(f"{section}.{key}: {text} is also used by {seen[where]}")
                seen[where] = f"{section}.{key}"


def _check_limits(c: Config, problems: list[str]) -> None:
    positive = {
        "smtp.max_message_size": c.smtp.max_message_size, "smtp.max_recipients": c.smtp.max_recipients,
        "smtp.max_header_bytes": c.smtp.max_header_bytes, "smtp.max_header_count": c.smtp.max_header_count,
        "smtp.max_mime_depth": c.smtp.max_mime_depth, "smtp.timeout": c.smtp.timeout,
        "auth.max_failures_per_connection": c.auth.max_failures_per_connection,
        "auth.failure_window": c.auth.failure_window, "delivery.max_attempts": c.delivery.max_attempts,
        "delivery.poll_interval": c.delivery.poll_interval,
        "dropfolder.poll_interval": c.dropfolder.poll_interval,
        "api.max_body_bytes": c.api.max_body_bytes,
    }
    for key, value in positive.items():
        if value <= 0:
            problems.append(f"{key}: must be greater than 0, got {value}")
    for key, value in (("auth.failure_delay", c.auth.failure_delay),
                       ("auth.failure_delay_max", c.auth.failure_delay_max),
                       ("delivery.retry_delay", c.delivery.retry_delay),
                       ("smtp.dedup_window", c.smtp.dedup_window)):
        if value < 0:
            problems.append(f"{key}: must not be negative, got {value}")


def _check_files(c: Config, problems: list[str]) -> None:
    for key in ("cert_file", "key_file"):
        p = c.resolve(getattr(c.tls, key))
        if not p.is_file():
            problems.append(f"tls.{key}: {p} does not exist")
    key = c.resolve(c.tls.key_file)
    if key.is_file() and key.stat().st_mode & 0o077:
        problems.append(f"tls.key_file: {key} is readable by others (hint: chmod 600 {key})")
    if not c.dropfolder.base_dir.strip():
        problems.append("dropfolder.base_dir: must name a directory (default \"dropfolders\")")


def _check_logging(c: Config, problems: list[str]) -> None:
    if c.logging.level not in LOG_LEVELS:
        problems.append(f"logging.level: {c.logging.level!r} is not one of {', '.join(LOG_LEVELS)}")
    for name, level in c.logging.levels.items():
        if level not in LOG_LEVELS:
            problems.append(f"logging.levels.{name}: {level!r} is not one of {', '.join(LOG_LEVELS)}")
