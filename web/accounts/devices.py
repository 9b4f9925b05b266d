"""Device cookies (OWASP, "Slow Down Online Guessing Attacks with Device Cookies"): a browser
that once logged in to an account holds a signed cookie naming that account and a random
nonce. Its login attempts on that account are counted under its own key, apart from
everyone else's, so guesses from elsewhere cannot lock the owner out.
"""
import secrets

from itsdangerous import BadSignature, URLSafeSerializer
from quart import after_this_request, request

from ..core.context import settings

MAX_AGE = 365 * 24 * 60 * 60


def _cookie_name() -> str:
    return "__Host-gatehouse-device" if settings().production else "gatehouse-device"


def _serializer() -> URLSafeSerializer:
    return URLSafeSerializer(settings().secret_key, salt="gatehouse device")


def device_key(user_id: int) -> str | None:
    """The throttle key of this browser's device cookie, when it holds one for `user_id`."""
    raw = request.cookies.get(_cookie_name())
    if not raw:
        return None
    try:
        holder, nonce = _serializer().loads(raw)
    except (BadSignature, ValueError, TypeError):
        return None
    return f"device:{nonce}" if holder == user_id and isinstance(nonce, str) else None


def remember_device(user_id: int) -> None:
    """Gives this browser a device cookie for `user_id` with this answer (keeping its nonce
    when it already has one for that account)."""
    nonce = (device_key(user_id) or "").removeprefix("device:") or secrets.token_urlsafe(16)
    value = _serializer().dumps([user_id, nonce])

    @after_this_request
    async def set_cookie(response):
        response.set_cookie(_cookie_name(), value, max_age=MAX_AGE, httponly=True, samesite="Lax",
                            secure=settings().production, path="/")
        return response
