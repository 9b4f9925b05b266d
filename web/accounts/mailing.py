"""Mail about an account, written to the outbox in the transaction of the change it tells
of: links to act on (reset, confirm, invitation) and security notices."""
from quart import request

from ..core.context import client_ip, settings
from ..core.db import utcnow
from ..mail import outbox
from ..mail.messages import compose, link


async def send(conn, kind: str, to: str, subject: str, *, token: str = "", **context) -> None:
    """The message of `kind` (partials/mail/<kind>.*) to `to`. A `token` is what its link
    carries: `url` is that link (BASE_URL + /<path>/<token>, `path` from context), and the
    token is blanked from the stored copy once the message is sent."""
    config = settings()
    if token:
        context["url"] = link(config, f"/{context.pop('path')}/{token}")
    message = compose(config, kind, to=to, subject=subject, **context)
    # In production no token is stored in clear, not even until it is sent; in development it
    # is, so that /mail can show the link.
    seal = outbox.seal_key(config.secret_key) if config.production else None
    await outbox.post(conn, message, secrets=(token,), seal=seal)


def circumstances() -> dict:
    """When and from where the request came: what a security notice tells."""
    return {"when": utcnow().strftime("%Y-%m-%d %H:%M UTC"), "ip": client_ip() or "an unknown address",
            "browser": request.headers.get("User-Agent", "")[:120] or "an unknown browser"}


async def notice(conn, user, kind: str, subject: str, to: str | None = None, **context) -> None:
    """A security notice to the account's address (or `to`): what happened, when, from where,
    and what to do if it was not them (reset the password: the link is in the message)."""
    await send(conn, kind, to or user.email, subject, username=user.username,
               reset_url=link(settings(), "/forgot-password"), **circumstances(), **context)
