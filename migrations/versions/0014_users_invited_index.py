"""A partial index of the accounts with an invitation pending, for the users table's
"Invited" and "Invitation expired" filters at a million users.

Revision ID: 0014
Revises: 0013
"""
import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    invited = sa.column("invited_at").is_not(None)
    op.create_index("ix_users_invited_at", "users", ["invited_at"], sqlite_where=invited, postgresql_where=invited)


def downgrade() -> None:
    op.drop_index("ix_users_invited_at", table_name="users")
