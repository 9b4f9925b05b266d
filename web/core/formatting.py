"""Template filters written in Python: called once per table cell, they must be cheap
(a Jinja macro call costs several times more in async mode)."""
from datetime import datetime

from markupsafe import Markup


def when(moment: datetime) -> Markup:
    """A UTC time as <time>: the exact value in the title; app.js shows it in local time."""
    # Only digits and separators come out of a datetime: nothing here needs escaping.
    exact = moment.isoformat(sep=" ", timespec="seconds")
    return Markup(f'<time datetime="{exact.replace(" ", "T")}Z" title="{exact} UTC">{exact[:16]} UTC</time>')


def counted(n: int, singular: str, plural: str | None = None) -> str:
    """"1 other session", "3 other sessions", "1,204 rows": the number and the word that fits it."""
    return f"{n:,} {singular if n == 1 else plural or singular + 's'}"


def init_app(app):
    app.add_template_filter(when)
