"""Mail: the outbox, delivery over real SMTP (aiosmtpd on loopback), the development page,
and the MAIL_URL / MAIL_FROM / BASE_URL settings. Delivery runs on an injected clock: no
test sleeps through a back-off."""
import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import replace
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from conftest import ROOT, SECRET, make_config
import loopback_smtp
from helpers import audit_rows, open_session, rows, text
from web import create_app
from web.core.config import Config, ConfigError, MailServer
from web.core.db import Database, utcnow
from web.core.tables import outbox as outbox_table
from web.mail import outbox, sender
from web.mail.messages import compose, link


@pytest.fixture
def smtp():
    controller, recorder = loopback_smtp.start()
    yield recorder
    recorder.release.set()
    controller.stop()


@pytest.fixture
def mail_config(database_url, smtp):
    return make_config(database_url, mail_server=MailServer("127.0.0.1", smtp.port, start_tls=False),
                       mail_from="Gatehouse <noreply@localhost>")


class Clock:
    def __init__(self):
        self.now = utcnow()

    def __call__(self):
        return self.now


async def enqueue(db, config, to="alice@example.com", secrets=(), **context):
    message = compose(config, "test", to=to, subject="Test message", **context)
    async with db.write() as conn:
        await outbox.enqueue(conn, message, secrets=secrets)
    return message


async def stored(db):
    return await rows(db, select(outbox_table).order_by(outbox_table.c.id))


# ---- delivery -----------------------------------------------------------------------------

async def test_a_message_is_sent_as_multipart_text_and_html_with_its_message_id(db, mail_config, smtp):
    message = await enqueue(db, mail_config)
    done = await sender.drain(db, mail_config)
    assert (done.sent, done.retry, done.failed) == (1, 0, 0)
    [received] = smtp.received
    assert received["Message-ID"] == message.message_id
    assert received["From"] == "Gatehouse <noreply@localhost>"
    assert received["To"] == "alice@example.com"
    assert received["Subject"] == "Test message · Gatehouse"
    parts = {part.get_content_type(): part.get_payload(decode=True).decode() for part in received.walk()
             if not part.is_multipart()}
    assert set(parts) == {"text/plain", "text/html"}
    assert "http://localhost:8000/" in parts["text/plain"]
    assert "<img" not in parts["text/html"] and "src=" not in parts["text/html"]
    [row] = await stored(db)
    assert row.sent_at is not None and row.attempts == 1 and row.claimed_until is None


async def test_links_come_from_base_url_never_from_a_request(database_url):
    config = make_config(database_url, base_url="https://accounts.example.com")
    assert link(config, "/reset", token="abc") == "https://accounts.example.com/reset?token=abc"
    message = compose(config, "test", to="a@example.com", subject="Test message")
    assert "https://accounts.example.com/" in message.text
    assert message.message_id.endswith("@accounts.example.com>")


async def test_a_4xx_answer_is_retried_after_a_back_off_then_sent(db, mail_config, smtp):
    smtp.script = ["4xx"]
    await enqueue(db, mail_config)
    clock = Clock()
    done = await sender.drain(db, mail_config, now=clock)
    assert (done.sent, done.retry) == (0, 1)
    [row] = await stored(db)
    assert "451" in row.last_error and row.sent_at is None and row.claimed_until is None
    assert clock.now + timedelta(seconds=30) <= row.due_at <= clock.now + timedelta(seconds=90)
    assert (await sender.drain(db, mail_config, now=clock)).sent == 0, "not due yet"
    clock.now = row.due_at
    assert (await sender.drain(db, mail_config, now=clock)).sent == 1
    assert len(smtp.received) == 1
    [row] = await stored(db)
    assert row.attempts == 2 and row.sent_at is not None and row.last_error == ""


def test_the_back_off_doubles_with_jitter_and_is_bounded():
    rng = random.Random(7)
    for attempts, base in ((1, 60), (2, 120), (3, 240), (30, 3600)):
        delays = [outbox.retry_delay(attempts, rng).total_seconds() for _ in range(50)]
        assert all(base * 0.5 <= d <= base * 1.5 for d in delays)
        assert len(set(delays)) > 1, "jitter spreads retries"


