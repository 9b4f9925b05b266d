"""Substring search of users: trigram indexes of username and email.

PostgreSQL: the pg_trgm extension and a GIN index on lower(username) and on lower(email).
SQLite: the FTS5 table users_search (trigram tokenizer, external content: the users table),
its triggers, and the existing users indexed.

Revision ID: 0008
Revises: 0007
"""
import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

SQLITE = (
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
    # Reads every existing user from the content table.
    "INSERT INTO users_search (users_search) VALUES ('rebuild')",
)


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for statement in SQLITE:
            op.execute(statement)
        return
    op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    for name in ("username", "email"):
        op.create_index(f"ix_users_{name}_trgm", "users", [sa.text(f"lower({name}) gin_trgm_ops")],
                        postgresql_using="gin", postgresql_with={"gin_pending_list_limit": 256})


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for name in ("users_search_insert", "users_search_update", "users_search_delete"):
            op.execute(f"DROP TRIGGER {name}")
        op.execute("DROP TABLE users_search")
        return
    for name in ("username", "email"):
        op.drop_index(f"ix_users_{name}_trgm", table_name="users")
