#!/usr/bin/env python3
"""Gatehouse's command line: serve the app and look after its database.

    python run.py                      serve (the default command)
    python run.py serve --workers 2    several Hypercorn workers (use PostgreSQL)
    python run.py init-db              create the schema and roles (safe to repeat)
    python run.py create-admin --username NAME --email EMAIL
    python run.py demo-data --users 1000
    python run.py schema               print the schema as SQL (what schema.sql holds)
    python run.py backup PATH          copy the live SQLite database (PostgreSQL: pg_dump)
    python run.py restore PATH         put a backup back (stop the server first)
    python run.py audit-prune --older-than 365d
    python run.py audit-verify [--expect-head HASH]
    python run.py users-purge --older-than 30d
    python run.py purge-expired        expired sessions and throttle counts (workers do it too)
    python run.py factors-rekey        second-factor secrets under the newest FACTOR_KEYS key
    python run.py factors-reset --username NAME   remove an account's second factors
    python run.py mail-send            send the mail due in the outbox, once (workers do it too)
    python run.py mail-test --to ADDRESS

Settings come from the environment: DATABASE_URL, SECRET_KEY, GATEHOUSE_ENV, HOST, PORT,
REGISTRATION_OPEN, AUDIT_HMAC_KEY, MAIL_URL, MAIL_FROM, BASE_URL, FACTOR_KEYS, REQUIRE_2FA_ROLES.
See README.md.
"""
import argparse
import asyncio
import getpass
import os
import secrets
import sys
from pathlib import Path
from datetime import timedelta

from web.core.config import Config, ConfigError
from web.core.db import Database

DEMO_USERS_ON_FIRST_START = 250


def progress(done: int, total: int, what: str = "users") -> None:
    print(f"\r  {done:,} / {total:,} {what}", end="" if done < total else "\n", file=sys.stderr, flush=True)


async def create_admin(db: Database, username: str, email: str, password: str) -> int:
    from web.accounts import passwords, queries
    from web.accounts.validation import account_problems, normalise_email
    from web.core import audit_trail as audit
    async with db.read() as conn:
        problems = await account_problems(conn, username, email, password)
    if problems:
        raise ValueError("; ".join(f"{field}: {message}" for field, message in problems.items()))
    email, _ = normalise_email(email)  # as registration and the users table store it
    password_hash = await passwords.hash_password(password)
    async with db.write() as conn:
        user_id = await queries.create_user(conn, username, email, password_hash, "Admin", confirmed=True)
        await audit.record(conn, "create", "user", user_id, actor=audit.CLI,
                           changes={"username": [None, username], "email": [None, email], "role": [None, "Admin"]})
    return user_id


async def demo_data(db: Database, count: int, events: int = 0) -> str:
    """Adds `count` users sharing one fresh random password, which is returned, then `events`
    audit events by and about the users, sealed into the chain."""
    from web.accounts import passwords
    from web.core import demo
    password = secrets.token_urlsafe(12)
    if count:
        await demo.add_demo_users(db, count, await passwords.hash_password(password), progress=progress)
    if events:
        await demo.add_demo_events(db, events, progress=lambda done, total: progress(done, total, "events"))
    return password


async def first_start(db: Database) -> None:
    """On a database without users: demo data, and an admin with a printed password."""
    from web.accounts import queries
    async with db.read() as conn:
        if await queries.count_users(conn):
            return
    print("First start: creating demo data and an admin account.", file=sys.stderr)
    demo_password = await demo_data(db, DEMO_USERS_ON_FIRST_START)
    admin_password = secrets.token_urlsafe(18)
    await create_admin(db, "admin", "admin@example.com", admin_password)
    print(f"\n  Admin login:    admin / {admin_password}"
          f"\n  Demo users' password: {demo_password}"
          "\n  (shown once; keep them now)\n", file=sys.stderr)


