"""Sessions people can recognise: the device named from its User-Agent ("Chrome on Linux"),
its age in words, and the device in use marked, on the profile and on an Admin's view of a
user (issue 17, point 6)."""
import re
from datetime import timedelta

import pytest
from sqlalchemy import update

from helpers import element_html, open_session, page, signed_in, signed_in_as
from web.core.db import utcnow
from web.core.formatting import device
from web.core.tables import sessions

CHROME_LINUX = ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
                "Chrome/131.0.0.0 Safari/537.36")
SAFARI_IPHONE = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 "
                 "(KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1")


@pytest.mark.parametrize("agent, name", [
    (CHROME_LINUX, "Chrome on Linux"),
    (SAFARI_IPHONE, "Safari on iPhone"),
    ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
     "Version/17.1 Safari/605.1.15", "Safari on macOS"),
    ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
     "Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0", "Edge on Windows"),
    ("Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) "
     "Chrome/131.0.0.0 Mobile Safari/537.36", "Chrome on Android"),
    ("Mozilla/5.0 (iPad; CPU OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
     "CriOS/120.0 Mobile/15E148 Safari/604.1", "Chrome on iPad"),
    ("python-httpx/0.27", "Unknown device"),
    ("", "Unknown device"),
])
def test_a_user_agent_is_named_as_people_name_it(agent, name):
    assert device(agent) == name


def session_rows(html: str, section: str) -> list[str]:
    return re.findall(r"<tr>(.*?)</tr>", element_html(html, section).split("<tbody>", 1)[1], re.S)


async def started_hours_ago(db, sid: str, hours: int) -> None:
    async with db.write() as conn:
        await conn.execute(update(sessions).where(sessions.c.id == sid)
                           .values(created_at=utcnow() - timedelta(hours=hours, minutes=1)))


async def test_the_profile_names_each_device_gives_its_age_and_marks_this_one(app, db, make_user):
    alice = await make_user(username="alice")
    laptop, phone = app.test_client(), app.test_client()
    await open_session(app, laptop, alice["id"], user_agent=CHROME_LINUX)
    await started_hours_ago(db, await open_session(app, phone, alice["id"], user_agent=SAFARI_IPHONE), 2)

    rows = session_rows(await page(laptop, "/profile"), "profile-sessions")
    (mine,) = [r for r in rows if "Chrome on Linux" in r]
    (other,) = [r for r in rows if "Safari on iPhone" in r]
    assert "This device" in mine and "This device" not in other
    assert "2 hours ago" in other and "data-ago" in other
    assert "End this session<span class=\"visually-hidden\"> on Safari on iPhone, started 2 hours ago" in other


async def test_an_admin_sees_a_users_devices_by_name_and_age(app, db, make_user):
    admin, _ = await signed_in(app, make_user, "Admin")
    bob = await make_user(username="bob")
    await started_hours_ago(db, await open_session(app, app.test_client(), bob["id"], user_agent=SAFARI_IPHONE), 3)
    # The Admin's own session is marked where it is listed: on their own page.
    admin_client = await signed_in_as(app, admin["id"])
    listed = element_html(await page(admin_client, f"/users/{bob['id']}"), "user-sessions")
    assert "Safari on iPhone" in listed and "3 hours ago" in listed and "This device" not in listed
    own = element_html(await page(admin_client, f"/users/{admin['id']}"), "user-sessions")
    assert "This device" in own


async def test_the_device_patterns_are_compiled_as_the_server_starts(app, monkeypatch):
    """Not on the event loop, in the first page that names a device (a third of a second)."""
    import ua_parser
    monkeypatch.delitem(vars(ua_parser), "parser", raising=False)
    async with app.test_app():
        assert "parser" in vars(ua_parser)
