"""Liveness for load balancers: answers 200 only when the database answers."""
from quart import Blueprint, current_app

from .access import public

bp = Blueprint("health", __name__)


@bp.get("/healthz")
@public
async def healthz():
    try:
        await current_app.db.ping()
    except Exception:
        current_app.logger.exception("health check failed")
        return {"status": "error", "database": "unreachable"}, 503
    return {"status": "ok", "database": "ok"}