def read_password() -> str:
    if sys.stdin.isatty():
        first = getpass.getpass("Password: ")
        if first != getpass.getpass("Repeat the password: "):
            raise ValueError("The two passwords differ.")
        return first
    return sys.stdin.readline().rstrip("\r\n")


def on_database(config: Config, work):
    """Runs `await work(db)` on the configured database, its schema brought up to date first,
    and closes it afterwards."""
    async def main():
        db = Database(config.database_url, audit_key=config.audit_hmac_key)
        try:
            await db.create_schema()
            return await work(db)
        finally:
            await db.dispose()
    return asyncio.run(main())


def cmd_serve(config: Config, args) -> int:
    on_database(config, first_start)
    host = args.host or config.host
    port = config.port if args.port is None else args.port
    if port and port != config.port and not os.environ.get("BASE_URL"):
        # The workers read their settings again: links in mail must name the port served.
        os.environ["PORT"] = str(port)
        config = Config.from_env()
    print(f"Serving Gatehouse on http://{host}:{port} ({args.workers} worker(s))", file=sys.stderr)
    print(mail_hint(config), file=sys.stderr)
    command = [sys.executable, "-m", "hypercorn", "--bind", f"{host}:{port}",
               "--workers", str(args.workers), "--graceful-timeout", "10", "web.asgi:app"]
    os.execv(sys.executable, command)


def mail_hint(config: Config) -> str:
    if config.mail_server is None:
        return (f"Mail: MAIL_URL is not set, so nothing is sent; messages wait in the outbox, "
                f"readable by Admins at {config.base_url}/mail")
    return f"Mail: sent through {config.mail_server.host}:{config.mail_server.port} from {config.mail_from}"


def cmd_init_db(config: Config, args) -> int:
    async def nothing_more(db):
        pass
    on_database(config, nothing_more)
    print("Database ready.", file=sys.stderr)
    return 0


def cmd_create_admin(config: Config, args) -> int:
    try:
        password = read_password()
        user_id = on_database(config, lambda db: create_admin(db, args.username, args.email, password))
    except ValueError as error:
        print(f"Refused: {error}", file=sys.stderr)
        return 1
    print(f"Admin {args.username!r} created (id {user_id}).", file=sys.stderr)
    return 0


def cmd_demo_data(config: Config, args) -> int:
    if args.users < 0 or args.audit_events < 0 or not args.users + args.audit_events:
        print("--users must be at least 1 (or 0 with --audit-events)", file=sys.stderr)
        return 2
    try:
        password = on_database(config, lambda db: demo_data(db, args.users, args.audit_events))
    except ValueError as error:
        print(f"demo-data: {error}", file=sys.stderr)
        return 2
    if args.users:
        print(f"Added {args.users:,} demo users; their password is {password}", file=sys.stderr)
    if args.audit_events:
        print(f"Added {args.audit_events:,} audit events, sealed into the chain", file=sys.stderr)
    return 0


DURATION_UNITS = {"d": "days", "h": "hours"}


LONGEST = timedelta(days=100 * 365)


def duration(text: str) -> timedelta:
    """'365d' or '12h' as a timedelta (for argparse), at most a hundred years."""
    number, unit = text[:-1], text[-1:]
    if unit in DURATION_UNITS and number.isascii() and number.isdigit() and 1 <= int(number) <= 876_000:
        age = timedelta(**{DURATION_UNITS[unit]: int(number)})
        if age <= LONGEST:
            return age
    raise argparse.ArgumentTypeError(
        f"use a number of days or hours up to a hundred years, such as 365d or 12h, not {text!r}")


def cmd_audit_prune(config: Config, args) -> int:
    from web.core import audit_trail as audit
    from web.core.db import utcnow
    cutoff = utcnow() - args.older_than

    def shown(removed):
        print(f"\r  {removed:,} events removed", end="", file=sys.stderr, flush=True)

    removed = on_database(config, lambda db: audit.prune(db, cutoff, progress=shown))
    print(f"\nRemoved {removed:,} audit events older than {cutoff:%Y-%m-%d %H:%M} UTC; the chain now "
          "verifies from the last one removed (its checkpoint).", file=sys.stderr)
    return 0