async def test_a_connection_dropped_before_the_answer_to_data_is_retried(db, mail_config, smtp):
    smtp.script = ["drop"]
    message = await enqueue(db, mail_config)
    clock = Clock()
    assert (await sender.drain(db, mail_config, now=clock)).retry == 1
    clock.now = (await stored(db))[0].due_at
    assert (await sender.drain(db, mail_config, now=clock)).sent == 1
    assert smtp.ids() == [message.message_id]


async def test_an_unreachable_server_is_retried(db, database_url, smtp):
    from conftest import free_port
    config = make_config(database_url, mail_server=MailServer("127.0.0.1", free_port(), start_tls=False))
    await enqueue(db, config)
    done = await sender.drain(db, config)
    assert done.retry == 1 and done.sent == 0
    [row] = await stored(db)
    assert row.last_error and row.failed_at is None


async def test_a_5xx_answer_gives_up_marks_failed_and_audits(db, mail_config, smtp):
    smtp.script = ["5xx"]
    await enqueue(db, mail_config, secrets=["http://localhost:8000/"])
    done = await sender.drain(db, mail_config)
    assert (done.sent, done.failed) == (0, 1)
    [row] = await stored(db)
    assert row.failed_at is not None and "550" in row.last_error
    assert "http://localhost:8000/" not in row.text_body + row.html_body
    [event] = await audit_rows(db, "mail_failed")
    assert (event.target_type, event.target_id) == ("mail", row.id)
    assert (await sender.drain(db, mail_config)).failed == 0, "given up for good"


async def test_a_message_undelivered_for_two_days_is_given_up(db, mail_config, smtp):
    await enqueue(db, mail_config)
    clock = Clock()
    clock.now += outbox.GIVE_UP_AFTER
    smtp.script = ["4xx"]
    assert (await sender.drain(db, mail_config, now=clock)).failed == 1
    assert len(await audit_rows(db, "mail_failed")) == 1


async def test_secrets_are_removed_from_the_stored_message_once_sent(db, mail_config, smtp):
    token = "s3cret-token-Abc123"
    await enqueue(db, mail_config, to=f"{token}@example.com", secrets=[token])
    [row] = await stored(db)
    assert token in row.text_body, "kept until sent"
    await sender.drain(db, mail_config)
    assert token in smtp.received[0].as_string()
    [row] = await stored(db)
    assert token not in row.text_body and token not in row.html_body and row.secrets is None


async def test_in_production_a_secret_is_never_stored_in_clear(db, mail_config, smtp):
    """Sealed at once (encrypted under a key derived from SECRET_KEY), put back only in what
    is sent to the SMTP server, and blanked once sent."""
    token = "s3cret-token-Abc123"
    message = compose(mail_config, "test", to="sealed@example.com", subject="Test message", url=token)
    message = replace(message, text=f"Open https://x.example/reset/{token}", html=f'<a href="/r/{token}">x</a>')
    async with db.write() as conn:
        await outbox.enqueue(conn, message, secrets=[token], seal=outbox.seal_key(mail_config.secret_key))
    [row] = await stored(db)
    assert token not in str(tuple(row))
    assert "[sealed 0]" in row.text_body and "[sealed 0]" in row.html_body
    await sender.drain(db, mail_config)
    assert f"https://x.example/reset/{token}" in smtp.received[0].get_body(("plain",)).get_content()
    [row] = await stored(db)
    assert row.sent_at is not None and row.secrets is None and "sealed" not in row.text_body
    assert outbox.BLANKED in row.text_body


async def test_a_message_sealed_under_another_secret_key_is_given_up(db, mail_config, smtp):
    message = compose(mail_config, "test", to="old-key@example.com", subject="Test message")
    message = replace(message, text="link: tok-123")
    async with db.write() as conn:
        await outbox.enqueue(conn, message, secrets=["tok-123"], seal=outbox.seal_key("an older key " * 4))
    done = await sender.drain(db, mail_config)
    assert (done.sent, done.failed) == (0, 1) and "another SECRET_KEY" in done.errors[0]
    assert smtp.received == []


