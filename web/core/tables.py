"""The schema, as SQLAlchemy Core metadata: the one source of truth.

schema.sql is rendered from this module (`python run.py schema > schema.sql`) and a test
fails when either the file or a created database disagrees with it.
Timestamps are stored in UTC without a zone, the same way on SQLite and PostgreSQL.
"""
from sqlalchemy import (
    JSON, BigInteger, Boolean, CheckConstraint, Column, DateTime, ForeignKey, Index,
    Integer, LargeBinary, MetaData, String, Table, Text, and_, column, func, table, text,
)

ROLES = ("Admin", "Manager", "Customer")

USERNAME_MAX = 32
EMAIL_MAX = 254
PASSWORD_HASH_MAX = 255

metadata = MetaData(naming_convention={
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
})

# SQLite only makes INTEGER PRIMARY KEY an alias of the rowid; BIGINT would not autoincrement.
BigId = BigInteger().with_variant(Integer(), "sqlite")

roles = Table(
    "roles", metadata,
    Column("name", String(20), primary_key=True),
    Column("description", String(200), nullable=False),
)

users = Table(
    "users", metadata,
    Column("id", Integer, primary_key=True),
    Column("username", String(USERNAME_MAX), nullable=False),
    Column("email", String(EMAIL_MAX), nullable=False),
    Column("password_hash", String(PASSWORD_HASH_MAX), nullable=False),
    Column("role", String(20), ForeignKey("roles.name"), nullable=False),
    Column("active", Boolean, nullable=False, server_default=text("true")),
    Column("version", Integer, nullable=False, server_default=text("1")),
    Column("created_at", DateTime, nullable=False),
    Column("updated_at", DateTime, nullable=False),
    Column("last_login_at", DateTime),
    Column("deleted_at", DateTime),
    # When the owner proved the address is theirs (a link mailed to it); NULL: not yet.
    Column("email_confirmed_at", DateTime),
    # Set while an invitation is pending: the account has no usable password until accepted.
    Column("invited_at", DateTime),
    # The owner's own settings (profile): "system", "light" or "dark"; whether keys without a
    # modifier (/, n, ?) act as shortcuts (WCAG 2.1.4 lets a person turn them off).
    Column("theme", String(6), nullable=False, server_default="system"),
    Column("single_key_shortcuts", Boolean, nullable=False, server_default=text("true")),
    CheckConstraint("version >= 1", name="version_positive"),
)
# Case-insensitive uniqueness and lookups: the app always compares lower(column).
Index("uq_users_username_lower", func.lower(users.c.username), unique=True)
Index("uq_users_email_lower", func.lower(users.c.email), unique=True)
# One index per sort of the users table, each ending in id: the keyset is (sort key, id).
# Never-logged-in users sort as the epoch; the literal matches SQLite's stored format.
NEVER = text("'1970-01-01 00:00:00.000000'")
Index("ix_users_role", users.c.role, users.c.id)
Index("ix_users_active", users.c.active, users.c.id)
Index("ix_users_created_at", users.c.created_at, users.c.id)
Index("ix_users_last_login", func.coalesce(users.c.last_login_at, NEVER), users.c.id)
# Only the soft-deleted rows (few): the table's "N users" is all rows minus these, counted
# without a pass over the table; users-purge finds its rows here too.
Index("ix_users_deleted_at", users.c.deleted_at, sqlite_where=users.c.deleted_at.is_not(None),
      postgresql_where=users.c.deleted_at.is_not(None))
# Only the accounts with an invitation pending (few): the table's "Invited" and "Invitation
# expired" filters find them here instead of in a pass over every user.
Index("ix_users_invited_at", users.c.invited_at, sqlite_where=users.c.invited_at.is_not(None),
      postgresql_where=users.c.invited_at.is_not(None))

# Substring search of username and email, any case (web/users/queries.py), three characters
# or more. PostgreSQL: trigram indexes (pg_trgm) serve lower(column) LIKE '%term%'. New
# entries wait in a pending list that every search reads through; at the default 4 MB a
# search for one user took 63 ms instead of 0.6 after a bulk load (docs/PERFORMANCE.md).
GIN_PENDING = {"gin_pending_list_limit": 256}  # kB
Index("ix_users_username_trgm", func.lower(users.c.username).label("username"), postgresql_using="gin",
      postgresql_ops={"username": "gin_trgm_ops"}, postgresql_with=GIN_PENDING).ddl_if(dialect="postgresql")
Index("ix_users_email_trgm", func.lower(users.c.email).label("email"), postgresql_using="gin",
      postgresql_ops={"email": "gin_trgm_ops"}, postgresql_with=GIN_PENDING).ddl_if(dialect="postgresql")
