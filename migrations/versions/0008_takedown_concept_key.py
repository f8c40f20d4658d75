"""takedowns.concept_key (the concept as the catalog compares it, for listing by concept)

Revision ID: 0008
Revises: 0007
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import context, op

revision: str = '0008'
down_revision: str | None = '0007'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('takedowns', schema=None) as batch_op:
        batch_op.add_column(sa.Column('concept_key', sa.String(length=200), nullable=True))
        batch_op.create_index(batch_op.f('ix_takedowns_concept_key'), ['concept_key'],
                              unique=False)
    takedowns = sa.table('takedowns', sa.column('id', sa.String), sa.column('concept', sa.String),
                         sa.column('concept_key', sa.String))
    if context.is_offline_mode():  # SQL script: no rows to read; runs of spaces stay unfolded
        op.execute(takedowns.update().values(
            concept_key=sa.func.lower(sa.func.trim(takedowns.c.concept))))
        return
    bind = op.get_bind()
    # Frozen here: app.services.catalog.normalise_concept as it was when this was written.
    rows = bind.execute(sa.select(takedowns.c.id, takedowns.c.concept)).all()
    if rows:
        bind.execute(takedowns.update().where(takedowns.c.id == sa.bindparam('ident'))
                     .values(concept_key=sa.bindparam('key')),
                     [{'ident': ident, 'key': " ".join(concept.strip().lower().split())}
                      for ident, concept in rows])


def downgrade() -> None:
    # In place: recreating the table would drop it, which its events' foreign key refuses.
    with op.batch_alter_table('takedowns', schema=None, recreate='never') as batch_op:
        batch_op.drop_index(batch_op.f('ix_takedowns_concept_key'))
        batch_op.drop_column('concept_key')
