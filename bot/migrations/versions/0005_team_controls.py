"""team controls: daily budget usage, and calls whose text was not kept

budget_usage holds what each scope (total, channel, user) spent per UTC day, including the
estimates of calls under way. calls.content_logged is false where a channel opted out of
content logging or `flywheel prune` removed the text; every earlier row kept its text.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'budget_usage',
        sa.Column('day', sa.String(length=10), nullable=False),
        sa.Column('scope', sa.String(length=16), nullable=False),
        sa.Column('key', sa.String(length=32), nullable=False),
        sa.Column('tokens', sa.Integer(), nullable=False),
        sa.Column('cost_usd', sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint('day', 'scope', 'key'),
    )
    with op.batch_alter_table('calls') as batch:
        batch.add_column(sa.Column('content_logged', sa.Boolean(), nullable=False, server_default=sa.true()))


def downgrade() -> None:
    with op.batch_alter_table('calls') as batch:
        batch.drop_column('content_logged')
    op.drop_table('budget_usage')
