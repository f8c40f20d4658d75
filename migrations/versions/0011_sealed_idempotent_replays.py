"""idempotency_records.sealed (a replayed response that carries a secret is stored encrypted)

Revision ID: 0011
Revises: 0010
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0011'
down_revision: str | None = '0010'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('idempotency_records', schema=None) as batch_op:
        batch_op.add_column(sa.Column('sealed', sa.Boolean(), nullable=False,
                                      server_default=sa.false()))
    # Replays kept in plain text before that carry a secret (a new API key, stored nowhere
    # else but as its hash, or a webhook secret): dropped, so no readable copy is left here. A
    # retry of such a request makes a new one.
    records = sa.table('idempotency_records', sa.column('body', sa.Text))
    op.execute(records.delete().where(records.c.body.like('%"secret":%')))


def downgrade() -> None:
    records = sa.table('idempotency_records', sa.column('sealed', sa.Boolean))
    op.execute(records.delete().where(records.c.sealed.is_(True)))  # unreadable without it
    with op.batch_alter_table('idempotency_records', schema=None, recreate='never') as batch_op:
        batch_op.drop_column('sealed')
