"""Mailed-link tokens (web/accounts/tokens.py): only a digest is stored, a token is used up
once, and it dies with the state it was issued for. Expiry is tested by moving the clock
passed in (`now=`), never by waiting; purging expired tokens is part of the maintenance purge."""
import asyncio
from datetime import timedelta

from sqlalchemy import insert, select, update

from helpers import rows
from web.accounts import maintenance, queries, tokens
from web.core.db import utcnow
from web.core.tables import account_tokens, users


async def account(db, user_id):
    async with db.read() as conn:
        return await queries.get_user(conn, user_id)


async def issue(db, user_id, purpose, **kwargs) -> str:
    user = await account(db, user_id)
    async with db.write() as conn:
        return await tokens.issue(conn, user, purpose, **kwargs)


async def find(db, token, purpose, **kwargs):
    async with db.read() as conn:
        return await tokens.find(conn, token, purpose, **kwargs)


async def use(db, token, purpose, **kwargs):
    async with db.write() as conn:
        return await tokens.use(conn, token, purpose, **kwargs)


async def change(db, user_id, **values):
    async with db.write() as conn:
        await queries.update_user(conn, user_id, values)


async def test_only_the_digest_is_stored_and_the_token_is_long_and_random(db, make_user):
    user = await make_user()
    first = await issue(db, user["id"], tokens.RESET)
    other = await make_user()
    second = await issue(db, other["id"], tokens.RESET)
    stored = await rows(db, select(account_tokens))
    assert {row.id for row in stored} == {tokens.digest(first), tokens.digest(second)}
    assert all(first not in str(tuple(row)) for row in stored)
    assert len(first) >= 43 and first != second  # 32 random bytes


async def test_a_token_is_used_once(db, make_user):
    user = await make_user()
    token = await issue(db, user["id"], tokens.CONFIRM)
    assert (await find(db, token, tokens.CONFIRM)).user.id == user["id"]
    assert (await find(db, token, tokens.CONFIRM)) is not None  # looking does not use it up
    found = await use(db, token, tokens.CONFIRM)
    assert found.user.id == user["id"] and found.email == user["email"]
    assert await use(db, token, tokens.CONFIRM) is None
    assert await find(db, token, tokens.CONFIRM) is None


async def test_two_uses_at_once_exactly_one_wins(db, make_user):
    user = await make_user()
    token = await issue(db, user["id"], tokens.RESET)
    results = await asyncio.gather(*(use(db, token, tokens.RESET) for _ in range(4)))
    assert sum(result is not None for result in results) == 1


async def test_a_token_is_for_its_purpose_only(db, make_user):
    user = await make_user()
    token = await issue(db, user["id"], tokens.CONFIRM)
    assert await find(db, token, tokens.RESET) is None
    assert await use(db, token, tokens.RESET) is None
    assert await find(db, token, tokens.CONFIRM) is not None


async def test_a_token_expires(db, make_user):
    user = await make_user()
    now = utcnow()
    token = await issue(db, user["id"], tokens.RESET, now=now)
    assert await find(db, token, tokens.RESET, now=now + timedelta(minutes=29)) is not None
    assert await find(db, token, tokens.RESET, now=now + timedelta(minutes=30)) is None
    assert await use(db, token, tokens.RESET, now=now + timedelta(minutes=30)) is None


async def test_a_newer_token_replaces_the_older_of_the_same_purpose_only(db, make_user):
    user = await make_user()
    confirm = await issue(db, user["id"], tokens.CONFIRM)
    old = await issue(db, user["id"], tokens.RESET)
    new = await issue(db, user["id"], tokens.RESET)
    assert await find(db, old, tokens.RESET) is None
    assert await find(db, new, tokens.RESET) is not None
    assert await find(db, confirm, tokens.CONFIRM) is not None


async def test_a_reset_token_dies_when_the_password_changes_however_it_changed(db, make_user):
    user = await make_user()
    token = await issue(db, user["id"], tokens.RESET)
    async with db.write() as conn:
        await queries.set_password_hash(conn, user["id"], "$argon2id$another")
    assert await find(db, token, tokens.RESET) is None
    assert await use(db, token, tokens.RESET) is None


