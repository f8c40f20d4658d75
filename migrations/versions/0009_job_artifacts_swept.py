"""jobs.artifacts_swept_at (when the job's unregistered artifacts were deleted)

Revision ID: 0009
Revises: 0008
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.db.types

revision: str = '0009'
down_revision: str | None = '0008'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # NULL on every job there: ended ones are swept once, which finds the orphans left before.
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('artifacts_swept_at',
                                      app.db.types.UTCDateTime(timezone=True), nullable=True))
        batch_op.create_index(batch_op.f('ix_jobs_artifacts_swept_at'),
                              ['artifacts_swept_at'], unique=False)


def downgrade() -> None:
    # In place: recreating the table would drop it, which foreign keys to it refuse.
    with op.batch_alter_table('jobs', schema=None, recreate='never') as batch_op:
        batch_op.drop_index(batch_op.f('ix_jobs_artifacts_swept_at'))
        batch_op.drop_column('artifacts_swept_at')