async def test_mail_from_the_app_is_sealed_in_production_only(db, database_url, make_user, mailed):
    from web.accounts import mailing
    for production in (False, True):
        config = make_config(database_url, env="production" if production else "development",
                             base_url="https://accounts.example.com")
        app = create_app(config)
        async with app.test_request_context("/"), db.write() as conn:
            await mailing.send(conn, "reset", f"p{production}@example.com", "Reset your password",
                               token="tok-secret-" + str(production), path="reset-password",
                               username="someone", minutes=30, when="now", ip="", browser="")
    rows_ = await stored(db)
    assert "tok-secret-False" in rows_[0].text_body
    assert "tok-secret-True" not in rows_[1].text_body + rows_[1].html_body + str(rows_[1].secrets)


async def test_saves_succeed_while_the_smtp_server_stalls(db, mail_config, smtp, make_user):
    """The sender holds no transaction (SQLite: no write lock) while it talks to the server."""
    smtp.script = ["stall"]
    await enqueue(db, mail_config)
    draining = asyncio.create_task(sender.drain(db, mail_config))
    await asyncio.to_thread(smtp.stalled.wait, 10)
    assert not draining.done()
    await asyncio.wait_for(make_user(username="saved-meanwhile"), timeout=5)
    smtp.release.set()
    assert (await draining).sent == 1


async def test_two_senders_draining_at_once_send_each_message_once(db, database_url, mail_config, smtp):
    messages = [await enqueue(db, mail_config, to=f"user{n}@example.com") for n in range(20)]
    other = Database(database_url)
    try:
        first, second = await asyncio.gather(sender.drain(db, mail_config), sender.drain(other, mail_config))
    finally:
        await other.dispose()
    assert first.sent + second.sent == 20
    assert sorted(smtp.ids()) == sorted(m.message_id for m in messages)


async def test_a_claimed_message_is_not_sent_by_another_sender_until_its_lease_runs_out(db, mail_config, smtp):
    await enqueue(db, mail_config)
    clock = Clock()
    assert await outbox.claim(db, clock.now) is not None  # a sender that then died
    assert (await sender.drain(db, mail_config, now=clock)).sent == 0
    clock.now += outbox.LEASE
    assert (await sender.drain(db, mail_config, now=clock)).sent == 1


