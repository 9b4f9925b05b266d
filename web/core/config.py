"""Configuration from the environment, with defaults that are safe for development."""
import ipaddress
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
INSTANCE = ROOT / "instance"
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class ConfigError(RuntimeError):
    """The environment does not describe a runnable app."""


def _flag(value: str | None, default: bool) -> bool:
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _development_secret(instance: Path) -> str:
    """A random key generated once and kept in instance/, so sessions survive restarts."""
    path = instance / "secret_key"
    if not path.exists():
        instance.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(48))
    return path.read_text().strip()


def trusted_networks(value: str | None) -> tuple[Network, ...]:
    """TRUSTED_PROXIES: addresses and networks (CIDR), IPv4 or IPv6, separated by commas."""
    networks = []
    for entry in filter(None, (part.strip() for part in (value or "").split(","))):
        try:
            networks.append(ipaddress.ip_network(entry))
        except ValueError as error:
            raise ConfigError(
                f"TRUSTED_PROXIES must list IP addresses or networks such as 10.0.0.5, "
                f"10.0.0.0/8 or fd00::/8, separated by commas; {entry!r} is not one: {error}") from None
    return tuple(networks)


@dataclass(frozen=True)
class Config:
    database_url: str
    secret_key: str
    env: str = "development"
    host: str = "127.0.0.1"
    port: int = 8000
    registration_open: bool = True
    bench: bool = False
    # Only requests from these proxies may say, in forwarded headers, who the client is.
    trusted_proxies: tuple[Network, ...] = ()
    # With a key the audit chain is an HMAC: rebuilding it after tampering needs the key too.
    audit_hmac_key: str = ""
    # Login throttling: after `free` failures within `window` seconds, back off.
    throttle_free_failures: int = 5
    throttle_window: int = 15 * 60
    session_idle: int = 2 * 60 * 60
    session_absolute: int = 12 * 60 * 60
    remember_idle: int = 14 * 24 * 60 * 60
    remember_absolute: int = 30 * 24 * 60 * 60

    @property
    def production(self) -> bool:
        return self.env == "production"

    @classmethod
    def from_env(cls, environ=None, instance: Path = INSTANCE) -> "Config":
        environ = os.environ if environ is None else environ
        env = environ.get("GATEHOUSE_ENV", "development").strip().lower()
        if env not in {"development", "production"}:
            raise ConfigError(f"GATEHOUSE_ENV must be 'development' or 'production', not {env!r}")
        secret = environ.get("SECRET_KEY", "").strip()
        if not secret:
            if env == "production":
                raise ConfigError("SECRET_KEY must be set in production (GATEHOUSE_ENV=production)")
            secret = _development_secret(instance)
        elif len(secret) < 32:
            raise ConfigError("SECRET_KEY must be at least 32 characters long")
        audit_key = environ.get("AUDIT_HMAC_KEY", "").strip()
        if audit_key and len(audit_key) < 32:
            raise ConfigError("AUDIT_HMAC_KEY must be at least 32 characters long (or unset)")
        url = environ.get("DATABASE_URL", "").strip()
        if not url:
            instance.mkdir(parents=True, exist_ok=True)
            url = f"sqlite+aiosqlite:///{instance / 'gatehouse.sqlite3'}"
        try:
            port = int(environ.get("PORT", "8000"))
        except ValueError:
            raise ConfigError(f"PORT must be a number, not {environ.get('PORT')!r}") from None
        if not 1 <= port <= 65535:
            raise ConfigError(f"PORT must be between 1 and 65535, not {port}")
        return cls(
            database_url=url,
            secret_key=secret,
            env=env,
            host=environ.get("HOST", "127.0.0.1"),
            port=port,
            registration_open=_flag(environ.get("REGISTRATION_OPEN"), True),
            bench=_flag(environ.get("GATEHOUSE_BENCH"), False),
            trusted_proxies=trusted_networks(environ.get("TRUSTED_PROXIES")),
            audit_hmac_key=audit_key,
        )
