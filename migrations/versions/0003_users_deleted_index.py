"""A partial index of the soft-deleted users, for a cheap count of the live ones.

Revision ID: 0003
Revises: 0002
"""
import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    deleted = sa.column("deleted_at").is_not(None)
    op.create_index("ix_users_deleted_at", "users", ["deleted_at"], sqlite_where=deleted, postgresql_where=deleted)


def downgrade() -> None:
    op.drop_index("ix_users_deleted_at", table_name="users")
