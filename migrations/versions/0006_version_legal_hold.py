"""model_versions: held_at, hold_reason, held_by (legal hold)

Revision ID: 0006
Revises: 0005
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.db.types

revision: str = '0006'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('model_versions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('held_at', app.db.types.UTCDateTime(timezone=True),
                                      nullable=True))
        batch_op.add_column(sa.Column('hold_reason', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('held_by', sa.String(length=200), nullable=True))


def downgrade() -> None:
    # In place: recreating the table would drop it, which the foreign keys to it refuse.
    with op.batch_alter_table('model_versions', schema=None, recreate='never') as batch_op:
        batch_op.drop_column('held_by')
        batch_op.drop_column('hold_reason')
        batch_op.drop_column('held_at')
