"""Gatehouse: user accounts, roles and an audit trail."""
from quart import Quart
from quart_auth import QuartAuth

from .config import ROOT, Config
from .db import Database


def create_app(config: Config | None = None) -> Quart:
    config = config or Config.from_env()
    app = Quart(
        __name__,
        template_folder=str(ROOT / "partials"),
        static_folder=str(ROOT / "static"),
        static_url_path="/static",
    )
    app.config.update(
        SECRET_KEY=config.secret_key,
        GATEHOUSE=config,
        MAX_CONTENT_LENGTH=64 * 1024,
        SEND_FILE_MAX_AGE_DEFAULT=3600,
        SESSION_COOKIE_NAME="__Host-gatehouse-csrf" if config.production else "gatehouse-csrf",
        SESSION_COOKIE_SECURE=config.production,
        SESSION_COOKIE_SAMESITE="Lax",
        QUART_AUTH_COOKIE_NAME="__Host-gatehouse" if config.production else "gatehouse",
        QUART_AUTH_COOKIE_SECURE=config.production,
        QUART_AUTH_COOKIE_SAMESITE="Lax",
        QUART_AUTH_DURATION=config.remember_absolute,
        QUART_AUTH_SALT="gatehouse session",
    )
    app.jinja_env.trim_blocks = True
    app.jinja_env.lstrip_blocks = True
    app.db = Database(config.database_url)
    QuartAuth(app)

    from . import (access, audit_log, auth, compress, errors, formatting, health, pages, profile, render,
                   security, users)
    compress.init_app(app)  # first registered, so it runs after the other after_request hooks
    security.init_app(app)
    formatting.init_app(app)
    app.after_request(render.deliver_toasts)
    app.add_template_global(render.pending_toasts)
    access.init_app(app)
    errors.init_app(app)
    for module in (pages, health, auth, profile, users, audit_log):
        app.register_blueprint(module.bp)
    if config.bench:
        from . import bench
        app.register_blueprint(bench.bp)

    @app.after_serving
    async def close_database():
        await app.db.dispose()

    return app
