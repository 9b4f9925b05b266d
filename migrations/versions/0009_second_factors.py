"""Second factors: TOTP secrets and recovery codes, and the half-done logins that
wait for one (login_challenges).

Revision ID: 0009
Revises: 0008
"""
import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def user_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=f"fk_{table}_user_id_users", ondelete="CASCADE")


def upgrade() -> None:
    op.create_table(
        "totp_factors",
        sa.Column("user_id", sa.Integer, nullable=False, autoincrement=False),
        sa.Column("key_id", sa.String(16), nullable=False),
        sa.Column("secret", sa.String(500), nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("confirmed_at", sa.DateTime),
        sa.Column("last_used_step", sa.BigInteger),
        user_fk("totp_factors"),
        sa.PrimaryKeyConstraint("user_id", name="pk_totp_factors"),
    )
    op.create_table(
        "recovery_codes",
        sa.Column("id", BigId, nullable=False),
        sa.Column("user_id", sa.Integer, nullable=False),
        sa.Column("key_id", sa.String(16), nullable=False),
        sa.Column("code_hash", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("used_at", sa.DateTime),
        user_fk("recovery_codes"),
        sa.PrimaryKeyConstraint("id", name="pk_recovery_codes"),
    )
    op.create_index("ix_recovery_codes_user_id", "recovery_codes", ["user_id", "code_hash"])
    op.create_table(
        "login_challenges",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("user_id", sa.Integer, nullable=False),
        sa.Column("remember", sa.Boolean, nullable=False),
        sa.Column("next_path", sa.String(2000), nullable=False, server_default=""),
        sa.Column("stage", sa.String(8), nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("expires_at", sa.DateTime, nullable=False),
        user_fk("login_challenges"),
        sa.PrimaryKeyConstraint("id", name="pk_login_challenges"),
    )
    op.create_index("ix_login_challenges_user_id", "login_challenges", ["user_id"])
    op.create_index("ix_login_challenges_expires_at", "login_challenges", ["expires_at"])


def downgrade() -> None:
    op.drop_table("login_challenges")
    op.drop_table("recovery_codes")
    op.drop_table("totp_factors")
