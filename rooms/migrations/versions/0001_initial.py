"""Initial schema: rooms, participant_sessions, room_events.

Revision ID: 0001
Revises:
Create Date: 2025-01-01 00:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "rooms",
        sa.Column("id", sa.String(128), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("patient_ref", sa.String(255), nullable=True),
        sa.Column("scheduled_start", sa.DateTime(timezone=True), nullable=True),
        sa.Column("scheduled_end", sa.DateTime(timezone=True), nullable=True),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("end_reason", sa.Text(), nullable=True),
        sa.Column("created_by", sa.String(255), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_rooms"),
    )
    op.create_table(
        "participant_sessions",
        sa.Column("id", sa.String(128), nullable=False),
        sa.Column("room_id", sa.String(128), nullable=False),
        sa.Column("identity", sa.String(255), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("role", sa.String(32), nullable=False),
        sa.Column("joined_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("left_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("leave_reason", sa.Text(), nullable=True),
        sa.Column("token_id", sa.String(128), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_participant_sessions"),
        sa.ForeignKeyConstraint(
            ["room_id"], ["rooms.id"], name="fk_participant_sessions_room_id_rooms"
        ),
    )
    op.create_index("ix_participant_sessions_room_id", "participant_sessions", ["room_id"])
    op.create_table(
        "room_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("room_id", sa.String(128), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("participant_id", sa.String(128), nullable=True),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_room_events"),
        sa.ForeignKeyConstraint(["room_id"], ["rooms.id"], name="fk_room_events_room_id_rooms"),
    )
    op.create_index("ix_room_events_room_id_id", "room_events", ["room_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_room_events_room_id_id", table_name="room_events")
    op.drop_table("room_events")
    op.drop_index("ix_participant_sessions_room_id", table_name="participant_sessions")
    op.drop_table("participant_sessions")
    op.drop_table("rooms")
