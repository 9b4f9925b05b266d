"""Pages that belong to no resource: the home page."""
from quart import Blueprint, g, redirect

from .access import public
from .render import render

bp = Blueprint("pages", __name__)


@bp.get("/")
@public
async def home():
    if g.user is not None:
        return redirect("/dashboard")
    return await render("home.html")
