"""where each call came from: slack, playground, try or replay

Practice is not data: exports and stats count only real Slack traffic unless asked. Rows
logged before this revision are labelled from what they carry: the playground's workspace
is team T_PLAY, `flywheel try` calls have the trigger "cli", and the offline echo model only
ever answered those two.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('calls') as batch:
        batch.add_column(sa.Column('source', sa.String(length=16), nullable=False, server_default='slack'))
        batch.create_index('ix_calls_source_created_at', ['source', 'created_at'])
    calls = sa.table('calls', sa.column('source', sa.String), sa.column('trigger', sa.String),
                     sa.column('team_id', sa.String), sa.column('model', sa.String))
    op.execute(calls.update().where(calls.c.trigger == 'cli').values(source='try'))
    op.execute(calls.update().where(calls.c.trigger != 'cli')
               .where(sa.or_(calls.c.team_id == 'T_PLAY', calls.c.model == 'echo')).values(source='playground'))


def downgrade() -> None:
    with op.batch_alter_table('calls') as batch:
        batch.drop_index('ix_calls_source_created_at')
        batch.drop_column('source')
