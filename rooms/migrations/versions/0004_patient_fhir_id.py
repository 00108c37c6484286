"""Each patient gets the id their FHIR ``Patient`` resource has at /fhir/ (records/fhir.py):
a hospital's reference is free text, a FHIR id is at most 64 of [A-Za-z0-9-.].

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03 12:00:00
"""

import hashlib
import re
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")


def _fhir_id(ref: str, taken: set[str]) -> str:
    # as records/encounters.py patient_fhir_id() did when this migration was written
    candidate = ref.removeprefix("Patient/")
    if _ID.fullmatch(candidate) and not candidate.startswith("pt-") and candidate not in taken:
        return candidate
    return "pt-" + hashlib.sha256(ref.encode()).hexdigest()[:40]


def upgrade() -> None:
    with op.batch_alter_table("patients") as batch:
        batch.add_column(sa.Column("fhir_id", sa.String(64), nullable=True))
    patients = sa.table("patients", sa.column("ref", sa.String), sa.column("fhir_id", sa.String))
    bind = op.get_bind()
    taken: set[str] = set()
    for (ref,) in bind.execute(sa.select(patients.c.ref).order_by(patients.c.ref)).all():
        fhir_id = _fhir_id(ref, taken)
        taken.add(fhir_id)
        bind.execute(patients.update().where(patients.c.ref == ref).values(fhir_id=fhir_id))
    with op.batch_alter_table("patients") as batch:
        batch.alter_column("fhir_id", existing_type=sa.String(64), nullable=False)
        batch.create_index("ix_patients_fhir_id", ["fhir_id"], unique=True)


def downgrade() -> None:
    with op.batch_alter_table("patients") as batch:
        batch.drop_index("ix_patients_fhir_id")
        batch.drop_column("fhir_id")
