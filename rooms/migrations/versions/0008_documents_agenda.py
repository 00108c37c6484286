"""Clinical documents (records/documents.py) and the agenda of a ward round or MDT
(rooms/agenda.py).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03 22:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "documents",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("series_id", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("room_id", sa.String(128), nullable=False),
        sa.Column("segment_id", sa.String(128), nullable=True),
        sa.Column("patient_ref", sa.String(255), nullable=True),
        sa.Column("agenda_item_id", sa.String(64), nullable=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("author_identity", sa.String(255), nullable=False),
        sa.Column("author_role", sa.String(32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("content", sa.LargeBinary(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("signed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("signature", sa.Text(), nullable=True),
        sa.Column("signer_cert_sha256", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_documents"),
        sa.UniqueConstraint("series_id", "version", name="uq_documents_series_id"),
        sa.ForeignKeyConstraint(["room_id"], ["rooms.id"], name="fk_documents_room_id_rooms"),
    )
    op.create_index("ix_documents_room_id", "documents", ["room_id"])
    op.create_index("ix_documents_patient_ref", "documents", ["patient_ref"])
    op.create_table(
        "agenda_items",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("room_id", sa.String(128), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("patient_ref", sa.String(255), nullable=False),
        sa.Column("label", sa.String(200), nullable=False),
        sa.Column("presenter", sa.String(255), nullable=True),
        sa.Column("question", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_agenda_items"),
        sa.ForeignKeyConstraint(["room_id"], ["rooms.id"],
                                name="fk_agenda_items_room_id_rooms"),
    )
    op.create_index("ix_agenda_items_room_id", "agenda_items", ["room_id"])


def downgrade() -> None:
    op.drop_index("ix_agenda_items_room_id", table_name="agenda_items")
    op.drop_table("agenda_items")
    op.drop_index("ix_documents_patient_ref", table_name="documents")
    op.drop_index("ix_documents_room_id", table_name="documents")
    op.drop_table("documents")
