"""Configuration from the environment: safe development defaults, strict production."""
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from web import create_app
from web.core.config import Config, ConfigError

ROOT = Path(__file__).resolve().parent.parent
GOOD_SECRET = "s" * 40


FACTOR_KEY = "n2Rm4Xw1Jb7kS0pLq9VtYc3aZe6Hf8Gd5Ui2Ow4Kx0E="


def from_env(tmp_path, **environ) -> Config:
    return Config.from_env(environ=environ, instance=tmp_path)


# ---- SECRET_KEY ---------------------------------------------------------------------------

def test_development_without_secret_key_generates_one_and_keeps_it_private(tmp_path):
    config = from_env(tmp_path)
    key_file = tmp_path / "secret_key"
    assert key_file.exists()
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert key_file.read_text().strip() == config.secret_key
    assert len(config.secret_key) >= 32


def test_development_secret_key_is_the_same_on_the_next_start(tmp_path):
    first = from_env(tmp_path).secret_key
    second = from_env(tmp_path).secret_key
    assert first == second


def test_development_secret_keys_differ_between_instances(tmp_path):
    assert from_env(tmp_path / "a").secret_key != from_env(tmp_path / "b").secret_key


def test_secret_key_from_the_environment_is_used_and_nothing_is_written(tmp_path):
    config = from_env(tmp_path, SECRET_KEY=GOOD_SECRET)
    assert config.secret_key == GOOD_SECRET
    assert not (tmp_path / "secret_key").exists()


def test_production_without_secret_key_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="SECRET_KEY"):
        from_env(tmp_path, GATEHOUSE_ENV="production")
    assert not (tmp_path / "secret_key").exists(), "production must never generate a key"


def test_production_with_blank_secret_key_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="SECRET_KEY"):
        from_env(tmp_path, GATEHOUSE_ENV="production", SECRET_KEY="   ")