# SQLite: an FTS5 table of trigrams over the two columns, holding the index only (the text
# stays in users, its rowid is users.id), kept in step by triggers. A migration that
# rebuilds users (Alembic's batch mode on SQLite) drops these triggers and must make them again.
# Its hidden column of the same name stands for every column in a MATCH.
users_search = table("users_search", column("rowid"), column("users_search"))
USERS_SEARCH_SQLITE = (
    "CREATE VIRTUAL TABLE users_search USING fts5(username, email, content='users', "
    "content_rowid='id', tokenize='trigram')",
    "CREATE TRIGGER users_search_insert AFTER INSERT ON users BEGIN\n"
    "  INSERT INTO users_search (rowid, username, email) VALUES (new.id, new.username, new.email);\n"
    "END",
    "CREATE TRIGGER users_search_update AFTER UPDATE OF username, email ON users BEGIN\n"
    "  INSERT INTO users_search (users_search, rowid, username, email)"
    " VALUES ('delete', old.id, old.username, old.email);\n"
    "  INSERT INTO users_search (rowid, username, email) VALUES (new.id, new.username, new.email);\n"
    "END",
    "CREATE TRIGGER users_search_delete AFTER DELETE ON users BEGIN\n"
    "  INSERT INTO users_search (users_search, rowid, username, email)"
    " VALUES ('delete', old.id, old.username, old.email);\n"
    "END",
)
# What the metadata cannot hold, per database: the extensions its indexes need, and SQL run
# after the tables. schema.py renders both into schema.sql.
EXTENSIONS = {"postgresql": ("pg_trgm",)}
SQL_AFTER_TABLES = {"sqlite": USERS_SEARCH_SQLITE}

