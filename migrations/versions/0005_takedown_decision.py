"""takedowns.decision (the decision and its statement of reasons)

Revision ID: 0005
Revises: 0004
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql')


def upgrade() -> None:
    with op.batch_alter_table('takedowns', schema=None) as batch_op:
        batch_op.add_column(sa.Column('decision', JSON, nullable=True))


def downgrade() -> None:
    # In place: recreating the table would drop it, which its events' foreign key refuses.
    with op.batch_alter_table('takedowns', schema=None, recreate='never') as batch_op:
        batch_op.drop_column('decision')
