"""journal op ids on calls and corrections

Rows written from the local journal (bot/journal.py) carry the id of their journal
entry, unique, so that replaying the journal after a crash never writes one twice.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    for table in ('calls', 'corrections'):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column('op_id', sa.String(length=32), nullable=True))
            batch.create_unique_constraint(f'uq_{table}_op_id', ['op_id'])


def downgrade() -> None:
    for table in ('calls', 'corrections'):
        with op.batch_alter_table(table) as batch:
            batch.drop_constraint(f'uq_{table}_op_id', type_='unique')
            batch.drop_column('op_id')
