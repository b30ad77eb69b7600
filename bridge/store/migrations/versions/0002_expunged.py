"""expunged UIDs with their MODSEQ (QRESYNC VANISHED)

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27 10:25:00.000000
"""
from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('expunged',
    sa.Column('mailbox_id', sa.Integer(), nullable=False),
    sa.Column('uid', sa.BigInteger(), nullable=False),
    sa.Column('modseq', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['mailbox_id'], ['mailboxes.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('mailbox_id', 'uid')
    )
    with op.batch_alter_table('expunged', schema=None) as batch_op:
        batch_op.create_index('ix_expunged_modseq', ['mailbox_id', 'modseq'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('expunged', schema=None) as batch_op:
        batch_op.drop_index('ix_expunged_modseq')

    op.drop_table('expunged')
