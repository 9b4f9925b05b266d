"""An audit log for people (issue 17, point 5): targets by the username they had when the event
was written (kept through renames and purges, and hashed into the chain), values in words, the
dashboard saying whose account changed, and the Target filter by kind and by username."""
import re
from html import unescape

from sqlalchemy import delete, select

from helpers import element_html, htmx, page, send, signed_in, text, user_row
from web.core import audit_trail as audit
from web.core.tables import audit_events, users


def edit_form(row, **changes) -> dict:
    values = {"version": str(row.version), "username": row.username, "email": row.email, "role": row.role,
              "active": "1" if row.active else "", "back": "/users", **changes}
    return {k: v for k, v in values.items() if v != ""}


async def save(client, db, user_id: int, **changes):
    response = await send(client, f"/users/{user_id}", edit_form(await user_row(db, user_id), **changes),
                          target=f"user-{user_id}")
    assert response.status_code == 200, await text(response)


async def events_about(db, user_id: int):
    async with db.read() as conn:
        return (await conn.execute(select(audit_events).where(audit_events.c.target_id == user_id)
                                   .order_by(audit_events.c.id))).all()


def cell_texts(html: str) -> list[list[str]]:
    """The log's rows as lists of cell texts (tags removed, spaces squeezed)."""
    table = element_html(html, "audit-rows")
    return [[words(cell) for cell in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)]
            for row in re.findall(r"<tr[^>]*>(.*?)</tr>", table, re.S)]


def words(html: str) -> str:
    """The text of some HTML as it reads: tags gone, spaces squeezed."""
    return re.sub(r" ([:,.])", r"\1", " ".join(unescape(re.sub(r"<[^>]+>", " ", html)).split()))


async def test_targets_keep_the_name_they_had_through_a_rename_and_a_purge(app, db, make_user):
    _, client = await signed_in(app, make_user, "Admin", username="root")
    bob = await make_user("Customer", username="bob")
    await save(client, db, bob["id"], role="Manager")
    await save(client, db, bob["id"], username="robert")
    # The name as the event's transaction left it: a rename is recorded under the new name.
    assert [e.target_name for e in await events_about(db, bob["id"])] == ["bob", "robert"]

    body = await page(client, f"/audit?target_type=user&target_id={bob['id']}")
    rows = cell_texts(body)
    assert rows[0][3] == "robert" and "Username: bob → robert" in rows[0][4]
    assert rows[1][3] == "bob" and "Role: Customer → Manager" in rows[1][4]
    assert f'title="User #{bob["id"]}"' in body

    await save(client, db, bob["id"], active="")  # as "robert" now
    async with db.write() as conn:  # purged for good, as run.py users-purge does
        await conn.execute(delete(users).where(users.c.id == bob["id"]))
    rows = cell_texts(await page(client, f"/audit?target_type=user&target_id={bob['id']}"))
    assert [r[3] for r in rows] == ["robert", "robert", "bob"]
    assert "Active: yes → no" in rows[0][4]
    assert (await audit.verify(db)).intact  # the names are part of each event's hash


async def test_values_read_as_words(app, db, make_user):
    _, client = await signed_in(app, make_user, "Admin", username="root")
    carol = await make_user("Customer", username="carol")
    assert (await send(client, f"/users/{carol['id']}/delete", {"back": "/users"}, target="x")).status_code == 200
    await send(client, f"/users/{carol['id']}/restore", target="x")
    created = await send(client, "/users", {"username": "dan", "email": "dan@example.com", "role": "Customer",
                                            "back": "/users"}, target="user-new")
    assert created.status_code == 200
    rows = cell_texts(await page(client, "/audit?target_type=user"))
    changes = {r[3]: r[4] for r in rows if r[2] in {"Deleted", "Restored", "Created"}}
    assert rows[0][2:] == ["Created", "dan", "Username: dan Email: dan@example.com Role: Customer Invited: yes"]
    assert [(r[2], r[4]) for r in rows if r[3] == "carol"][:2] == [("Restored", "Restored"), ("Deleted", "Deleted")]
    assert "False" not in str(changes) and "True" not in str(changes)


async def test_the_dashboard_says_whose_account_was_changed(app, db, make_user):
    _, client = await signed_in(app, make_user, "Admin", username="root")
    erin = await make_user("Customer", username="erin", email="erin@old.example.com")
    await save(client, db, erin["id"], email="erin@new.example.com")
    activity = words(await page(client, "/dashboard"))
    assert "Updated erin" in activity and "Email: erin@old.example.com → erin@new.example.com" in activity


async def test_the_target_filter_offers_kinds_in_words_and_a_username(app, db, make_user):
    _, client = await signed_in(app, make_user, "Admin", username="root")
    fay = await make_user("Customer", username="Fay")
    other = await make_user("Customer", username="gus")
    await save(client, db, fay["id"], active="")
    await save(client, db, other["id"], active="")
    body = await page(client, "/audit")
    form = element_html(body, "audit-filters")
    assert '<option value="user">User</option>' in form and '<option value="audit">Audit log</option>' in form
    assert 'name="target_id"' not in form
    assert re.search(r'<label for="audit-target">[^<]+</label>', form)

    # Any case; the field keeps the name, the select says User, only fay's events are listed.
    response = await client.get("/audit?target=fay", headers=htmx("audit-table", **{"HX-Trigger": "audit-filters"}))
    assert response.headers["HX-Replace-Url"] == "/audit?target_type=user&target=fay"
    rows = cell_texts(await text(response))
    assert rows and {r[3] for r in rows} == {"Fay"}
    assert f"History of <strong>Fay</strong>" in await text(response)
    # A link by id fills the field with the username; "#id" names a target by id.
    linked = await page(client, f"/audit?target_type=user&target_id={fay['id']}")
    assert re.search(r'id="audit-target"[^>]*value="Fay"', linked)
    assert {r[3] for r in cell_texts(await page(client, f"/audit?target=%23{other['id']}"))} == {"gus"}
    # An unknown name matches nothing; an emptied field drops the link's id.
    assert "No events match" in await page(client, "/audit?target=nobody")
    everything = await page(client, f"/audit?target=&target_id={fay['id']}")
    assert {r[3] for r in cell_texts(everything)} >= {"Fay", "gus"}
