"""users' S/MIME certificates: issued by the tenant CA or imported

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27 12:45:00.000000
"""
from alembic import op
import sqlalchemy as sa

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

def upgrade() -> None:
    op.create_table('user_certificates',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('account_id', sa.Integer(), nullable=False),
    sa.Column('serial', sa.String(length=128), nullable=False),
    sa.Column('issuer_fingerprint', sa.String(length=64), nullable=False),
    sa.Column('fingerprint', sa.String(length=64), nullable=False),
    sa.Column('pem', sa.Text(), nullable=False),
    sa.Column('not_before', sa.DateTime(), nullable=False),
    sa.Column('not_after', sa.DateTime(), nullable=False),
    sa.Column('source', sa.String(length=8), nullable=False),
    sa.Column('revoked_at', sa.DateTime(), nullable=True),
    sa.Column('revocation_reason', sa.String(length=32), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.CheckConstraint("source IN ('issued','imported')", name='user_cert_source'),
    sa.ForeignKeyConstraint(['account_id'], ['accounts.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('fingerprint'),
    sa.UniqueConstraint('issuer_fingerprint', 'serial')
    )
    with op.batch_alter_table('user_certificates', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_user_certificates_account_id'), ['account_id'], unique=False)

def downgrade() -> None:
    with op.batch_alter_table('user_certificates', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_user_certificates_account_id'))
    op.drop_table('user_certificates')
