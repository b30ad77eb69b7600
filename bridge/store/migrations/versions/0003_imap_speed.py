"""mailbox_entries by (mailbox_id, modseq): HIGHESTMODSEQ and CONDSTORE/QRESYNC changes;
entries that carry keywords, by mailbox (partial index): the keywords SELECT lists

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27 11:45:00.000000
"""
import sqlalchemy as sa
from alembic import op


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('mailbox_entries', schema=None) as batch_op:
        batch_op.create_index('ix_mailbox_entries_modseq', ['mailbox_id', 'modseq'], unique=False)
        batch_op.create_index('ix_mailbox_entries_keywords', ['mailbox_id'], unique=False,
                              sqlite_where=sa.text("keywords != ''"), postgresql_where=sa.text("keywords != ''"))


def downgrade() -> None:
    with op.batch_alter_table('mailbox_entries', schema=None) as batch_op:
        batch_op.drop_index('ix_mailbox_entries_keywords')
        batch_op.drop_index('ix_mailbox_entries_modseq')
