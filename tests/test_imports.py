"""CSV import of users: the file's checks, the column mapping, the preview with every row's
problems, inline fixes, skipping, the import in batches with its audit, resuming after a
runner died, a result to download, and who may import what."""
import asyncio
import io
from datetime import timedelta

import pytest
from sqlalchemy import select, update
from werkzeug.datastructures import FileStorage

from conftest import PASSWORD
from helpers import audit_rows, csrf, login_ok, page, rows, send, signed_in, text, user_named
from web.core.db import utcnow
from web.core.tables import import_rows, imports, outbox, users
from web.imports import csvfile, jobs, runner

ARGON2 = "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g"
BCRYPT = "$2b$12$" + "a" * 53


async def upload(client, content: bytes | str, filename: str = "people.csv"):
    data = content.encode() if isinstance(content, str) else content
    return await client.post("/users/import", form={"csrf_token": await csrf(client)}, files={
        "file": FileStorage(io.BytesIO(data), filename=filename, content_type="text/csv")})


async def uploaded_job(client, content) -> int:
    response = await upload(client, content)
    assert response.status_code == 303, await text(response)
    return int(response.headers["Location"].rsplit("/", 1)[1])


async def job_rows(db, job_id):
    return await rows(db, select(import_rows).where(import_rows.c.import_id == job_id).order_by(import_rows.c.line))


async def job_of(db, job_id):
    [job] = await rows(db, select(imports).where(imports.c.id == job_id))
    return job


async def run_to_end(app, job_id):
    """The runner as a worker runs it (in the app's context, as tasks started from
    before_serving are)."""
    async with app.app_context():
        assert await runner.run(app.db, job_id)
    return await job_of(app.db, job_id)


# ---- reading the file ----------------------------------------------------------------------

def test_comma_semicolon_quotes_and_a_bom_are_read():
    sheet = csvfile.read('\ufeffusername;email\n"ann;x";ann@example.com\n\nbob;"b@example.com"\n'.encode())
    assert sheet.header == ["username", "email"]
    assert sheet.rows == [(2, ["ann;x", "ann@example.com"]), (4, ["bob", "b@example.com"])]
    assert csvfile.read(b'username,email\r\n"multi\nline",x@example.com\r\n').rows == [(3, ["multi\nline", "x@example.com"])]


@pytest.mark.parametrize("content, says", [
    (b"", "empty"),
    (b"   \n\n", "empty"),
    (b"username,email\n", "no users"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "binary"),
    ("username,email\nzoë,z@example.com\n".encode("latin-1"), "not UTF-8"),
    (b"username,email\n\xff\xfe,x\n", "not UTF-8"),
    (("c," * 100_000 + "c\n").encode() + b"a,b\n", "100,001 columns"),
    (b"username,email\n" + b"x" * 200_000 + b",a@example.com\n", "cannot be read as CSV"),
])
def test_a_file_that_is_not_a_csv_of_users_gets_a_clear_message(content, says):
    with pytest.raises(csvfile.FileProblem, match=says):
        csvfile.read(content)


def test_too_many_rows_is_refused(monkeypatch):
    monkeypatch.setattr(csvfile, "MAX_ROWS", 3)
    with pytest.raises(csvfile.FileProblem, match="more than 3 users"):
        csvfile.read(b"username,email\n" + b"a,a@example.com\n" * 4)


# ---- upload, preview, fix ------------------------------------------------------------------

