"""Configuration from the environment, with defaults that are safe for development."""
import base64
import binascii
import ipaddress
import os
import secrets
from dataclasses import dataclass, field, fields
from email.utils import parseaddr
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

ROOT = Path(__file__).resolve().parents[2]
INSTANCE = ROOT / "instance"
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class ConfigError(RuntimeError):
    """The environment does not describe a runnable app."""


def _flag(value: str | None, default: bool) -> bool:
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _number(environ, name: str, kind: type, default: str, low, high, unit: str = ""):
    """The number `name` holds (`kind`: int or float), `default` when unset, between `low` and
    `high` inclusive; `unit` names what it counts in the error ("of days")."""
    text = environ.get(name, default)
    try:
        value = kind(text)
    except ValueError:
        raise ConfigError(f"{name} must be a number{unit}, not {text!r}") from None
    if not low <= value <= high:
        raise ConfigError(f"{name} must be between {low} and {high}, not {value}")
    return value


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
class MailServer:
    """Where and how the outbox's sender delivers: MAIL_URL, parsed."""
    host: str
    port: int
    username: str = ""
    password: str = ""
    use_tls: bool = False  # smtps://: TLS from the first byte
    # smtp://...?starttls=1: refuse a server without STARTTLS; 0: never; unset: if offered.
    start_tls: bool | None = None

    def __repr__(self) -> str:  # never the password, in a log or a traceback
        scheme = "smtps" if self.use_tls else "smtp"
        return f"MailServer({scheme}://{self.host}:{self.port}, user={self.username!r})"


def factor_keys(value: str) -> tuple[str, ...]:
    """FACTOR_KEYS: Fernet keys (url-safe base64 of 32 bytes), newest first, separated by commas.
    The newest encrypts; the others only decrypt, until `run.py factors-rekey` has moved every
    secret to the newest."""
    keys = tuple(filter(None, (part.strip() for part in value.split(","))))
    for key in keys:
        try:
            ok = len(base64.urlsafe_b64decode(key.encode())) == 32
        except (ValueError, binascii.Error):
            ok = False
        if not ok:
            raise ConfigError("FACTOR_KEYS must list Fernet keys (44 characters of url-safe base64, made by "
                              "`python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'`), "
                              "newest first, separated by commas")
    return keys


def roles_list(name: str, value: str) -> tuple[str, ...]:
    from .tables import ROLES
    names = tuple(filter(None, (part.strip() for part in value.split(","))))
    if unknown := [n for n in names if n not in ROLES]:
        raise ConfigError(f"{name} may name only {', '.join(ROLES)} (separated by commas), not {', '.join(unknown)}")
    return names


MAIL_URL_EXAMPLE = "smtp://user:password@mail.example.com:587?starttls=1 or smtps://user:password@mail.example.com"
DEVELOPMENT_BASE_URL = "http://localhost:8000"


def mail_server(value: str, production: bool) -> MailServer:
    """MAIL_URL: smtp://[user:password@]host[:port][?starttls=0|1] or smtps://... (implicit TLS)."""
    def refuse(problem: str):
        raise ConfigError(f"MAIL_URL {problem}; use a URL such as {MAIL_URL_EXAMPLE}")
    try:
        url = urlsplit(value)
        port = url.port
    except ValueError as error:
        refuse(f"is not a valid URL ({error})")
    if url.scheme not in {"smtp", "smtps"}:
        refuse(f"must start with smtp:// or smtps://, not {url.scheme or '(nothing)'}://")
    if not url.hostname:
        refuse("names no host")
    options = dict(parse_qsl(url.query, keep_blank_values=True))
    if set(options) - {"starttls"}:
        refuse(f"has unknown options {sorted(set(options) - {'starttls'})}; only starttls=0 or 1 is understood")
    if options.get("starttls", "0") not in {"0", "1"}:
        refuse(f"says starttls={options['starttls']!r}; write starttls=1 or starttls=0")
    use_tls = url.scheme == "smtps"
    start_tls = {"1": True, "0": False}.get(options.get("starttls"))
    if use_tls and start_tls:
        refuse("asks for both smtps:// (TLS from the start) and starttls=1; choose one")
    username, password = unquote(url.username or ""), unquote(url.password or "")
    if production and username and not use_tls and not start_tls:
        refuse("would send its password before TLS is certain: in production use smtps:// or starttls=1")
    return MailServer(host=url.hostname, port=port or (465 if use_tls else 587 if start_tls else 25),
                      username=username, password=password, use_tls=use_tls, start_tls=start_tls)


def base_url(value: str, production: bool, port: int = 8000) -> str:
    """BASE_URL: where people reach the app (links in mail point there); scheme and host, and
    maybe a path, without a trailing slash. Never taken from a request's Host header. In
    development it defaults to localhost on the port served."""
    if not value:
        if production:
            raise ConfigError("BASE_URL must be set in production (GATEHOUSE_ENV=production), "
                              "such as https://accounts.example.com: links in mail are built from it")
        return f"http://localhost:{port}"
    url = urlsplit(value)
    if url.scheme not in {"http", "https"} or not url.hostname or url.query or url.fragment or url.username:
        raise ConfigError(f"BASE_URL must be an address such as https://accounts.example.com "
                          f"(a scheme and a host, no query), not {value!r}")
    if production and url.scheme != "https":
        raise ConfigError(f"BASE_URL must use https in production, not {value!r}")
    return value.rstrip("/")


