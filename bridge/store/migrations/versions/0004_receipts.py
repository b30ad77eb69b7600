"""receipts owed and issued; citizens' read-status consents

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27 12:10:00.000000
"""
from alembic import op
import sqlalchemy as sa

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

def upgrade() -> None:
    op.create_table('receipts',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('evidence_id', sa.String(length=36), nullable=False),
    sa.Column('message_id', sa.Integer(), nullable=False),
    sa.Column('event', sa.String(length=32), nullable=False),
    sa.Column('recipient', sa.String(length=320), nullable=False),
    sa.Column('owner_account_id', sa.Integer(), nullable=False),
    sa.Column('audit_chain', sa.String(length=64), nullable=False),
    sa.Column('audit_seq', sa.BigInteger(), nullable=False),
    sa.Column('audit_hash', sa.String(length=64), nullable=False),
    sa.Column('time', sa.DateTime(), nullable=False),
    sa.Column('details', sa.JSON(), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(), nullable=False),
    sa.Column('lease_token', sa.String(length=36), nullable=True),
    sa.Column('lease_until', sa.DateTime(), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('filed_message_id', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['filed_message_id'], ['messages.id'], ),
    sa.ForeignKeyConstraint(['message_id'], ['messages.id'], ),
    sa.ForeignKeyConstraint(['owner_account_id'], ['accounts.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('evidence_id'),
    sa.UniqueConstraint('message_id', 'event', 'recipient')
    )
    with op.batch_alter_table('receipts', schema=None) as batch_op:
        batch_op.create_index('ix_receipts_ready', ['state', 'next_attempt_at'], unique=False)
    op.create_table('consents',
    sa.Column('citizen_party_id', sa.Integer(), nullable=False),
    sa.Column('sender_party_id', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['citizen_party_id'], ['parties.id'], ),
    sa.ForeignKeyConstraint(['sender_party_id'], ['parties.id'], ),
    sa.PrimaryKeyConstraint('citizen_party_id', 'sender_party_id')
    )

def downgrade() -> None:
    op.drop_table('consents')
    with op.batch_alter_table('receipts', schema=None) as batch_op:
        batch_op.drop_index('ix_receipts_ready')
    op.drop_table('receipts')
