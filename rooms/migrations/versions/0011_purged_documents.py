"""Retention of documents (records/retention.py): a purged clinical document version or case
image keeps its row as a tombstone — when it went and why; its text, signature, label and
stored bytes are gone.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | Sequence[str] | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("documents", "case_images")


def upgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("purged_at", sa.DateTime(timezone=True), nullable=True))
            batch.add_column(sa.Column("purge_reason", sa.String(255), nullable=True))


def downgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            batch.drop_column("purge_reason")
            batch.drop_column("purged_at")
