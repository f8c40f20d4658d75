"""takedowns.restore_window_at (a DMCA counter-notice's restore window, for the sweep)

Revision ID: 0007
Revises: 0006
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.db.types

revision: str = '0007'
down_revision: str | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('takedowns', schema=None) as batch_op:
        batch_op.add_column(sa.Column('restore_window_at',
                                      app.db.types.UTCDateTime(timezone=True), nullable=True))
        batch_op.create_index(batch_op.f('ix_takedowns_restore_window_at'),
                              ['restore_window_at'], unique=False)


def downgrade() -> None:
    # In place: recreating the table would drop it, which its events' foreign key refuses.
    with op.batch_alter_table('takedowns', schema=None, recreate='never') as batch_op:
        batch_op.drop_index(batch_op.f('ix_takedowns_restore_window_at'))
        batch_op.drop_column('restore_window_at')
