"""The building blocks of config parsing: secret references, typed reads of one TOML table with
errors naming file and key path, and the host/port checks every section shares.

monitor/config.py, monitor/config_ca.py and monitor/config_notify.py build on it; it imports none of them.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import os
import re
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import SplitResult, urlsplit

from expressway_certd.monitor.durations import parse_duration
from expressway_certd.monitor.errors import ConfigError

T = TypeVar("T")

# Shortest duration any key takes: below it a timer turns into a busy loop.
MIN_DURATION = timedelta(milliseconds=100)


@dataclass(frozen=True)
class Secret:
    """A reference to a secret (`env:NAME` or `file:PATH`); `reveal()` reads it when needed."""

    ref: str
    key_path: str = ""
    base_dir: Path = field(default=Path("."), compare=False)

    def __repr__(self) -> str:
        return f"Secret({self.ref!r})"

    __str__ = __repr__

    def reveal(self) -> str:
        scheme, _, rest = self.ref.partition(":")
        if scheme == "env":
            value = os.environ.get(rest)
            if value is None:
                raise ConfigError(
                    f"{self.key_path}: environment variable {rest} is not set; "
                    f"export it before starting expressway-certd"
                )
            if not value.strip():
                raise ConfigError(
                    f"{self.key_path}: environment variable {rest} is empty; "
                    "give it the secret's value"
                )
            return value
        path = Path(rest) if Path(rest).is_absolute() else self.base_dir / rest
        try:
            mode = path.stat().st_mode
            value = path.read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise ConfigError(
                f"{self.key_path}: cannot read secret file {path}: {exc.strerror}; "
                "create it readable by the service user, mode 0600"
            ) from exc
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigError(
                f"{self.key_path}: secret file {path} is readable by group or others "
                f"(mode {stat.S_IMODE(mode):04o}); run: chmod 600 {path}"
            )
        if not value.strip():
            raise ConfigError(
                f"{self.key_path}: secret file {path} is empty; write the secret there"
            )
        return value


class Section:
    """Typed reads from one TOML table with errors naming file and key path."""

    def __init__(
        self,
        file: Path,
        path: str,
        table: Mapping[str, Any],
        known: set[str],
        *,
        check_files: bool = True,  # off only to lint example configs whose paths exist elsewhere
    ) -> None:
        self.file = file
        self.check_files = check_files
        self.path = path
        self.table = table
        for key in table:
            if key not in known:
                hint = difflib.get_close_matches(key, sorted(known), n=1)
                fix = (
                    f"did you mean {hint[0]!r}?"
                    if hint
                    else f"known keys: {', '.join(sorted(known))}"
                )
                raise self.error(key, f"unknown key; {fix}")

    def key(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path and key else self.path or key

    def error(self, key: str, message: str) -> ConfigError:
        return ConfigError(f"{self.file}: {self.key(key)}: {message}")

    def has(self, key: str) -> bool:
        return key in self.table

    def get_str(
        self, key: str, default: str | None = None, *, required: bool = False
    ) -> str | None:
        if key not in self.table:
            if required:
                raise self.error(key, "is required")
            return default
        value = self.table[key]
        if not isinstance(value, str) or not value.strip():
            raise self.error(key, f"must be a non-empty string, got {value!r}")
        return value.strip()

    def get_int(self, key: str, default: int, *, minimum: int = 1, maximum: int = 1 << 31) -> int:
        value = self.table.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(key, f"must be an integer, got {value!r}")
        if not minimum <= value <= maximum:
            raise self.error(key, f"must be between {minimum} and {maximum}, got {value}")
        return value

    def get_bool(self, key: str, default: bool) -> bool:
        value = self.table.get(key, default)
        if not isinstance(value, bool):
            raise self.error(key, f"must be true or false, got {value!r}")
        return value

    def get_duration(
        self, key: str, default: timedelta, *, minimum: timedelta = MIN_DURATION
    ) -> timedelta:
        if key not in self.table:
            return default
        try:
            value = parse_duration(self.table[key])
        except ValueError as exc:
            raise self.error(key, str(exc)) from exc
        if value < minimum:
            raise self.error(
                key, f"must be at least {minimum.total_seconds():g}s, got {self.table[key]!r}"
            )
        return value

    def path_of(self, key: str, value: str, base_dir: Path) -> Path:
        """`value` as a path: `~` expanded, relative to `base_dir` unless absolute."""
        try:
            path = Path(value).expanduser()
        except RuntimeError as exc:  # ~user of a user that does not exist
            raise self.error(
                key, f"cannot expand {value!r}: {exc}; write an absolute path"
            ) from exc
        return path if path.is_absolute() else base_dir / path

    def url_parts(self, key: str, url: str, example: str) -> SplitResult:
        """`url` split into its parts; a malformed one (e.g. a broken IPv6 host) is an error."""
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 - raises ValueError for a port out of range
        except ValueError as exc:
            # The URL may carry a token: name the key, not the value.
            raise self.error(key, f"is not a valid URL ({exc}); write it like {example!r}") from exc
        return parts

    def get_file(self, key: str, base_dir: Path) -> Path | None:
        value = self.get_str(key)
        if value is None:
            return None
        path = self.path_of(key, value, base_dir)
        if self.check_files and not path.is_file():
            raise self.error(key, f"file {path} does not exist; give the path of a PEM file")
        return path

    def get_secret(self, key: str, base_dir: Path) -> Secret | None:
        value = self.table.get(key)
        if value is None:
            return None
        if not isinstance(value, str) or not value.startswith(("env:", "file:")):
            # Never echo the value: it is probably the password itself.
            raise self.error(
                key,
                "must be a secret reference 'env:VARIABLE' or 'file:/path/to/secret'; "
                "do not write secrets into the config file",
            )
        scheme, _, rest = value.partition(":")
        if not rest:
            raise self.error(key, f"'{scheme}:' needs a name after the colon")
        return Secret(value, self.key(key), base_dir)


PORT_DIGITS = re.compile(r"^[0-9]{1,5}$")
_DNS_LABEL = re.compile(r"^(?!-)[A-Za-z0-9_-]{1,63}(?<!-)$")


def port_number(text: str, *, allow_zero: bool = False) -> int | None:
    """A TCP port written as ASCII digits, or None."""
    if not PORT_DIGITS.match(text):
        return None
    port = int(text)
    return port if (allow_zero or port > 0) and port < 65536 else None


def host_problem(host: str, *, ip: bool = True) -> str | None:
    """Why `host` is not a DNS name (or, when `ip`, an IP address); None when it is fine."""
    try:
        ipaddress.ip_address(host)
        return None if ip else f"{host!r} is an IP address; a DNS name is needed here"
    except ValueError:
        pass
    if ip and ":" in host:
        return f"{host!r} is not a valid IPv6 address"
    name = host.removesuffix(".")
    if not name or len(name) > 253:
        return f"{host!r} is not a host name"
    if not all(_DNS_LABEL.match(label) for label in name.split(".")):
        if not host.isascii():
            return f"{host!r} is not a host name; write international names as 'xn--' (punycode)"
        return f"{host!r} is not a host name (letters, digits, '-' and '.' only)"
    return None


def check_host(s: Section, key: str, host: str, *, ip: bool = True) -> str:
    problem = host_problem(host, ip=ip)
    if problem is not None:
        raise s.error(key, problem)
    return host


# --- declarations: a config dataclass field is a TOML key with its default and its doc -------


def key(default: T, doc: str, *, shown: str = "", name: str = "", group: str = "") -> T:
    """A TOML key declared once: the field's default is the parser's, `doc` goes to the docs.

    `shown` replaces the default in the docs when the value alone would not say it
    ("none (restart at once)"); `name` is the TOML key when it differs from the field's name.
    """
    meta = {"doc": doc, "shown": shown, "key": name, "group": group}
    return field(default=default, metadata=meta)


def key_from(factory: Callable[[], T], doc: str, *, shown: str, name: str = "") -> T:
    """Like `key`, for a default computed when the config is built (paths from the environment)."""
    meta = {"doc": doc, "shown": shown, "key": name, "group": ""}
    return field(default_factory=factory, metadata=meta)


_QUERY_PASSWORD = re.compile(r"(?i)([?&](?:password|passwd)=)[^&#]*")


def redact_url(url: str) -> str:
    """A database URL (or path) as it may be shown: a password in the userinfo or in the query
    (`?password=`, which asyncpg reads) becomes `***`; anything else is kept as written."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    userinfo, at, host = rest.rpartition("@")
    if at and ":" in userinfo:
        rest = f"{userinfo.split(':', 1)[0]}:***@{host}"
    return _QUERY_PASSWORD.sub(r"\1***", f"{scheme}://{rest}")


def required_key(doc: str, *, shown: str = "required", name: str = "") -> Any:
    """A TOML key without a default in the dataclass (the parser decides what a missing one means)."""
    return field(metadata={"doc": doc, "shown": shown, "key": name, "group": ""})


def derived() -> Any:
    """A field without a default that is no TOML key of its own: the parser derives it from one
    that is (the port of a `HOST[:PORT]` key). Written like `required_key` so that fields
    declared after it keep their order."""
    return field()


def one_of(values: tuple[str, ...]) -> str:
    """The values a key takes, for its doc: `a`, `b` or `c` (written from the tuple the parser
    checks against, so the docs cannot list other values)."""
    quoted = [f"`{v}`" for v in values]
    return quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"


def declared(cls: Any) -> list[dataclasses.Field[Any]]:
    """The fields of a config dataclass that are TOML keys, in declaration order."""
    return [f for f in dataclasses.fields(cls) if "doc" in f.metadata]


def toml_keys(cls: Any) -> set[str]:
    """The keys a section accepts, derived from its declarations."""
    return {f.metadata["key"] or f.name for f in declared(cls)}
