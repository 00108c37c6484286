"""Single-use invites: the device that owns each (signaling/ws.py).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03 21:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "invite_uses",
        sa.Column("token_id", sa.String(64), nullable=False),
        sa.Column("room_id", sa.String(128), nullable=False),
        sa.Column("device", sa.String(64), nullable=False),
        sa.Column("first_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("token_id", name="pk_invite_uses"),
        sa.ForeignKeyConstraint(["room_id"], ["rooms.id"], name="fk_invite_uses_room_id_rooms"),
    )


def downgrade() -> None:
    op.drop_table("invite_uses")