def cmd_audit_verify(config: Config, args) -> int:
    from web.core import audit_trail as audit

    def shown(done, total):
        print(f"\r  {done:,} / {total:,} events", end="" if done < total else "\n", file=sys.stderr, flush=True)

    try:
        verdict = on_database(config, lambda db: audit.verify(
            db, expect_head=args.expect_head, progress=shown))
    except audit.KeyNeeded as error:
        print(f"Cannot verify: {error}", file=sys.stderr)
        return 2
    if not verdict.intact:
        where = f"event {verdict.event_id}" if verdict.event_id is not None else f"after position {verdict.position:,}"
        print(f"Audit trail BROKEN at {where}: {verdict.problem}. Intact up to position {verdict.position:,}.",
              file=sys.stderr)
        return 1
    mode = "HMAC-SHA-256 (AUDIT_HMAC_KEY)" if config.audit_hmac_key else "SHA-256, no key"
    print(f"Audit trail intact: {verdict.checked:,} events checked, up to position {verdict.position:,}; "
          f"sealed with {mode}. Keep the head hash (stdout) to check later with --expect-head.", file=sys.stderr)
    print(verdict.head_hash)
    return 0


def cmd_users_purge(config: Config, args) -> int:
    from web.accounts import queries
    from web.core import audit_trail as audit
    from web.core.db import utcnow
    cutoff = utcnow() - args.older_than

    async def purge(db):
        async with db.write() as conn:
            gone = await queries.purge_deleted(conn, cutoff)
            for row in gone:
                await audit.record(conn, "purge", "user", row.id, actor=audit.CLI, target_name=row.username,
                                   changes={"username": [row.username, None]})
        return gone
    gone = on_database(config, purge)
    print(f"Purged {len(gone):,} users deleted before {cutoff:%Y-%m-%d %H:%M} UTC.", file=sys.stderr)
    return 0


async def rekey_factors(db: Database, config: Config) -> dict[str, int]:
    from web.accounts import factors
    from web.accounts.factor_crypto import keyring
    from web.core import audit_trail as audit
    async with db.write() as conn:
        done = await factors.rekey(conn, keyring(config))
        await audit.record(conn, "factors_rekeyed", "user", None, actor=audit.CLI,
                           changes={"secrets_reencrypted": [None, done["secrets"]]})
        return done


def cmd_factors_rekey(config: Config, args) -> int:
    from web.accounts.factor_crypto import UnknownKey
    try:
        done = on_database(config, lambda db: rekey_factors(db, config))
    except UnknownKey as error:
        print(f"Nothing re-encrypted: {error}.", file=sys.stderr)
        return 2
    print(f"{done['secrets']:,} secrets re-encrypted under the newest key of FACTOR_KEYS.", file=sys.stderr)
    if done["accounts_with_old_codes"]:
        print(f"{done['accounts_with_old_codes']:,} accounts still have recovery codes hashed under an older key: "
              "keep that key in FACTOR_KEYS until they make new codes (or reset their factors).", file=sys.stderr)
    return 0


async def reset_factors(db: Database, config: Config, username: str) -> bool | None:
    """Removes every second factor of the account `username` names (audited, its owner mailed):
    whether it had one; None when no account has that name."""
    from web.accounts import factors, queries
    from web.core import audit_trail as audit
    async with db.write() as conn:
        user = await queries.find_by_login(conn, username)
        if user is None:
            return None
        removed = await factors.remove_all(conn, user.id)
        await audit.record(conn, "second_factors_reset", "user", user.id, actor=audit.CLI,
                           changes={"factors": [removed, False]})
        await factors.notify_reset(conn, config, user, audit.CLI.username)
    return removed