async def test_the_preview_shows_every_row_with_its_problems_before_anything_is_written(app, db, make_user):
    await make_user(username="taken", email="taken@example.com")
    _, client = await signed_in(app, make_user, "Admin")
    before = len(await rows(db, select(users)))
    job_id = await uploaded_job(client, (
        "Username,E-mail,Role,Active\n"
        "ann,ann@example.com,manager,yes\n"
        "bob,not-an-address,,\n"
        "ann,ann2@example.com,Customer,no\n"
        "taken,new@example.com,,\n"
        "carl,carl@example.com,Wizard,maybe\n"
        "dora,=HYPERLINK(1),,\n"))
    assert len(await rows(db, select(users))) == before
    stored = {row.line: row for row in await job_rows(db, job_id)}
    assert stored[2].problems is None and not stored[2].bad
    assert "email" in stored[3].problems
    assert stored[4].problems == {"username": "Also on line 2 of the file."}
    assert stored[5].problems == {"username": "An account with this username already exists."}
    assert set(stored[6].problems) == {"role", "active"}
    assert "email" in stored[7].problems
    html = await page(client, f"/users/import/{job_id}")
    assert "6 rows: 1 ready, 5 with problems" in html
    assert "Also on line 2 of the file." in html and "Unknown role" in html
    only_bad = await page(client, f"/users/import/{job_id}?only=problems")
    assert "import-row-2" not in only_bad and "import-row-3" in only_bad


async def test_starting_with_problems_needs_a_choice_and_skipping_creates_the_good_rows(app, db, make_user):
    _, client = await signed_in(app, make_user, "Admin")
    job_id = await uploaded_job(client, "username,email\nann,ann@example.com\nbob,nope\n")
    refused = await send(client, f"/users/import/{job_id}/start", {}, hx=False)
    assert refused.status_code == 422 and "1 row has problems" in await text(refused)
    assert (await job_of(db, job_id)).state == jobs.PREVIEW
    response = await send(client, f"/users/import/{job_id}/start", {"skip_bad": "on"}, hx=False)
    assert response.status_code == 303
    job = await run_to_end(app, job_id)
    assert (job.state, job.created, job.skipped, job.failed) == (jobs.DONE, 1, 1, 0)
    assert await user_named(db, "ann") is not None and await user_named(db, "bob") is None


async def test_a_row_is_fixed_inline_and_its_duplicate_partner_is_checked_again(app, db, make_user):
    _, client = await signed_in(app, make_user, "Admin")
    job_id = await uploaded_job(client, "username,email\nann,a@example.com\nann,b@example.com\n")
    editor = await client.get(f"/users/import/{job_id}/rows/3/edit", headers={"HX-Request": "true"})
    assert 'name="username" value="ann"' in await text(editor)
    response = await send(client, f"/users/import/{job_id}/rows/3", {"username": "anna", "email": "b@example.com",
                                                                        "role": "", "active": ""},
                          target="import-preview")
    assert response.status_code == 200
    assert "2 rows: 2 ready, 0 with problems" in await text(response)
    assert [row.bad for row in await job_rows(db, job_id)] == [False, False]


async def test_columns_are_guessed_and_can_be_mapped_by_hand(app, db, make_user):
    _, client = await signed_in(app, make_user, "Admin")
    job_id = await uploaded_job(client, "who,address,notes\nann,ann@example.com,hello\n")
    [row] = await job_rows(db, job_id)
    assert row.problems["username"] and row.problems["email"]  # nothing recognised
    missing = await send(client, f"/users/import/{job_id}/mapping", {"username": "0"}, hx=False)
    assert missing.status_code == 422 and "Email" in await text(missing)
    done = await send(client, f"/users/import/{job_id}/mapping", {"username": "0", "email": "1"}, hx=False)
    assert done.status_code == 303
    [row] = await job_rows(db, job_id)
    assert (row.username, row.email, row.bad) == ("ann", "ann@example.com", False)


async def test_upload_errors_are_shown_next_to_the_file_field(app, make_user):
    _, client = await signed_in(app, make_user, "Admin")
    response = await upload(client, b"\x00\x01\x02")
    assert response.status_code == 422
    html = await text(response)
    assert 'id="import-file-error"' in html and "binary data" in html and 'aria-invalid="true"' in html
    none = await client.post("/users/import", form={"csrf_token": await csrf(client)})
    assert none.status_code == 422 and "Choose a CSV file" in await text(none)


