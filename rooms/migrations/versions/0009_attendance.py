"""The broadcast: a participant's department, for attendance lists (rooms/attendance.py).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03 22:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("participant_sessions") as batch:
        batch.add_column(sa.Column("department", sa.String(200), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("participant_sessions") as batch:
        batch.drop_column("department")