def mail_from(value: str, base: str) -> str:
    """MAIL_FROM: the From address; by default noreply at BASE_URL's host."""
    if not value:
        return f"Gatehouse <noreply@{urlsplit(base).hostname}>"
    _, address = parseaddr(value)
    if "@" not in address or "\n" in value or "\r" in value:
        raise ConfigError(f"MAIL_FROM must be an address such as 'Gatehouse <noreply@example.com>', not {value!r}")
    return value


@dataclass(frozen=True)
class Config:
    database_url: str = field(repr=False)  # shown without its password (__repr__)
    secret_key: str = field(repr=False)  # keys stay out of logs and tracebacks, as the mail password
    env: str = "development"
    host: str = "127.0.0.1"
    port: int = 8000
    registration_open: bool = True
    # Unconfirmed addresses cannot log in (otherwise a banner asks to confirm).
    require_email_confirmation: bool = False
    invitation_days: int = 7
    # How often each worker looks for mail to send and imports to run that another process
    # left (a crashed worker, the command line); what its own process commits starts at once.
    poll_seconds: float = 5.0
    bench: bool = False
    # Only requests from these proxies may say, in forwarded headers, who the client is.
    trusted_proxies: tuple[Network, ...] = ()
    # With a key the audit chain is an HMAC: rebuilding it after tampering needs the key too.
    audit_hmac_key: str = field(default="", repr=False)
    # Outgoing mail: without a server (development only) messages stay in the outbox (/mail).
    mail_server: MailServer | None = None
    mail_from: str = "Gatehouse <noreply@localhost>"
    base_url: str = DEVELOPMENT_BASE_URL
    # Login throttling: after `free` failures within `window` seconds, back off.
    throttle_free_failures: int = 5
    throttle_window: int = 15 * 60
    session_idle: int = 2 * 60 * 60
    session_absolute: int = 12 * 60 * 60
    remember_idle: int = 14 * 24 * 60 * 60
    remember_absolute: int = 30 * 24 * 60 * 60
    # Keys that encrypt second-factor secrets, newest first; empty: derived from SECRET_KEY
    # (development only: from_env refuses production without FACTOR_KEYS).
    factor_keys: tuple[str, ...] = field(default=(), repr=False)
    # Roles that must have a second factor: their login asks them to enrol before anything else.
    require_2fa_roles: tuple[str, ...] = ()
    # Live updates (GET /events): a comment line this often keeps proxies from closing an idle
    # stream and finds dead ones; at most this many streams per worker process.
    live_heartbeat: float = 15.0
    live_max_streams: int = 500

    def __repr__(self) -> str:
        from sqlalchemy.engine import make_url
        shown = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in fields(self) if f.repr)
        return f"Config(database_url={make_url(self.database_url).render_as_string(hide_password=True)!r}, {shown})"

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
        port = _number(environ, "PORT", int, "8000", 1, 65535)
        invitation_days = _number(environ, "INVITATION_DAYS", int, "7", 1, 90, " of days")
        poll_seconds = _number(environ, "BACKGROUND_POLL_SECONDS", float, "5", 0.1, 86400, " of seconds")
        production = env == "production"
        mail_url = environ.get("MAIL_URL", "").strip()
        if not mail_url and production:
            raise ConfigError(f"MAIL_URL must be set in production (GATEHOUSE_ENV=production), "
                              f"such as {MAIL_URL_EXAMPLE}")
        base = base_url(environ.get("BASE_URL", "").strip(), production, port)
        keys = factor_keys(environ.get("FACTOR_KEYS", ""))
        if production and not keys:
            raise ConfigError("FACTOR_KEYS must be set in production (GATEHOUSE_ENV=production): it encrypts "
                              "second-factor secrets; make one with `python -c 'from cryptography.fernet "
                              "import Fernet; print(Fernet.generate_key().decode())'`")
        live_heartbeat = _number(environ, "LIVE_HEARTBEAT_SECONDS", float, "15", 0.05, 300, " of seconds")
        live_max_streams = _number(environ, "LIVE_MAX_STREAMS", int, "500", 1, 100_000)
        two_factor_roles = roles_list("REQUIRE_2FA_ROLES", environ.get("REQUIRE_2FA_ROLES",
                                                                       "Admin" if production else ""))
        return cls(
            database_url=url,
            secret_key=secret,
            env=env,
            host=environ.get("HOST", "127.0.0.1"),
            port=port,
            registration_open=_flag(environ.get("REGISTRATION_OPEN"), True),
            require_email_confirmation=_flag(environ.get("REQUIRE_EMAIL_CONFIRMATION"), False),
            invitation_days=invitation_days,
            poll_seconds=poll_seconds,
            bench=_flag(environ.get("GATEHOUSE_BENCH"), False),
            trusted_proxies=trusted_networks(environ.get("TRUSTED_PROXIES")),
            audit_hmac_key=audit_key,
            mail_server=mail_server(mail_url, production) if mail_url else None,
            mail_from=mail_from(environ.get("MAIL_FROM", "").strip(), base),
            base_url=base,
            factor_keys=keys,
            require_2fa_roles=two_factor_roles,
            live_heartbeat=live_heartbeat,
            live_max_streams=live_max_streams,
        )