async def test_the_upload_route_takes_ten_megabytes_and_the_rest_of_the_app_64_kib(app, make_user):
    _, client = await signed_in(app, make_user, "Admin")
    too_big = await upload(client, "username,email,notes\n" + "x" * (10 * 1024 * 1024))
    assert too_big.status_code == 413 and "larger than 10 MB" in await text(too_big)
    fine = "username,email,notes\n" + "".join(f"user{n},user{n}@example.com,{'x' * 30}\n" for n in range(5000))
    assert 64 * 1024 < len(fine) < 10 * 1024 * 1024
    assert (await upload(client, fine)).status_code == 303
    elsewhere = await client.post("/users/bulk", data="x=" + "y" * 70_000,
                                  headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert elsewhere.status_code == 413


# ---- the import ----------------------------------------------------------------------------

async def test_imported_users_get_invitations_or_keep_a_given_hash_and_each_is_audited(app, db, make_user):
    admin, client = await signed_in(app, make_user, "Admin")
    job_id = await uploaded_job(client, (
        f"username,email,role,active,password hash\n"
        f"ann,ann@example.com,Manager,yes,\n"
        f"bob,bob@example.com,,no,\n"
        f'cyd,cyd@example.com,,yes,"{ARGON2}"\n'  # an argon2 hash holds commas: quoted
        f"dia,dia@example.com,Admin,1,{BCRYPT}\n"))
    await send(client, f"/users/import/{job_id}/start", {}, hx=False)
    job = await run_to_end(app, job_id)
    assert (job.created, job.skipped, job.failed) == (4, 0, 0)
    ann, bob, cy, di = [await user_named(db, name) for name in ("ann", "bob", "cyd", "dia")]
    assert ann.invited_at is not None and ann.role == "Manager" and ann.active
    assert bob.invited_at is not None and not bob.active
    assert cy.password_hash == ARGON2 and cy.invited_at is None and cy.email_confirmed_at is not None
    assert di.password_hash == BCRYPT and di.role == "Admin"
    mail = await rows(db, select(outbox.c.recipient, outbox.c.kind))
    assert [(m.recipient, m.kind) for m in mail] == [("ann@example.com", "invite")]
    created = await audit_rows(db, "create")
    assert {event.target_id for event in created} == {ann.id, bob.id, cy.id, di.id}
    assert all(event.changes["import"] == [None, job_id] and event.actor_id == admin["id"] for event in created)
    [whole] = await audit_rows(db, "import")
    assert whole.target_id == job_id and whole.changes["created"] == [None, 4]
    assert len(await audit_rows(db, "import_started")) == 1


async def test_running_the_same_file_again_creates_nothing_twice(app, db, make_user):
    _, client = await signed_in(app, make_user, "Admin")
    content = "username,email\nann,ann@example.com\nbob,bob@example.com\n"
    first = await uploaded_job(client, content)
    await send(client, f"/users/import/{first}/start", {}, hx=False)
    await run_to_end(app, first)
    again = await uploaded_job(client, content)
    assert all(row.bad for row in await job_rows(db, again))
    await send(client, f"/users/import/{again}/start", {"skip_bad": "on"}, hx=False)
    job = await run_to_end(app, again)
    assert (job.created, job.skipped) == (0, 2)
    assert len(await rows(db, select(users).where(users.c.username.in_(["ann", "bob"])))) == 2


async def test_a_row_taken_between_the_preview_and_the_import_is_skipped(app, db, make_user):
    _, client = await signed_in(app, make_user, "Admin")
    job_id = await uploaded_job(client, "username,email\nann,ann@example.com\nbob,bob@example.com\n")
    await send(client, f"/users/import/{job_id}/start", {}, hx=False)
    await make_user(username="bob", email="other@example.com")
    job = await run_to_end(app, job_id)
    assert (job.created, job.skipped) == (1, 1)
    bob = [row for row in await job_rows(db, job_id) if row.line == 3][0]
    assert bob.outcome == "skipped" and "already exists" in bob.message


async def test_a_runner_that_died_mid_import_is_taken_over_and_nothing_is_created_twice(app, db, make_user, monkeypatch):
    _, client = await signed_in(app, make_user, "Admin")
    monkeypatch.setattr(runner, "BATCH", 2)
    monkeypatch.setattr(runner, "BATCH_SECONDS", 3600)  # batches by count only, however slow the machine
    job_id = await uploaded_job(client, "username,email\n" + "".join(f"user{n},user{n}@example.com\n" for n in range(7)))
    await send(client, f"/users/import/{job_id}/start", {}, hx=False)
    # A runner does one batch and dies: its lease is still running, then runs out.
    calls = 0
    real_batch = runner.run_batch

    async def one_batch_then_die(*args):
        nonlocal calls
        calls += 1
        if calls == 2:
            raise RuntimeError("killed")
        return await real_batch(*args)
    monkeypatch.setattr(runner, "run_batch", one_batch_then_die)
    async with app.app_context():
        with pytest.raises(RuntimeError):
            await runner.run(app.db, job_id)
        monkeypatch.setattr(runner, "run_batch", real_batch)
        assert (await job_of(db, job_id)).created == 2
        assert not await runner.run(app.db, job_id), "held by the dead runner until its lease runs out"
        later = utcnow() + runner.LEASE + timedelta(seconds=1)
        assert await runner.run(app.db, job_id, now=lambda: later)
    job = await job_of(db, job_id)
    assert (job.state, job.created) == (jobs.DONE, 7)
    assert len(await rows(db, select(users).where(users.c.username.like("user_")))) == 7
    assert len(await audit_rows(db, "create")) == 7


async def test_a_demoted_importer_creates_nothing_more(app, db, make_user):
    manager, client = await signed_in(app, make_user, "Manager")
    job_id = await uploaded_job(client, "username,email\nann,ann@example.com\n")
    await send(client, f"/users/import/{job_id}/start", {}, hx=False)
    async with db.write() as conn:
        await conn.execute(update(users).where(users.c.id == manager["id"]).values(role="Customer"))
    job = await run_to_end(app, job_id)
    assert (job.state, job.created, job.failed) == (jobs.CANCELLED, 0, 1)
    assert await user_named(db, "ann") is None


async def test_managers_import_customers_only_and_see_only_their_own_imports(app, db, make_user):
    _, manager = await signed_in(app, make_user, "Manager")
    job_id = await uploaded_job(manager, "username,email,role\nann,ann@example.com,Admin\nbob,bob@example.com,\n")
    ann = [row for row in await job_rows(db, job_id) if row.line == 2][0]
    assert ann.problems == {"role": "Managers may import Customers only."}
    _, other = await signed_in(app, make_user, "Manager")
    assert (await other.get(f"/users/import/{job_id}")).status_code == 404
    _, admin = await signed_in(app, make_user, "Admin")
    assert (await admin.get(f"/users/import/{job_id}")).status_code == 200
    _, customer = await signed_in(app, make_user, "Customer")
    assert (await customer.get("/users/import")).status_code == 403


async def test_the_result_lists_each_row_and_downloads_as_csv_with_formulas_neutralised(app, db, make_user):
    _, client = await signed_in(app, make_user, "Admin")
    job_id = await uploaded_job(client, "username,email\nann,ann@example.com\n=cmd,bad\n")
    await send(client, f"/users/import/{job_id}/start", {"skip_bad": "on"}, hx=False)
    await run_to_end(app, job_id)
    html = await page(client, f"/users/import/{job_id}")
    assert "Import finished" in html and "1 created, 1 skipped, 0 failed" in html
    download = await client.get(f"/users/import/{job_id}/result.csv")
    body = await text(download)
    assert download.headers["Content-Disposition"].startswith("attachment")
    assert body.splitlines()[1].startswith("2,ann,ann@example.com")
    assert "'=cmd" in body and "\n=cmd" not in body


async def test_a_cancelled_import_writes_nothing_and_cannot_start(app, db, make_user):
    _, client = await signed_in(app, make_user, "Admin")
    job_id = await uploaded_job(client, "username,email\nann,ann@example.com\n")
    assert (await send(client, f"/users/import/{job_id}/cancel", {}, hx=False)).status_code == 303
    refused = await send(client, f"/users/import/{job_id}/start", {}, hx=False)
    assert refused.status_code == 409
    assert await user_named(db, "ann") is None


@pytest.mark.parametrize("scheme", ["bcrypt", "argon2"])
async def test_an_imported_hash_logs_in_and_is_replaced_by_argon2(app, db, make_user, scheme):
    import bcrypt
    from argon2 import PasswordHasher
    given = (bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode() if scheme == "bcrypt"
             else PasswordHasher(time_cost=1, memory_cost=1024).hash(PASSWORD))
    _, client = await signed_in(app, make_user, "Admin")
    job_id = await uploaded_job(client, f'username,email,password_hash\nmover,mover@example.com,"{given}"\n')
    await send(client, f"/users/import/{job_id}/start", {}, hx=False)
    await run_to_end(app, job_id)
    assert (await user_named(db, "mover")).password_hash == given
    await login_ok(app.test_client(), "mover")
    upgraded = (await user_named(db, "mover")).password_hash
    assert upgraded != given and upgraded.startswith("$argon2id$")


@pytest.mark.parametrize("content, says", [
    (b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)) * 40, "binary data"),
    ("username,email\nzoë,zoe@example.com\n".encode("utf-16"), "binary data"),
    ("username,email\nzoë,zoe@example.com\n".encode("cp1252"), "not UTF-8"),
    (("col," * 100_000).encode() + b"\nann,ann@example.com\n", "100,001 columns"),
    (b"username,email\n" + b"a" * 500_000 + b",huge@example.com\n", "cannot be read as CSV"),
    (b"username,email\n\"never closed,ann@example.com\n" + b"x" * 200_000, "cannot be read as CSV"),
])
async def test_hostile_files_get_a_clear_message_never_a_500(app, db, make_user, content, says):
    _, client = await signed_in(app, make_user, "Admin")
    response = await upload(client, content)
    assert response.status_code == 422
    assert says in await text(response)
    assert await rows(db, select(imports)) == []