def cmd_factors_reset(config: Config, args) -> int:
    removed = on_database(config, lambda db: reset_factors(db, config, args.username))
    if removed is None:
        print(f"No account is named {args.username!r}.", file=sys.stderr)
        return 1
    print(f"Second factors of {args.username!r} removed{'' if removed else ' (it had none)'}; the owner was told "
          "by mail. They log in with the password alone now, and set up a factor again (at once, if "
          "their role is in REQUIRE_2FA_ROLES).", file=sys.stderr)
    return 0


def cmd_purge_expired(config: Config, args) -> int:
    from web.accounts import maintenance
    removed = on_database(config, lambda db: maintenance.purge(db, config))
    print(f"Removed {removed['sessions']:,} expired sessions and {removed['login_throttle']:,} "
          "stale throttle counts.", file=sys.stderr)
    return 0


def report_drained(done) -> None:
    print(f"Mail: {done.sent} sent, {done.retry} to retry later, {done.failed} given up.", file=sys.stderr)
    for error in done.errors:
        print(f"  {error}", file=sys.stderr)


def cmd_mail_send(config: Config, args) -> int:
    from web.mail import sender
    if config.mail_server is None:
        print("MAIL_URL is not set: messages stay in the outbox (Admins read them at /mail).", file=sys.stderr)
        return 2
    done = on_database(config, lambda db: sender.drain(db, config))
    report_drained(done)
    return 1 if done.failed else 0


def cmd_mail_test(config: Config, args) -> int:
    from web.mail import outbox, sender
    from web.mail.messages import compose

    async def send_test(db):
        message = compose(config, "test", to=args.to, subject="Test message")
        async with db.write() as conn:
            await outbox.enqueue(conn, message)
        return message, (await sender.drain(db, config) if config.mail_server else None)
    message, done = on_database(config, send_test)
    if done is None:
        print(f"Queued {message.message_id} to {args.to}; MAIL_URL is not set, so it stays in the outbox "
              f"(Admins read it at {config.base_url}/mail).", file=sys.stderr)
        return 0
    report_drained(done)
    return 0 if done.sent else 1


def cmd_backup(config: Config, args) -> int:
    from web.core.backup import BackupError, backup, sqlite_file
    try:
        counts = backup(sqlite_file(config.database_url), args.path)
    except BackupError as error:
        print(f"Backup refused: {error}", file=sys.stderr)
        return 2 if "pg_dump" in str(error) else 1
    print(f"Backed up to {args.path}: {counts['users']:,} users, {counts['audit_events']:,} audit events; "
          "integrity check ok.", file=sys.stderr)
    return 0


def cmd_restore(config: Config, args) -> int:
    from web.core.backup import BackupError, restore, sqlite_file
    try:
        database = sqlite_file(config.database_url)
        counts = restore(args.path, database)
    except BackupError as error:
        print(f"Restore refused: {error}", file=sys.stderr)
        return 2 if "pg_dump" in str(error) else 1
    print(f"Restored {database} from {args.path}: {counts['users']:,} users, {counts['audit_events']:,} "
          f"audit events. The replaced database is kept as {database.name}.before-restore.", file=sys.stderr)
    return 0


