"""Restore windows opened before their close was told get a sweep time again (data only)

Before `takedown.restore_window_closed`, the sweep cleared `takedowns.restore_window_at` once a
counter-notice's window opened, so those windows would never close. Each opened window with no
suit and no close recorded is given its `closes` back, and the reconciler tells the close.

Revision ID: 0010
Revises: 0009
"""
from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from alembic import context, op

import app.db.types

revision: str = '0010'
down_revision: str | None = '0009'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _takedowns() -> sa.TableClause:
    return sa.table('takedowns', sa.column('id', sa.String),
                    sa.column('legal', app.db.types.JSONType),
                    sa.column('restore_window_at', app.db.types.UTCDateTime(timezone=True)))


def _set(takedowns: sa.TableClause, values: list[dict[str, object]]) -> None:
    if values:
        op.get_bind().execute(takedowns.update().where(takedowns.c.id == sa.bindparam('ident'))
                              .values(restore_window_at=sa.bindparam('at')), values)


# The same change for a SQL script (`alembic upgrade --sql`), where no rows can be read.
OFFLINE_UPGRADE = """UPDATE takedowns
SET restore_window_at = (legal #>> '{counter_notice,restore_window,closes}')::timestamptz
WHERE restore_window_at IS NULL
  AND legal #>> '{counter_notice,window_opened_at}' IS NOT NULL
  AND legal #>> '{counter_notice,suit}' IS NULL
  AND legal #>> '{counter_notice,window_closed_at}' IS NULL"""
OFFLINE_DOWNGRADE = """UPDATE takedowns SET restore_window_at = NULL
WHERE restore_window_at IS NOT NULL
  AND legal #>> '{counter_notice,window_opened_at}' IS NOT NULL"""


def _offline(sql: str) -> None:
    if context.get_context().dialect.name == 'postgresql':
        op.execute(sql)
    else:  # the embedded SQLite database is migrated online, at start
        op.execute("-- 0010's data step runs online only on this database: run "
                   "`alembic upgrade head` against it")


def upgrade() -> None:
    if context.is_offline_mode():
        _offline(OFFLINE_UPGRADE)
        return
    takedowns = _takedowns()
    rows = op.get_bind().execute(sa.select(takedowns.c.id, takedowns.c.legal)
                                 .where(takedowns.c.restore_window_at.is_(None))).all()
    due = []
    for ident, legal in rows:
        counter = (legal or {}).get('counter_notice')
        if counter and counter.get('window_opened_at') and not counter.get('suit') \
                and not counter.get('window_closed_at'):
            closes = datetime.fromisoformat(counter['restore_window']['closes'])
            due.append({'ident': ident, 'at': closes})
    _set(takedowns, due)


def downgrade() -> None:
    # Older code opens every window whose time has come, opened already or not.
    if context.is_offline_mode():
        _offline(OFFLINE_DOWNGRADE)
        return
    takedowns = _takedowns()
    rows = op.get_bind().execute(sa.select(takedowns.c.id, takedowns.c.legal)
                                 .where(takedowns.c.restore_window_at.is_not(None))).all()
    _set(takedowns, [{'ident': ident, 'at': None} for ident, legal in rows
                     if ((legal or {}).get('counter_notice') or {}).get('window_opened_at')])