async def test_formula_cells_are_kept_as_text_and_shown_escaped(app, db, make_user):
    _, client = await signed_in(app, make_user, "Admin")
    job_id = await uploaded_job(client, 'username,email\n"=1+2",<b>x</b>@example.com\n')
    [row] = await job_rows(db, job_id)
    assert row.cells == ["=1+2", "<b>x</b>@example.com"]
    html = await page(client, f"/users/import/{job_id}")
    assert "&lt;b&gt;x&lt;/b&gt;@example.com" in html and "<b>x</b>" not in html


async def test_two_runners_at_once_one_holds_the_job_and_each_row_is_created_once(app, db, make_user, monkeypatch):
    _, client = await signed_in(app, make_user, "Admin")
    monkeypatch.setattr(runner, "BATCH", 3)
    job_id = await uploaded_job(client, "username,email\n" + "".join(f"user{n},user{n}@example.com\n" for n in range(10)))
    await send(client, f"/users/import/{job_id}/start", {}, hx=False)
    async with app.app_context():
        results = await asyncio.gather(runner.run(app.db, job_id), runner.run(app.db, job_id))
    assert sorted(results) == [False, True]
    job = await job_of(db, job_id)
    assert (job.state, job.created) == (jobs.DONE, 10)
    assert len(await audit_rows(db, "create")) == 10
