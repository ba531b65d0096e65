"""batch submissions take an Idempotency-Key

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07 22:30:00
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0016'
down_revision = '0015'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('product_batch', schema=None) as batch_op:
        batch_op.add_column(sa.Column('idempotency_key', sqlmodel.sql.sqltypes.AutoString(length=128), nullable=True))
        batch_op.add_column(sa.Column('request_sha256', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False,
                                      server_default=''))
        batch_op.create_unique_constraint('uq_product_batch_customer_org_id', ['customer_org_id', 'idempotency_key'])


def downgrade() -> None:
    with op.batch_alter_table('product_batch', schema=None) as batch_op:
        batch_op.drop_constraint('uq_product_batch_customer_org_id', type_='unique')
        batch_op.drop_column('request_sha256')
        batch_op.drop_column('idempotency_key')
