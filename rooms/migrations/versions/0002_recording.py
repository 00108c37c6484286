"""Recording: a room's auto_record choice, consents, recordings, their files and the jobs
that store and compose them.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03 00:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("rooms", sa.Column("auto_record", sa.Boolean(), nullable=True))
    op.create_table(
        "consents",
        sa.Column("id", sa.String(128), nullable=False),
        sa.Column("room_id", sa.String(128), nullable=False),
        sa.Column("patient_ref", sa.String(255), nullable=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("granted", sa.Boolean(), nullable=False),
        sa.Column("method", sa.String(32), nullable=False),
        sa.Column("given_by_role", sa.String(32), nullable=False),
        sa.Column("given_by", sa.String(255), nullable=True),
        sa.Column("asked_by", sa.String(255), nullable=True),
        sa.Column("recorded_by", sa.String(255), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_consents"),
        sa.ForeignKeyConstraint(["room_id"], ["rooms.id"], name="fk_consents_room_id_rooms"),
    )
    op.create_index("ix_consents_room_id", "consents", ["room_id"])
    op.create_table(
        "recordings",
        sa.Column("id", sa.String(128), nullable=False),
        sa.Column("room_id", sa.String(128), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("started_by", sa.String(255), nullable=False),
        sa.Column("consent_id", sa.String(128), nullable=True),
        sa.Column("override_reason", sa.Text(), nullable=True),
        sa.Column("interrupted", sa.Boolean(), nullable=False),
        sa.Column("duration_s", sa.Float(), nullable=True),
        sa.Column("manifest", sa.JSON(), nullable=True),
        sa.Column("manifest_sha256", sa.String(64), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_recordings"),
        sa.ForeignKeyConstraint(["room_id"], ["rooms.id"], name="fk_recordings_room_id_rooms"),
    )
    op.create_index("ix_recordings_room_id", "recordings", ["room_id"])
    op.create_table(
        "recording_files",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("recording_id", sa.String(128), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("participant_id", sa.String(128), nullable=True),
        sa.Column("identity", sa.String(255), nullable=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("source", sa.String(16), nullable=True),
        sa.Column("codec", sa.String(16), nullable=False),
        sa.Column("start_s", sa.Float(), nullable=False),
        sa.Column("duration_s", sa.Float(), nullable=False),
        sa.Column("frames", sa.Integer(), nullable=False),
        sa.Column("size", sa.Integer(), nullable=True),
        sa.Column("sha256", sa.String(64), nullable=True),
        sa.Column("key_id", sa.String(64), nullable=True),
        sa.Column("stored", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_recording_files"),
        sa.ForeignKeyConstraint(["recording_id"], ["recordings.id"],
                                name="fk_recording_files_recording_id_recordings"),
    )
    op.create_index("ix_recording_files_recording_id", "recording_files", ["recording_id"])
    op.create_table(
        "recording_jobs",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("recording_id", sa.String(128), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("progress", sa.Float(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("worker", sa.String(128), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_recording_jobs"),
        sa.ForeignKeyConstraint(["recording_id"], ["recordings.id"],
                                name="fk_recording_jobs_recording_id_recordings"),
    )
    op.create_index("ix_recording_jobs_status", "recording_jobs", ["status"])


def downgrade() -> None:
    op.drop_index("ix_recording_jobs_status", table_name="recording_jobs")
    op.drop_table("recording_jobs")
    op.drop_index("ix_recording_files_recording_id", table_name="recording_files")
    op.drop_table("recording_files")
    op.drop_index("ix_recordings_room_id", table_name="recordings")
    op.drop_table("recordings")
    op.drop_index("ix_consents_room_id", table_name="consents")
    op.drop_table("consents")
    with op.batch_alter_table("rooms") as batch:
        batch.drop_column("auto_record")
