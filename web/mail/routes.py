"""/mail: the outbox, for Admins, outside production (where the route does not exist). In development without MAIL_URL it is
where messages go; with a server it shows what was sent, is due again, or failed."""
import re

from markupsafe import Markup, escape
from quart import Blueprint, current_app, request

from ..core.access import allow
from ..core.render import render
from . import outbox

bp = Blueprint("mail", __name__)

URL = re.compile(r"https?://[^\s<>\"']+")


def linked(text: str) -> Markup:
    """`text` escaped, with each http(s) address made a link."""
    parts, end = [], 0
    for match in URL.finditer(text):
        parts.append(escape(text[end:match.start()]))
        parts.append(Markup('<a href="{0}" rel="noreferrer">{0}</a>').format(match.group()))
        end = match.end()
    parts.append(escape(text[end:]))
    return Markup("").join(parts)


@bp.get("/mail")
@allow("Admin")
async def messages():
    before = request.args.get("before", "")
    before = int(before) if before.isascii() and before.isdigit() and len(before) < 19 else None
    async with current_app.db.read() as conn:
        rows = await outbox.newest(conn, before)
    config = current_app.config["GATEHOUSE"]
    return await render("mail/index.html", rows=rows, linked=linked, delivering=config.mail_server is not None,
                        older=rows[-1].id if len(rows) == outbox.PAGE_SIZE else None)


def init_app(app) -> None:
    if not app.config["GATEHOUSE"].production:
        app.register_blueprint(bp)
