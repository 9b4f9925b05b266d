"""The audit trail's hash chain, and each event's target name.

Adds audit_events.target_name (filled from users where the target still exists),
chain_position and chain_hash, and the one-row audit_chain head; then seals the existing
events into a new chain in id order, in batches, with AUDIT_HMAC_KEY when the app has one
(the Database's key, or the environment's when alembic runs from the command line).

Revision ID: 0004
Revises: 0003
"""
import os

import sqlalchemy as sa
from alembic import context, op

from web.core.audit_trail import seal_backlog

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("audit_events", sa.Column("target_name", sa.String(32), nullable=False, server_default=""))
    op.add_column("audit_events", sa.Column("chain_position", sa.BigInteger))
    op.add_column("audit_events", sa.Column("chain_hash", sa.String(64)))
    op.create_index("uq_audit_events_chain_position", "audit_events", ["chain_position"], unique=True)
    op.create_table(
        "audit_chain",
        sa.Column("id", sa.Integer, nullable=False, autoincrement=False),
        sa.Column("scheme", sa.String(40), nullable=False, server_default=""),
        sa.Column("position", sa.BigInteger, nullable=False, server_default=sa.text("0")),
        sa.Column("chain_hash", sa.String(64), nullable=False, server_default=""),
        sa.Column("sealed_at", sa.DateTime),
        sa.Column("checkpoint_position", sa.BigInteger, nullable=False, server_default=sa.text("0")),
        sa.Column("checkpoint_hash", sa.String(64), nullable=False, server_default=""),
        sa.Column("verified_at", sa.DateTime),
        sa.Column("verified_position", sa.BigInteger),
        sa.Column("verified_problem", sa.String(300), nullable=False, server_default=""),
        sa.CheckConstraint("id = 1", name="ck_audit_chain_one_row"),
        sa.PrimaryKeyConstraint("id", name="pk_audit_chain"),
    )
    op.execute("INSERT INTO audit_chain (id) VALUES (1)")
    op.execute("UPDATE audit_events SET target_name = COALESCE("
               "(SELECT username FROM users WHERE users.id = audit_events.target_id), '') "
               "WHERE target_type = 'user' AND target_id IS NOT NULL")
    key = context.config.attributes.get("audit_key", os.environ.get("AUDIT_HMAC_KEY", "").strip())
    seal_backlog(op.get_bind(), key)


def downgrade() -> None:
    op.drop_table("audit_chain")
    op.drop_index("uq_audit_events_chain_position", table_name="audit_events")
    with op.batch_alter_table("audit_events") as batch:
        batch.drop_column("chain_hash")
        batch.drop_column("chain_position")
        batch.drop_column("target_name")
