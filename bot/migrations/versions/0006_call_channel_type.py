"""calls.channel_type: what kind of conversation a call was asked in

Slack's ``channel_type`` of the conversation (``im``, ``mpim``, ``channel``, ``group``), as the
bot learnt it from the conversation's message events; null where it did not (every earlier row).
Exports leave a group DM's calls out like a DM's (``--include-dms``): its ``C…``/``G…`` id alone
cannot tell it from a channel.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('calls') as batch:
        batch.add_column(sa.Column('channel_type', sa.String(length=16), nullable=True))
        batch.create_index('ix_calls_channel_type', ['channel_type', 'channel_id'])


def downgrade() -> None:
    with op.batch_alter_table('calls') as batch:
        batch.drop_index('ix_calls_channel_type')
        batch.drop_column('channel_type')
