"""CSV imports of users: the jobs and their rows.

Revision ID: 0007
Revises: 0006
"""
import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "imports",
        sa.Column("id", BigId, nullable=False),
        sa.Column("created_by", sa.Integer),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("filename", sa.String(255), nullable=False, server_default=""),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("header", sa.JSON, nullable=False),
        sa.Column("mapping", sa.JSON),
        sa.Column("total", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("created", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("skipped", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("failed", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("claimed_until", sa.DateTime),
        sa.Column("finished_at", sa.DateTime),
        sa.ForeignKeyConstraint(["created_by"], ["users.id"], name="fk_imports_created_by_users", ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id", name="pk_imports"),
    )
    op.create_index("ix_imports_state", "imports", ["state"])
    op.create_table(
        "import_rows",
        sa.Column("import_id", BigId, nullable=False),
        sa.Column("line", sa.Integer, nullable=False, autoincrement=False),
        sa.Column("cells", sa.JSON, nullable=False),
        *(sa.Column(name, sa.String(300), nullable=False, server_default="")
          for name in ("username", "email", "role", "active", "password_hash")),
        sa.Column("problems", sa.JSON),
        sa.Column("bad", sa.Boolean, nullable=False, server_default=sa.text("false")),
        sa.Column("outcome", sa.String(16), nullable=False, server_default=""),
        sa.Column("message", sa.String(300), nullable=False, server_default=""),
        sa.Column("user_id", sa.Integer),
        sa.ForeignKeyConstraint(["import_id"], ["imports.id"], name="fk_import_rows_import_id_imports",
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("import_id", "line", name="pk_import_rows"),
    )


def downgrade() -> None:
    op.drop_table("import_rows")
    op.drop_table("imports")
