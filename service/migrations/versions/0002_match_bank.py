"""Bank of removed videos for re-upload matching (docs/matching.md): banked videos with their
audio fingerprints, one row per PDQ hash of a sampled frame region, and the early match of a
running scan (`scans.known_match`).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "bank_videos",
        sa.Column("video_id", sa.String(200), primary_key=True),
        sa.Column("label", sa.String(200), nullable=False),
        sa.Column("source", sa.String(200), nullable=False),
        sa.Column("audio", sa.JSON(), nullable=False),
        sa.Column("added_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "bank_hashes",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("video_id", sa.String(200),
                  sa.ForeignKey("bank_videos.video_id", ondelete="CASCADE"), nullable=False,
                  index=True),
        sa.Column("t", sa.Float(), nullable=False),
        sa.Column("quality", sa.Integer(), nullable=False),
        sa.Column("region", sa.String(8), nullable=False),
        sa.Column("pdq", sa.String(64), nullable=False, index=True),
    )
    # A plain ADD COLUMN (SQLite does it in place; a batch copy of `scans` would cascade).
    op.add_column("scans", sa.Column("known_match", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("scans") as batch:
        batch.drop_column("known_match")
    op.drop_table("bank_hashes")
    op.drop_table("bank_videos")
