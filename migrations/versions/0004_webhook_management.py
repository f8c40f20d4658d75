"""webhook_subscriptions: previous_secret (rotation), deleted_at

Revision ID: 0004
Revises: 0003
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.db.types

revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('webhook_subscriptions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('previous_secret', sa.String(length=100), nullable=True))
        batch_op.add_column(sa.Column('previous_secret_expires_at',
                                      app.db.types.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('deleted_at', app.db.types.UTCDateTime(timezone=True),
                                      nullable=True))


def downgrade() -> None:
    # In place: recreating the table would drop it, which the deliveries' foreign key refuses.
    with op.batch_alter_table('webhook_subscriptions', schema=None,
                              recreate='never') as batch_op:
        batch_op.drop_column('deleted_at')
        batch_op.drop_column('previous_secret_expires_at')
        batch_op.drop_column('previous_secret')