async def test_tokens_die_with_a_deactivated_or_deleted_account(db, make_user):
    deactivated, deleted = await make_user(), await make_user()
    reset = await issue(db, deactivated["id"], tokens.RESET)
    confirm = await issue(db, deleted["id"], tokens.CONFIRM)
    await change(db, deactivated["id"], active=False)
    async with db.write() as conn:
        await queries.soft_delete(conn, deleted["id"])
    assert await find(db, reset, tokens.RESET) is None
    assert await find(db, confirm, tokens.CONFIRM) is None


async def test_a_confirmation_is_for_the_address_it_was_sent_to(db, make_user):
    user = await make_user()
    token = await issue(db, user["id"], tokens.CONFIRM)
    await change(db, user["id"], email="elsewhere@example.com")
    assert await find(db, token, tokens.CONFIRM) is None


async def test_a_new_address_token_carries_the_new_address(db, make_user):
    user = await make_user()
    token = await issue(db, user["id"], tokens.EMAIL, email="new@example.com")
    found = await use(db, token, tokens.EMAIL)
    assert found.email == "new@example.com" and found.user.email == user["email"]


async def test_an_invitation_is_valid_only_while_pending(db):
    async with db.write() as conn:
        user_id = await queries.create_invited_user(conn, "invitee", "invitee@example.com", "Customer")
    token = await issue(db, user_id, tokens.INVITE, lifetime=timedelta(days=3))
    [row] = await rows(db, select(account_tokens.c.created_at, account_tokens.c.expires_at))
    assert row.expires_at - row.created_at == timedelta(days=3)
    assert await find(db, token, tokens.INVITE) is not None
    assert await issue(db, user_id, tokens.RESET) and await find(db, token, tokens.INVITE) is not None
    async with db.write() as conn:
        await queries.accept_invitation(conn, user_id, "$argon2id$chosen")
    assert await find(db, token, tokens.INVITE) is None
    [accepted] = await rows(db, select(users).where(users.c.id == user_id))
    assert accepted.invited_at is None and accepted.email_confirmed_at is not None


async def test_a_reset_token_of_an_invited_account_is_worthless(db):
    async with db.write() as conn:
        user_id = await queries.create_invited_user(conn, "invitee", "invitee@example.com", "Customer")
    token = await issue(db, user_id, tokens.RESET)
    assert await find(db, token, tokens.RESET) is None


async def test_nonsense_is_no_token(db, make_user):
    user = await make_user()
    await issue(db, user["id"], tokens.RESET)
    for nonsense in ("", "x" * 5000, "é" * 10, "' OR 1=1 --"):
        assert await find(db, nonsense, tokens.RESET) is None
        assert await use(db, nonsense, tokens.RESET) is None


async def test_revoke_ends_the_named_purposes_or_all(db, make_user):
    user = await make_user()
    reset = await issue(db, user["id"], tokens.RESET)
    confirm = await issue(db, user["id"], tokens.CONFIRM)
    async with db.write() as conn:
        assert await tokens.revoke(conn, user["id"], tokens.RESET) == 1
    assert await find(db, reset, tokens.RESET) is None and await find(db, confirm, tokens.CONFIRM) is not None
    async with db.write() as conn:
        assert await tokens.revoke(conn, user["id"]) == 1
    assert await find(db, confirm, tokens.CONFIRM) is None


async def test_the_purge_removes_exactly_the_expired_tokens(db, make_user, config):
    user = await make_user()
    now = utcnow()
    async with db.write() as conn:
        await conn.execute(insert(account_tokens), [
            {"id": name, "user_id": user["id"], "purpose": tokens.CONFIRM, "email": user["email"],
             "created_at": now - timedelta(days=3), "expires_at": expires}
            for name, expires in (("live", now + timedelta(seconds=1)), ("expired", now),
                                  ("long-expired", now - timedelta(days=1)))])
    removed = await maintenance.purge(db, config, now=now)
    assert removed["account_tokens"] == 2
    assert {row.id for row in await rows(db, select(account_tokens.c.id))} == {"live"}


async def test_tokens_go_with_their_account(db, make_user):
    user = await make_user()
    await issue(db, user["id"], tokens.CONFIRM)
    async with db.write() as conn:
        await queries.purge_deleted(conn, utcnow() + timedelta(days=1))  # nothing deleted yet
        await conn.execute(update(users).where(users.c.id == user["id"]).values(deleted_at=utcnow() - timedelta(days=2)))
        await queries.purge_deleted(conn, utcnow())
    assert await rows(db, select(account_tokens)) == []
