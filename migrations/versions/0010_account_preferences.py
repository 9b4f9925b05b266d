"""Per-account preferences: shortcuts and theme: users.theme ("system", "light",
"dark") and users.single_key_shortcuts. Existing accounts keep today's behaviour (the
system's theme, shortcuts on).

Revision ID: 0010
Revises: 0009
"""
import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ALTER TABLE ADD COLUMN on both databases: a batch rebuild of users on SQLite would
    # drop the search triggers (0008).
    op.add_column("users", sa.Column("theme", sa.String(6), nullable=False, server_default="system"))
    op.add_column("users", sa.Column("single_key_shortcuts", sa.Boolean, nullable=False,
                                     server_default=sa.text("true")))


def downgrade() -> None:
    op.drop_column("users", "single_key_shortcuts")
    op.drop_column("users", "theme")
