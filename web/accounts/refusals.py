"""Refusals of signed-in people go in the audit trail: a 403 (not allowed) or a 429 (too
many) says someone tried what they may not, or too often. At most LOGGED_PER_WINDOW per
person per throttle window are recorded, so the log cannot be flooded through them."""
from quart import current_app, g, request

from ..core import audit_trail as audit
from ..core.context import client_ip, settings
from ..core.security import same_origin
from . import throttle

REFUSED = {403, 429}
LOGGED_PER_WINDOW = 20


async def record_refusal(response):
    user = g.get("user")
    if user is None or response.status_code not in REFUSED or not same_origin():
        return response  # another site's request writes nothing, not even this
    async with current_app.db.write() as conn:
        if not await throttle.take(conn, f"refusals:{user.id}", LOGGED_PER_WINDOW, settings().throttle_window):
            await audit.record(conn, "refused", "user", user.id, actor=user, ip=client_ip(), changes={
                "request": [None, f"{request.method} {request.path}"], "status": [None, response.status_code]})
    return response


def init_app(app) -> None:
    app.after_request(record_refusal)
