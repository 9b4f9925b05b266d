"""One index per sort of the users table, each ending in id (the keyset is (sort key, id)).

ix_users_role becomes (role, id); ix_users_active, ix_users_created_at and
ix_users_last_login (never-logged-in users sort as the epoch) are new.

Revision ID: 0002
Revises: 0001
"""
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

NEVER = sa.text("'1970-01-01 00:00:00.000000'")


def upgrade() -> None:
    op.drop_index("ix_users_role", table_name="users")
    op.create_index("ix_users_role", "users", ["role", "id"])
    op.create_index("ix_users_active", "users", ["active", "id"])
    op.create_index("ix_users_created_at", "users", ["created_at", "id"])
    op.create_index("ix_users_last_login", "users",
                    [sa.func.coalesce(sa.column("last_login_at"), NEVER), sa.column("id")])


def downgrade() -> None:
    for name in ("ix_users_last_login", "ix_users_created_at", "ix_users_active", "ix_users_role"):
        op.drop_index(name, table_name="users")
    op.create_index("ix_users_role", "users", ["role"])