def cmd_schema(config: Config, args) -> int:
    from web.core.schema import render_schema_sql
    sys.stdout.write(render_schema_sql())
    return 0


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="run.py", description="Gatehouse: serve the app and manage its database.")
    commands = top.add_subparsers(dest="command", metavar="COMMAND")

    def command(name, text):
        return commands.add_parser(name, help=text, description=text)
    serve = command("serve", "Serve the app with Hypercorn (the default command).")
    serve.add_argument("--host", help="address to listen on (default: $HOST or 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default: $PORT or 8000; 0: a free one, which Hypercorn logs)")
    serve.add_argument("--workers", type=int, default=1, help="Hypercorn worker processes (default 1)")
    serve.set_defaults(run=cmd_serve)
    command("init-db", "Create the schema and roles; safe to repeat.").set_defaults(run=cmd_init_db)
    admin = command("create-admin", "Create an Admin account; reads the password from the terminal (twice, "
                    "without echo) or one line from stdin.")
    admin.add_argument("--username", required=True)
    admin.add_argument("--email", required=True)
    admin.set_defaults(run=cmd_create_admin)
    demo = command("demo-data", "Add realistic fake users sharing one random password, which is printed.")
    demo.add_argument("--users", type=int, default=1000, help="how many (default 1000)")
    demo.add_argument("--audit-events", type=int, default=0, metavar="N",
                      help="also N audit events by and about the users over two years, sealed into the chain")
    demo.set_defaults(run=cmd_demo_data)
    command("schema", "Print the schema as SQL (what schema.sql holds).").set_defaults(run=cmd_schema)
    command("purge-expired", "Delete sessions past their lifetime and throttle counts past their window "
            "(every worker also does this about every 10 minutes).").set_defaults(run=cmd_purge_expired)
    command("mail-send", "Send the mail due in the outbox, once, and exit (for cron; every worker "
            "also sends). Exit 1 if a message was given up.").set_defaults(run=cmd_mail_send)
    mail_test = command("mail-test", "Send a test message through MAIL_URL (without it, the message "
                        "stays in the outbox).")
    mail_test.add_argument("--to", required=True, metavar="ADDRESS")
    mail_test.set_defaults(run=cmd_mail_test)
    backup = command("backup", "Copy the SQLite database to PATH while the server runs (consistent, checked); "
                     "for PostgreSQL use pg_dump.")
    backup.add_argument("path", type=Path, metavar="PATH")
    backup.set_defaults(run=cmd_backup)
    restore = command("restore", "Replace the SQLite database with the backup at PATH; stop the server first.")
    restore.add_argument("path", type=Path, metavar="PATH")
    restore.set_defaults(run=cmd_restore)
    prune = command("audit-prune", "Delete audit events older than a given age, in batches; "
                    "the prune itself is recorded.")
    prune.add_argument("--older-than", type=duration, required=True, metavar="AGE",
                       help="age such as 365d (days) or 12h (hours)")
    prune.set_defaults(run=cmd_audit_prune)
    verify = command("audit-verify", "Check the audit trail's hash chain, in batches, and report the first "
                     "event edited, deleted or inserted (exit 1); print the head hash when intact.")
    verify.add_argument("--expect-head", default="", metavar="HASH",
                        help="a head hash printed by an earlier run: it must still be in the chain "
                        "(catches events deleted from the end)")
    verify.set_defaults(run=cmd_audit_verify)
    command("factors-rekey", "Re-encrypt every second-factor secret under the newest key of FACTOR_KEYS "
            "(newest first), so the older keys can be dropped.").set_defaults(run=cmd_factors_rekey)
    factors_reset = command("factors-reset", "Remove every second factor of an account (its owner lost them "
                            "all, and no other Admin can reset them); audited, the owner told by mail.")
    factors_reset.add_argument("--username", required=True, metavar="NAME", help="the username or email")
    factors_reset.set_defaults(run=cmd_factors_reset)
    purge = command("users-purge", "Remove for good the users deleted (soft) longer ago than a given age.")
    purge.add_argument("--older-than", type=duration, required=True, metavar="AGE",
                       help="age such as 30d (days) or 12h (hours)")
    purge.set_defaults(run=cmd_users_purge)
    return top


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    if args.command is None:
        args = parser().parse_args(["serve", *(argv or [])])
    try:
        config = Config.from_env()
    except ConfigError as error:
        print(f"Configuration error: {error}", file=sys.stderr)
        return 2
    return args.run(config, args)


if __name__ == "__main__":
    sys.exit(main())
