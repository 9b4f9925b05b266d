"""Live updates: who has which user's editor open (presence).

Revision ID: 0013
Revises: 0012
"""
import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "live_presence",
        sa.Column("user_id", sa.Integer, nullable=False),
        sa.Column("editor_id", sa.Integer, nullable=False),
        sa.Column("expires_at", sa.DateTime, nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="fk_live_presence_user_id_users", ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["editor_id"], ["users.id"], name="fk_live_presence_editor_id_users",
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("user_id", "editor_id", name="pk_live_presence"),
    )
    op.create_index("ix_live_presence_expires_at", "live_presence", ["expires_at"])


def downgrade() -> None:
    op.drop_table("live_presence")
