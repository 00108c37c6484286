"""MDT case images (caseimages/): what each image is, whose case, where its bytes are.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03 22:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "case_images",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("room_id", sa.String(128), nullable=False),
        sa.Column("patient_ref", sa.String(255), nullable=True),
        sa.Column("segment_id", sa.String(128), nullable=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("label", sa.Text(), nullable=True),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("storage_key", sa.String(1024), nullable=False),
        sa.Column("key_id", sa.String(64), nullable=True),
        sa.Column("window_center", sa.Float(), nullable=True),
        sa.Column("window_width", sa.Float(), nullable=True),
        sa.Column("uploaded_by", sa.String(255), nullable=False),
        sa.Column("uploaded_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_case_images"),
        sa.ForeignKeyConstraint(["room_id"], ["rooms.id"], name="fk_case_images_room_id_rooms"),
    )
    op.create_index("ix_case_images_room_id", "case_images", ["room_id"])
    op.create_index("ix_case_images_patient_ref", "case_images", ["patient_ref"])


def downgrade() -> None:
    op.drop_index("ix_case_images_patient_ref", table_name="case_images")
    op.drop_index("ix_case_images_room_id", table_name="case_images")
    op.drop_table("case_images")
