"""Appointments: who is invited to a booked room (rooms/appointments.py).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03 21:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "appointment_invitees",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("room_id", sa.String(128), nullable=False),
        sa.Column("identity", sa.String(128), nullable=False),
        sa.Column("role", sa.String(32), nullable=False),
        sa.Column("name", sa.String(200), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_appointment_invitees"),
        sa.ForeignKeyConstraint(["room_id"], ["rooms.id"],
                                name="fk_appointment_invitees_room_id_rooms"),
    )
    op.create_index("ix_appointment_invitees_room_id", "appointment_invitees", ["room_id"])


def downgrade() -> None:
    op.drop_index("ix_appointment_invitees_room_id", table_name="appointment_invitees")
    op.drop_table("appointment_invitees")
