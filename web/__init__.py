"""Gatehouse: user accounts, roles and an audit trail."""
from quart import Quart
from quart_auth import QuartAuth

from .core.config import ROOT, Config
from .core.db import Database


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
    app.db = Database(config.database_url, audit_key=config.audit_hmac_key)
    QuartAuth(app)

    from .accounts import auth, confirmation, invitation, maintenance, preferences, profile, recovery, refusals, sessions
    from .accounts import reauthentication
    from .accounts import factor_settings, second_step
    from .accounts import passkey_routes
    from .audit import routes as audit_log
    from .core import access, compress, context, errors, formatting, health, pages, palette, render, security
    from .dashboard import routes as dashboard
    from .imports import routes as imports, runner as import_runner
    from .live import stream as live_stream
    from .mail import routes as mail, sender as mail_sender
    from .users import factors as user_factors, invitations, routes as users, sessions as user_sessions, suggestions as user_suggestions
    compress.init_app(app)  # first registered, so it runs after the other after_request hooks
    security.init_app(app)
    formatting.init_app(app)
    palette.init_app(app)
    app.after_request(render.deliver_toasts)
    app.add_template_global(render.pending_toasts)
    access.init_app(app, load_user=sessions.load_user)
    # First of all, before the session check: every hook and refusal may need the client.
    app.before_request_funcs[None].insert(0, context.identify_client)
    errors.init_app(app)
    refusals.init_app(app)
    reauthentication.init_app(app)
    for blueprint in (pages.bp, health.bp, auth.bp, recovery.bp, profile.bp, preferences.bp, dashboard.bp, users.bp, user_suggestions.bp, user_sessions.bp, audit_log.bp,
                      invitation.bp, invitations.bp, confirmation.bp, second_step.bp, factor_settings.bp, user_factors.bp):
        app.register_blueprint(blueprint)
    app.register_blueprint(passkey_routes.bp)
    if config.bench:
        from .core import bench
        app.register_blueprint(bench.bp)

    imports.init_app(app)
    maintenance.init_app(app)
    import_runner.init_app(app)
    live_stream.init_app(app)
    mail.init_app(app)
    mail_sender.init_app(app)

    @app.after_serving
    async def close_database():
        await app.db.dispose()

    return app