def test_run_py_in_production_without_secret_key_exits_with_status_2(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "SECRET_KEY"}
    # If the check ever went missing, the server must not start on the repo's instance/.
    env.update(GATEHOUSE_ENV="production", DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'x.sqlite3'}",
               PORT="1")
    result = subprocess.run([sys.executable, "run.py"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert "Configuration error" in result.stderr
    assert "SECRET_KEY" in result.stderr


@pytest.mark.parametrize("env", ["development", "production"])
def test_short_secret_key_is_refused(tmp_path, env):
    with pytest.raises(ConfigError, match="32 characters"):
        from_env(tmp_path, GATEHOUSE_ENV=env, SECRET_KEY="too-short-secret")


# ---- other settings -----------------------------------------------------------------------

@pytest.mark.parametrize("port", ["eighty", "80.5", "8080x"])
def test_non_numeric_port_is_refused_with_a_clear_message(tmp_path, port):
    with pytest.raises(ConfigError, match="PORT must be a number") as error:
        from_env(tmp_path, SECRET_KEY=GOOD_SECRET, PORT=port)
    assert repr(port) in str(error.value)


@pytest.mark.parametrize("port", ["70000", "-1"])
def test_out_of_range_port_is_refused(tmp_path, port):
    with pytest.raises(ConfigError, match="PORT"):
        from_env(tmp_path, SECRET_KEY=GOOD_SECRET, PORT=port)


@pytest.mark.parametrize("value", ["staging", "prod", "test"])
def test_unknown_gatehouse_env_is_refused(tmp_path, value):
    with pytest.raises(ConfigError, match="GATEHOUSE_ENV"):
        from_env(tmp_path, SECRET_KEY=GOOD_SECRET, GATEHOUSE_ENV=value)


def test_gatehouse_env_is_case_insensitive(tmp_path):
    assert from_env(tmp_path, SECRET_KEY=GOOD_SECRET, GATEHOUSE_ENV="Production", MAIL_URL="smtps://mail.example.com",
                    BASE_URL="https://accounts.example.com", FACTOR_KEYS=FACTOR_KEY).production


def test_default_database_is_a_sqlite_file_inside_the_instance_folder(tmp_path):
    instance = tmp_path / "instance"
    config = from_env(instance, SECRET_KEY=GOOD_SECRET)
    url = make_url(config.database_url)
    assert url.get_backend_name() == "sqlite"
    assert Path(url.database).parent == instance
    assert instance.is_dir(), "the instance folder must exist for SQLite to create its file"


def test_database_url_from_the_environment_is_used_as_given(tmp_path):
    given = "postgresql+asyncpg://gate:house@db.internal:5433/gatehouse"
    assert from_env(tmp_path, SECRET_KEY=GOOD_SECRET, DATABASE_URL=given).database_url == given


def test_host_and_port_are_read_from_the_environment(tmp_path):
    config = from_env(tmp_path, SECRET_KEY=GOOD_SECRET, HOST="0.0.0.0", PORT="9123")
    assert config.host == "0.0.0.0"
    assert config.port == 9123


def test_host_and_port_default_to_localhost_8000(tmp_path):
    config = from_env(tmp_path, SECRET_KEY=GOOD_SECRET)
    assert (config.host, config.port) == ("127.0.0.1", 8000)


def test_registration_is_open_by_default(tmp_path):
    assert from_env(tmp_path, SECRET_KEY=GOOD_SECRET).registration_open is True


@pytest.mark.parametrize("value", ["0", "false", "no", "off"])
def test_registration_open_0_turns_registration_off(tmp_path, value):
    assert from_env(tmp_path, SECRET_KEY=GOOD_SECRET, REGISTRATION_OPEN=value).registration_open is False


def test_development_is_the_default_environment(tmp_path):
    config = from_env(tmp_path, SECRET_KEY=GOOD_SECRET)
    assert config.env == "development"
    assert not config.production


# ---- what the configuration does to the app ----------------------------------------------

def app_for(tmp_path, env: str, **overrides):
    return create_app(Config(database_url=f"sqlite+aiosqlite:///{tmp_path / 'app.sqlite3'}",
                             secret_key=GOOD_SECRET, env=env, **overrides))


def test_production_cookies_use_the_host_prefix_and_are_secure(tmp_path):
    config = app_for(tmp_path, "production").config
    assert config["QUART_AUTH_COOKIE_NAME"].startswith("__Host-")
    assert config["QUART_AUTH_COOKIE_SECURE"] is True
    assert config["SESSION_COOKIE_NAME"].startswith("__Host-")
    assert config["SESSION_COOKIE_SECURE"] is True


def test_development_cookies_do_not_use_the_host_prefix(tmp_path):
    # Browsers drop __Host- cookies that are not Secure, so plain-http development would break.
    config = app_for(tmp_path, "development").config
    assert not config["QUART_AUTH_COOKIE_NAME"].startswith("__Host-")
    assert not config["SESSION_COOKIE_NAME"].startswith("__Host-")
    assert config["QUART_AUTH_COOKIE_SECURE"] is False
    assert config["SESSION_COOKIE_SECURE"] is False


async def test_production_session_cookie_meets_the_host_prefix_rules(tmp_path):
    # A __Host- cookie is only accepted with Secure, Path=/ and no Domain attribute.
    app = app_for(tmp_path, "production")
    response = await app.test_client().get("/")
    cookies = response.headers.getlist("Set-Cookie")
    csrf_cookie = [c for c in cookies if c.startswith(app.config["SESSION_COOKIE_NAME"] + "=")]
    assert csrf_cookie, f"no session cookie set: {cookies}"
    attributes = [part.strip().lower() for part in csrf_cookie[0].split(";")[1:]]
    assert "secure" in attributes
    assert "path=/" in attributes
    assert "httponly" in attributes
    assert not any(a.startswith("domain=") for a in attributes)
    await app.db.dispose()


async def test_production_responses_send_strict_transport_security(tmp_path):
    app = app_for(tmp_path, "production")
    response = await app.test_client().get("/")
    assert "max-age=" in response.headers.get("Strict-Transport-Security", "")
    await app.db.dispose()


async def test_development_responses_do_not_send_strict_transport_security(tmp_path):
    app = app_for(tmp_path, "development")
    response = await app.test_client().get("/")
    assert "Strict-Transport-Security" not in response.headers
    await app.db.dispose()


@pytest.mark.parametrize("open_, shown", [(True, True), (False, False)])
async def test_register_link_follows_registration_open(tmp_path, open_, shown):
    app = app_for(tmp_path, "development", registration_open=open_)
    body = await (await app.test_client().get("/")).get_data(as_text=True)
    assert ('href="/register"' in body) is shown
    await app.db.dispose()


def test_gitignore_ignores_the_instance_folder():
    result = subprocess.run(["git", "check-ignore", "-q", "instance/secret_key"], cwd=ROOT)
    assert result.returncode == 0, "instance/ (with the development secret key) must be git-ignored"


# ---- second factors: FACTOR_KEYS and REQUIRE_2FA_ROLES -----------------------------------

PRODUCTION_ENV = {"GATEHOUSE_ENV": "production", "SECRET_KEY": GOOD_SECRET, "MAIL_URL": "smtps://mail.example.com",
                  "BASE_URL": "https://accounts.example.com"}


def test_production_without_factor_keys_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="FACTOR_KEYS must be set in production"):
        from_env(tmp_path, **PRODUCTION_ENV)


def test_factor_keys_are_read_newest_first_and_checked(tmp_path):
    other = "A" * 43 + "="
    assert from_env(tmp_path, FACTOR_KEYS=f"{FACTOR_KEY}, {other}").factor_keys == (FACTOR_KEY, other)
    with pytest.raises(ConfigError, match="Fernet keys"):
        from_env(tmp_path, FACTOR_KEYS="not-a-key")


def test_admins_must_enrol_a_second_factor_in_production_and_nobody_in_development(tmp_path):
    assert from_env(tmp_path, **PRODUCTION_ENV, FACTOR_KEYS=FACTOR_KEY).require_2fa_roles == ("Admin",)
    assert from_env(tmp_path).require_2fa_roles == ()
    assert from_env(tmp_path, REQUIRE_2FA_ROLES="Admin, Manager").require_2fa_roles == ("Admin", "Manager")
    with pytest.raises(ConfigError, match="REQUIRE_2FA_ROLES may name only"):
        from_env(tmp_path, REQUIRE_2FA_ROLES="Admin,Boss")
