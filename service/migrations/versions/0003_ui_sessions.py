"""Server-side reviewer UI sessions: logging out revokes the session row, so the old cookie
stops working (it used to stay valid until it expired).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "ui_sessions",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("key_id", sa.String(32), sa.ForeignKey("api_keys.id", ondelete="CASCADE"),
                  nullable=False, index=True),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("expires_at", TIME, nullable=False),
        sa.Column("revoked_at", TIME, nullable=True),
    )


def downgrade() -> None:
    op.drop_table("ui_sessions")
