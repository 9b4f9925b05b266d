"""Sessions remember when their owner last re-authenticated: sessions.reauthenticated_at.
Sessions open before the upgrade have none, so their first sensitive action asks again.

Revision ID: 0011
Revises: 0010
"""
import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("sessions", sa.Column("reauthenticated_at", sa.DateTime))


def downgrade() -> None:
    op.drop_column("sessions", "reauthenticated_at")
