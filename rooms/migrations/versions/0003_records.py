"""The patient's record: patients, encounters (sub-encounters per patient segment), whose
each recording is (patient, segment), and the audit log — append-only rows chained by HMAC
seals, and its head (records/).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03 00:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("recordings") as batch:
        batch.add_column(sa.Column("patient_ref", sa.String(255), nullable=True))
        batch.add_column(sa.Column("segment_id", sa.String(128), nullable=True))
    op.create_table(
        "patients",
        sa.Column("ref", sa.String(255), nullable=False),
        sa.Column("first_seen", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("ref", name="pk_patients"),
    )
    op.create_table(
        "encounters",
        sa.Column("id", sa.String(128), nullable=False),
        sa.Column("room_id", sa.String(128), nullable=False),
        sa.Column("parent_id", sa.String(128), nullable=True),
        sa.Column("patient_ref", sa.String(255), nullable=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("legal_hold", sa.Boolean(), nullable=False),
        sa.Column("hold_reason", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_encounters"),
        sa.ForeignKeyConstraint(["room_id"], ["rooms.id"], name="fk_encounters_room_id_rooms"),
        sa.ForeignKeyConstraint(["parent_id"], ["encounters.id"],
                                name="fk_encounters_parent_id_encounters"),
    )
    op.create_index("ix_encounters_room_id", "encounters", ["room_id"])
    op.create_index("ix_encounters_patient_ref", "encounters", ["patient_ref"])
    op.create_table(
        "audit_log",
        sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(255), nullable=False),
        sa.Column("role", sa.String(32), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("entity_type", sa.String(32), nullable=False),
        sa.Column("entity_id", sa.String(255), nullable=True),
        sa.Column("patient_ref", sa.String(255), nullable=True),
        sa.Column("encounter_id", sa.String(128), nullable=True),
        sa.Column("address", sa.String(64), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=True),
        sa.Column("key_id", sa.String(64), nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_audit_log"),
    )
    op.create_index("ix_audit_log_patient_ref", "audit_log", ["patient_ref"])
    op.create_index("ix_audit_log_encounter_id", "audit_log", ["encounter_id"])
    head = op.create_table(
        "audit_head",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_head"),
    )
    op.bulk_insert(head, [{"id": 1, "seq": 0, "hash": "0" * 64}])


def downgrade() -> None:
    op.drop_table("audit_head")
    op.drop_index("ix_audit_log_encounter_id", table_name="audit_log")
    op.drop_index("ix_audit_log_patient_ref", table_name="audit_log")
    op.drop_table("audit_log")
    op.drop_index("ix_encounters_patient_ref", table_name="encounters")
    op.drop_index("ix_encounters_room_id", table_name="encounters")
    op.drop_table("encounters")
    op.drop_table("patients")
    with op.batch_alter_table("recordings") as batch:
        batch.drop_column("segment_id")
        batch.drop_column("patient_ref")
