"""Template filters written in Python: called once per table cell, they must be cheap
(a Jinja macro call costs several times more in async mode)."""
import asyncio
from datetime import datetime

import humanize
from markupsafe import Markup
from ua_parser import parse

from .db import utcnow


def when(moment: datetime) -> Markup:
    """A UTC time as <time>: the exact value in the title; app.js shows it in local time."""
    # Only digits and separators come out of a datetime: nothing here needs escaping.
    exact = moment.isoformat(sep=" ", timespec="seconds")
    return Markup(f'<time datetime="{exact.replace(" ", "T")}Z" title="{exact} UTC">{exact[:16]} UTC</time>')


def counted(n: int, singular: str, plural: str | None = None) -> str:
    """"1 other session", "3 other sessions", "1,204 rows": the number and the word that fits it."""
    return f"{n:,} {singular if n == 1 else plural or singular + 's'}"


def ago(moment: datetime) -> Markup:
    """How long ago a UTC time was, in words ("2 hours ago"), as <time> with the exact value in
    its title; app.js leaves it in words (data-ago)."""
    exact = moment.isoformat(sep=" ", timespec="seconds")
    words = humanize.naturaltime(utcnow() - moment)
    return Markup(f'<time datetime="{exact.replace(" ", "T")}Z" title="{exact} UTC" data-ago>{words}</time>')


# Words a browser's name carries on some systems that people do not use for it:
# "Mobile Safari", "Chrome Mobile iOS", "Chrome Mobile WebView" are Safari and Chrome.
BROWSER_NOISE = {"Mobile", "iOS", "WebView"}
SYSTEMS = {"Mac OS X": "macOS", "Other": ""}
HANDHELDS = {"iPhone", "iPad", "iPod"}


def device(user_agent: str) -> str:
    """The browser and system a User-Agent header names, as people name them: "Chrome on
    Linux", "Safari on iPhone"; "Unknown device" when it names neither. ua-parser keeps the
    answers for the agents it has seen."""
    found = parse(user_agent or "")
    browser = " ".join(w for w in found.user_agent.family.split() if w not in BROWSER_NOISE) \
        if found.user_agent else ""
    if found.device and found.device.family in HANDHELDS:
        system = found.device.family
    else:
        system = SYSTEMS.get(found.os.family, found.os.family) if found.os else ""
    return " on ".join(part for part in (browser, system) if part) or "Unknown device"


def init_app(app):
    app.add_template_filter(when)
    app.add_template_filter(ago)
    app.add_template_filter(device)

    @app.before_serving
    async def compile_device_patterns():
        # ua-parser compiles its patterns on first use, a third of a second or more: in a
        # thread as the server starts, not on the event loop in the first page naming a device.
        await asyncio.to_thread(device, "warm-up")