sessions = Table(
    "sessions", metadata,
    # sha256 of the random token the cookie carries: a copy of this table opens no session.
    Column("id", String(64), primary_key=True),
    Column("user_id", Integer, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("remember", Boolean, nullable=False),
    Column("created_at", DateTime, nullable=False),
    Column("last_seen_at", DateTime, nullable=False),
    Column("expires_at", DateTime, nullable=False),
    Column("user_agent", String(255), nullable=False, server_default=""),
    Column("ip", String(45), nullable=False, server_default=""),
    # When its owner last proved it is them (a login, or the "confirm it's you" step before a
    # sensitive action, web/accounts/reauthentication.py); NULL: never since the session began.
    Column("reauthenticated_at", DateTime),
)
Index("ix_sessions_user_id", sessions.c.user_id)
Index("ix_sessions_expires_at", sessions.c.expires_at)

audit_events = Table(
    "audit_events", metadata,
    Column("id", BigId, primary_key=True),
    Column("occurred_at", DateTime, nullable=False),
    # No foreign key: the trail outlives the accounts it mentions; actor_name keeps who it was.
    Column("actor_id", Integer),
    Column("actor_name", String(USERNAME_MAX), nullable=False, server_default=""),
    Column("action", String(32), nullable=False),
    Column("target_type", String(32), nullable=False),
    Column("target_id", Integer),
    # The target user's username when the event was written: readable after a rename or purge.
    Column("target_name", String(USERNAME_MAX), nullable=False, server_default=""),
    Column("changes", JSON),
    Column("ip", String(45), nullable=False, server_default=""),
    # The hash chain (audit_trail.py, docs/AUDIT.md): the event's place in the chain and the
    # hash of its fields with the previous event's hash, both set when its transaction commits.
    Column("chain_position", BigInteger),
    Column("chain_hash", String(64)),
)
Index("ix_audit_events_occurred_at", audit_events.c.occurred_at, audit_events.c.id)
Index("ix_audit_events_actor", audit_events.c.actor_id, audit_events.c.occurred_at)
Index("ix_audit_events_target", audit_events.c.target_type, audit_events.c.target_id,
      audit_events.c.occurred_at)
Index("ix_audit_events_action", audit_events.c.action, audit_events.c.occurred_at)
# The chain's order (audit-verify walks it, audit-prune cuts a prefix of it); unique, so two
# events can never share a place.
Index("uq_audit_events_chain_position", audit_events.c.chain_position, unique=True)

# One row: the chain's head, which every write that records an event locks last thing before
# it commits, and the checkpoint audit-prune leaves (the last pruned event's place and hash).
audit_chain = Table(
    "audit_chain", metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    # Which serialisation and digest sealed the head: plain SHA-256, or HMAC with AUDIT_HMAC_KEY.
    Column("scheme", String(40), nullable=False, server_default=""),
    Column("position", BigInteger, nullable=False, server_default=text("0")),
    Column("chain_hash", String(64), nullable=False, server_default=""),
    Column("sealed_at", DateTime),
    Column("checkpoint_position", BigInteger, nullable=False, server_default=text("0")),
    Column("checkpoint_hash", String(64), nullable=False, server_default=""),
    # The last audit-verify run: up to which place it found the chain intact, or its problem.
    Column("verified_at", DateTime),
    Column("verified_position", BigInteger),
    Column("verified_problem", String(300), nullable=False, server_default=""),
    CheckConstraint("id = 1", name="one_row"),
)

# Links mailed to an account (web/accounts/tokens.py): only the SHA-256 of the random token is
# kept, so a copy of this table opens nothing. A token is used up by deleting its row.
account_tokens = Table(
    "account_tokens", metadata,
    Column("id", String(64), primary_key=True),
    Column("user_id", Integer, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    # reset, confirm, email (a new address to confirm), invite
    Column("purpose", String(16), nullable=False),
    # The address the link was sent to: it confirms that address, and no other.
    Column("email", String(EMAIL_MAX), nullable=False),
    # A digest of the password hash when the token was made: a reset link dies once the
    # password changes, however it changed.
    Column("password_digest", String(64), nullable=False, server_default=""),
    Column("created_at", DateTime, nullable=False),
    Column("expires_at", DateTime, nullable=False),
)
Index("ix_account_tokens_user_id", account_tokens.c.user_id, account_tokens.c.purpose)
Index("ix_account_tokens_expires_at", account_tokens.c.expires_at)

# CSV imports of users (web/imports/): the file's rows are kept with the job, so the preview,
# a page reload and a server killed mid-import all read the same state. A runner holds a
# running job for a while (claimed_until) and creates its rows in batches, each batch one
# transaction that also records each row's outcome.
imports = Table(
    "imports", metadata,
    Column("id", BigId, primary_key=True),
    Column("created_by", Integer, ForeignKey("users.id", ondelete="SET NULL")),
    Column("created_at", DateTime, nullable=False),
    Column("filename", String(255), nullable=False, server_default=""),
    # mapping (columns chosen), preview (rows checked), running, done, cancelled
    Column("state", String(16), nullable=False),
    Column("header", JSON, nullable=False),
    # field name -> the file's column index
    Column("mapping", JSON),
    Column("total", Integer, nullable=False, server_default=text("0")),
    Column("created", Integer, nullable=False, server_default=text("0")),
    Column("skipped", Integer, nullable=False, server_default=text("0")),
    Column("failed", Integer, nullable=False, server_default=text("0")),
    Column("claimed_until", DateTime),
    Column("finished_at", DateTime),
)
Index("ix_imports_state", imports.c.state)

import_rows = Table(
    "import_rows", metadata,
    Column("import_id", BigId, ForeignKey("imports.id", ondelete="CASCADE"), primary_key=True),
    # The row's line in the file (the header is line 1).
    Column("line", Integer, primary_key=True, autoincrement=False),
    Column("cells", JSON, nullable=False),
    # The mapped values, as the preview shows them and an inline fix changes them.
    Column("username", String(300), nullable=False, server_default=""),
    Column("email", String(300), nullable=False, server_default=""),
    Column("role", String(300), nullable=False, server_default=""),
    Column("active", String(300), nullable=False, server_default=""),
    Column("password_hash", String(300), nullable=False, server_default=""),
    # field -> what is wrong with it; `bad` when there is anything.
    Column("problems", JSON),
    Column("bad", Boolean, nullable=False, server_default=text("false")),
    # "" until imported, then created, skipped or failed; message says why.
    Column("outcome", String(16), nullable=False, server_default=""),
    Column("message", String(300), nullable=False, server_default=""),
    Column("user_id", Integer),
)

login_throttle = Table(
    "login_throttle", metadata,
    # "ip:<address>" or "account:<lowercased identifier>"
    Column("key", String(300), primary_key=True),
    Column("failures", Integer, nullable=False),
    Column("window_start", DateTime, nullable=False),
    Column("locked_until", DateTime),
)

# Mail waiting to be sent, written in the transaction of the change that causes it
# (web/mail/, docs/MAIL.md); a sender claims a due row for a while (claimed_until), sends it
# with no transaction open, then marks it sent, to retry at due_at, or failed.
outbox = Table(
    "outbox", metadata,
    Column("id", BigId, primary_key=True),
    # The Message-ID header, the same at every attempt: a resend after a crash is recognisable.
    Column("message_id", String(255), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("recipient", String(EMAIL_MAX), nullable=False),
    Column("subject", String(255), nullable=False),
    Column("text_body", Text, nullable=False),
    Column("html_body", Text, nullable=False),
    # Substrings of the bodies (tokens in links) blanked once the message is sent or given up.
    Column("secrets", JSON),
    Column("created_at", DateTime, nullable=False),
    Column("due_at", DateTime, nullable=False),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("last_error", String(500), nullable=False, server_default=""),
    Column("claimed_until", DateTime),
    Column("sent_at", DateTime),
    Column("failed_at", DateTime),
)
Index("uq_outbox_message_id", outbox.c.message_id, unique=True)
# Only the messages still to send (few): what a sender looks for, soonest due first.
UNFINISHED = and_(outbox.c.sent_at.is_(None), outbox.c.failed_at.is_(None))
Index("ix_outbox_due_at", outbox.c.due_at, sqlite_where=UNFINISHED, postgresql_where=UNFINISHED)

# Second factors (web/accounts/factors.py). One TOTP secret per account, encrypted under
# FACTOR_KEYS (key_id names the key); confirmed_at NULL while its enrolment waits for a first
# code. last_used_step: the newest 30-second step whose code was accepted; a code of that
# step or an earlier one is refused, decided by a conditional UPDATE of this column.
totp_factors = Table(
    "totp_factors", metadata,
    Column("user_id", Integer, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, autoincrement=False),
    Column("key_id", String(16), nullable=False),
    Column("secret", String(500), nullable=False),
    Column("created_at", DateTime, nullable=False),
    Column("confirmed_at", DateTime),
    Column("last_used_step", BigInteger),
)

# HMAC-SHA-256 of each recovery code under the FACTOR_KEYS key named by key_id; a code is
# used up by setting used_at, conditionally, so two logins cannot both use it.
recovery_codes = Table(
    "recovery_codes", metadata,
    Column("id", BigId, primary_key=True),
    Column("user_id", Integer, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("key_id", String(16), nullable=False),
    Column("code_hash", String(64), nullable=False),
    Column("created_at", DateTime, nullable=False),
    Column("used_at", DateTime),
)
Index("ix_recovery_codes_user_id", recovery_codes.c.user_id, recovery_codes.c.code_hash)

# A login half done (web/accounts/second_step.py): the password was right, a second factor
# (or enrolling one) is still to come. Keyed by the sha256 of the random token in this
# browser's login cookie; five minutes long.
login_challenges = Table(
    "login_challenges", metadata,
    Column("id", String(64), primary_key=True),
    Column("user_id", Integer, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("remember", Boolean, nullable=False),
    Column("next_path", String(2000), nullable=False, server_default=""),
    # verify (a factor is asked for) or enrol (REQUIRE_2FA_ROLES: one must be set up first)
    Column("stage", String(8), nullable=False),
    Column("created_at", DateTime, nullable=False),
    Column("expires_at", DateTime, nullable=False),
)
Index("ix_login_challenges_user_id", login_challenges.c.user_id)
Index("ix_login_challenges_expires_at", login_challenges.c.expires_at)

# Passkeys (WebAuthn credentials, web/accounts/passkeys.py): each holds a public key, never a
# secret. The user handle is random and shared by an account's passkeys: the authenticator
# hands it back at a passwordless sign-in, and it says nothing about the account.
CREDENTIAL_ID_MAX = 1364  # base64url of the 1,023 bytes WebAuthn allows
PASSKEY_NAME_MAX = 64
passkeys = Table(
    "passkeys", metadata,
    Column("id", Integer, primary_key=True),
    Column("user_id", Integer, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("credential_id", String(CREDENTIAL_ID_MAX), nullable=False),
    Column("user_handle", String(64), nullable=False),
    Column("public_key", LargeBinary, nullable=False),  # COSE_Key
    # Authenticators that keep no counter (synced passkeys) always send 0.
    Column("sign_count", BigInteger, nullable=False, server_default=text("0")),
    Column("name", String(PASSKEY_NAME_MAX), nullable=False),
    Column("transports", JSON),
    Column("created_at", DateTime, nullable=False),
    Column("last_used_at", DateTime),
)
Index("uq_passkeys_credential_id", passkeys.c.credential_id, unique=True)
Index("ix_passkeys_user_id", passkeys.c.user_id)

# WebAuthn challenges waiting for their answer: the sha256 of each, what it is for and, but
# for a passwordless sign-in, whose it is. An answer uses its challenge up by deleting the row.
passkey_challenges = Table(
    "passkey_challenges", metadata,
    Column("id", String(64), primary_key=True),
    # register, sign_in, second_step, reauth
    Column("purpose", String(16), nullable=False),
    Column("user_id", Integer, ForeignKey("users.id", ondelete="CASCADE")),
    # register: the handle the new passkey will carry
    Column("user_handle", String(64)),
    Column("expires_at", DateTime, nullable=False),
)
Index("ix_passkey_challenges_expires_at", passkey_challenges.c.expires_at)


# Who has which user's editor open (live updates, web/live/presence.py): advisory, never a
# lock. A row lives PRESENCE_TTL seconds past its editor's last refresh.
live_presence = Table(
    "live_presence", metadata,
    Column("user_id", Integer, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    Column("editor_id", Integer, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    Column("expires_at", DateTime, nullable=False),
)
Index("ix_live_presence_expires_at", live_presence.c.expires_at)