async def test_a_sender_killed_at_random_points_loses_nothing(db, database_url, mail_config, smtp, tmp_path):
    """SIGKILL `run.py mail-send` a few times mid-drain; once the leases of the killed run
    are over, every message arrives, duplicates only with the Message-ID of the original and
    at most one per kill (the one between the server's 250 and the mark)."""
    count, kills = 40, 4
    ids = {(await enqueue(db, mail_config, to=f"user{n}@example.com")).message_id for n in range(count)}
    env = {**os.environ, "DATABASE_URL": database_url, "SECRET_KEY": SECRET, "GATEHOUSE_ENV": "development",
           "MAIL_URL": f"smtp://127.0.0.1:{smtp.port}?starttls=0"}
    rng = random.Random()
    for _ in range(kills):
        goal = len(smtp.received) + rng.randint(1, 6)
        process = subprocess.Popen([sys.executable, "run.py", "mail-send"], cwd=ROOT, env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while len(smtp.received) < goal and process.poll() is None:
            time.sleep(0.005)
        process.send_signal(signal.SIGKILL)
        process.wait()
        # As if the killed sender's lease had run out.
        async with db.write() as conn:
            await conn.execute(update(outbox_table).values(claimed_until=None))
    final = subprocess.run([sys.executable, "run.py", "mail-send"], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=120)
    assert final.returncode == 0, final.stderr
    received = smtp.ids()
    assert set(received) == ids, "every message arrived"
    assert len(received) - len(ids) <= kills, "at most one duplicate per kill"
    assert all(row.sent_at is not None for row in await stored(db))


async def test_a_worker_sends_from_before_serving_and_its_sender_ends_with_serving(db, mail_config, smtp):
    app = create_app(mail_config)
    await enqueue(db, mail_config)
    async with app.test_app():
        for _ in range(200):
            if smtp.received:
                break
            await asyncio.sleep(0.05)
    assert app.mail_sender.done()
    assert len(smtp.received) == 1


async def test_a_message_posted_wakes_the_sender_at_once(db, mail_config, smtp, monkeypatch):
    """A resting sender would look again only after an hour here: the message arrives because
    its commit woke the sender."""
    mail_config = replace(mail_config, poll_seconds=3600)
    drained = asyncio.Event()
    real_drain = sender.drain

    async def drain_and_tell(*args, **kwargs):
        try:
            return await real_drain(*args, **kwargs)
        finally:
            drained.set()
    monkeypatch.setattr(sender, "drain", drain_and_tell)
    app = create_app(mail_config)
    async with app.test_app():
        await asyncio.wait_for(drained.wait(), 20)  # the first (empty) drain is over: the sender rests
        async with db.write() as conn:
            message = compose(mail_config, "test", to="woken@example.com", subject="Test message")
            await outbox.post(conn, message)
        await smtp.next_to("woken@example.com", timeout=20)
    assert smtp.ids() == [message.message_id]


async def test_without_mail_url_no_sender_runs(db, config):
    app = create_app(config)
    async with app.test_app():
        assert not hasattr(app, "mail_sender")


# ---- the development outbox page ---------------------------------------------------------

async def admin_client(app, make_user, role="Admin"):
    client = app.test_client()
    await open_session(app, client, (await make_user(role=role))["id"])
    return client


async def test_admins_read_the_outbox_newest_first_with_clickable_links(app, db, config, make_user):
    await enqueue(db, config, to="first@example.com")
    await enqueue(db, config, to="second@example.com")
    client = await admin_client(app, make_user)
    response = await client.get("/mail")
    assert response.status_code == 200
    body = await text(response)
    assert body.index("second@example.com") < body.index("first@example.com")
    assert '<a href="http://localhost:8000/" rel="noreferrer">http://localhost:8000/</a>' in body
    assert "&lt;a href=" in body, "the HTML part is shown as escaped source"


async def test_the_outbox_shows_no_markup_from_a_message(app, db, config, make_user):
    await enqueue(db, config, to="<script>x</script>@example.com")
    body = await text(await (await admin_client(app, make_user)).get("/mail"))
    assert "<script>x</script>" not in body


@pytest.mark.parametrize("role", ["Manager", "Customer"])
async def test_others_may_not_read_the_outbox(app, make_user, role):
    client = await admin_client(app, make_user, role)
    assert (await client.get("/mail")).status_code == 403


async def test_the_outbox_page_is_404_in_production(db, database_url):
    app = create_app(make_config(database_url, env="production"))
    assert (await app.test_client().get("/mail")).status_code == 404
    assert "mail.messages" not in app.view_functions
    await app.db.dispose()


# ---- configuration --------------------------------------------------------------------------

def from_env(tmp_path, **environ) -> Config:
    return Config.from_env(environ=environ, instance=tmp_path)


PRODUCTION = {"GATEHOUSE_ENV": "production", "SECRET_KEY": "s" * 40, "BASE_URL": "https://accounts.example.com",
              "MAIL_URL": "smtps://mailer:p%40ss@mail.example.com",
              "FACTOR_KEYS": "n2Rm4Xw1Jb7kS0pLq9VtYc3aZe6Hf8Gd5Ui2Ow4Kx0E="}


def test_development_needs_no_mail_settings(tmp_path):
    config = from_env(tmp_path)
    assert config.mail_server is None
    assert config.base_url == "http://localhost:8000"
    assert config.mail_from == "Gatehouse <noreply@localhost>"


def test_mail_url_is_parsed_with_credentials_tls_and_default_ports(tmp_path):
    config = from_env(tmp_path, **PRODUCTION)
    assert config.mail_server == MailServer("mail.example.com", 465, "mailer", "p@ss", use_tls=True)
    assert "p@ss" not in repr(config.mail_server)
    starttls = from_env(tmp_path, MAIL_URL="smtp://u:p@mail.example.com?starttls=1").mail_server
    assert (starttls.port, starttls.start_tls, starttls.use_tls) == (587, True, False)
    assert from_env(tmp_path, MAIL_URL="smtp://localhost:2525").mail_server.port == 2525


@pytest.mark.parametrize("url, says", [
    ("http://mail.example.com", "smtp:// or smtps://"),
    ("smtp://", "no host"),
    ("smtp://mail.example.com:99999", "not a valid URL"),
    ("smtp://mail.example.com?tls=1", "unknown options"),
    ("smtp://mail.example.com?starttls=yes", "starttls=1 or starttls=0"),
    ("smtps://mail.example.com?starttls=1", "choose one"),
])
def test_a_bad_mail_url_is_refused_with_a_clear_message(tmp_path, url, says):
    with pytest.raises(ConfigError, match=says):
        from_env(tmp_path, MAIL_URL=url)


@pytest.mark.parametrize("missing", ["MAIL_URL", "BASE_URL"])
def test_production_requires_mail_url_and_base_url(tmp_path, missing):
    environ = {k: v for k, v in PRODUCTION.items() if k != missing}
    with pytest.raises(ConfigError, match=missing):
        from_env(tmp_path, **environ)


def test_production_refuses_a_password_sent_before_tls(tmp_path):
    with pytest.raises(ConfigError, match="starttls=1"):
        from_env(tmp_path, **{**PRODUCTION, "MAIL_URL": "smtp://u:p@mail.example.com"})


@pytest.mark.parametrize("value", ["accounts.example.com", "ftp://x.example", "https://x.example/?a=1"])
def test_a_bad_base_url_is_refused(tmp_path, value):
    with pytest.raises(ConfigError, match="BASE_URL"):
        from_env(tmp_path, BASE_URL=value)


def test_development_base_url_is_localhost_on_the_port_served(tmp_path):
    assert from_env(tmp_path).base_url == "http://localhost:8000"
    assert from_env(tmp_path, PORT="8123").base_url == "http://localhost:8123"
    assert from_env(tmp_path, PORT="8123", BASE_URL="http://dev.example:9").base_url == "http://dev.example:9"


def test_production_base_url_must_be_https(tmp_path):
    with pytest.raises(ConfigError, match="https"):
        from_env(tmp_path, **{**PRODUCTION, "BASE_URL": "http://accounts.example.com"})


def test_mail_from_defaults_to_base_url_host_and_refuses_a_bad_address(tmp_path):
    assert from_env(tmp_path, **PRODUCTION).mail_from == "Gatehouse <noreply@accounts.example.com>"
    with pytest.raises(ConfigError, match="MAIL_FROM"):
        from_env(tmp_path, MAIL_FROM="nobody")


def test_background_poll_seconds_is_read_and_checked(tmp_path):
    assert from_env(tmp_path).poll_seconds == 5
    assert from_env(tmp_path, BACKGROUND_POLL_SECONDS="0.5").poll_seconds == 0.5
    for bad in ("soon", "0", "100000"):
        with pytest.raises(ConfigError, match="BACKGROUND_POLL_SECONDS"):
            from_env(tmp_path, BACKGROUND_POLL_SECONDS=bad)


@pytest.mark.parametrize("template", sorted(p.name for p in (ROOT / "partials" / "mail").glob("*.html")))
def test_no_message_loads_anything_remote_or_tracks(template):
    """Plain, accessible messages: no images, scripts, styles fetched from anywhere, no
    tracking pixels; every message template has a text part beside its HTML part."""
    html = (ROOT / "partials" / "mail" / template).read_text().lower()
    for remote in ("<img", "src=", "url(", "<script", "<link", "@import"):
        assert remote not in html, (template, remote)
    if template != "index.html":  # /mail itself, a page of the app, not a message
        assert (ROOT / "partials" / "mail" / template.replace(".html", ".txt")).exists()
