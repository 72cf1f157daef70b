"""the live A/B experiment and arm of each call

A call made while its prompt ran an experiment (variant files such as ask.b.prompty) records
the experiment's name and the arm the asker was assigned. Earlier rows ran under none: NULL.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('calls') as batch:
        batch.add_column(sa.Column('experiment', sa.String(length=100), nullable=True))
        batch.add_column(sa.Column('arm', sa.String(length=100), nullable=True))
        batch.create_index('ix_calls_experiment', ['experiment', 'arm'])


def downgrade() -> None:
    with op.batch_alter_table('calls') as batch:
        batch.drop_index('ix_calls_experiment')
        batch.drop_column('arm')
        batch.drop_column('experiment')
