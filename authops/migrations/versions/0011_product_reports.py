"""product reports: aggregate report requests sharing DP releases; products that need consent

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 15:40:00
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('product_report',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('product_id', sa.Integer(), nullable=False),
    sa.Column('customer_org_id', sa.Integer(), nullable=False),
    sa.Column('output', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('purpose', sqlmodel.sql.sqltypes.AutoString(length=500), nullable=True),
    sa.Column('request_id', sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
    sa.Column('job_id', sa.Integer(), nullable=False),
    sa.Column('sources', sa.JSON(), nullable=False),
    sa.Column('stale', sa.Boolean(), nullable=False),
    sa.Column('created_by', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['customer_org_id'], ['organisation.id'], ),
    sa.ForeignKeyConstraint(['job_id'], ['job.id'], ),
    sa.ForeignKeyConstraint(['product_id'], ['gov_product.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('request_id', name=op.f('uq_product_report_request_id'))
    )
    with op.batch_alter_table('gov_product', schema=None) as batch_op:
        batch_op.add_column(sa.Column('consent_required', sa.Boolean(), nullable=False, server_default=sa.false()))
    with op.batch_alter_table('product_report', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_product_report_customer_org_id'), ['customer_org_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_product_report_job_id'), ['job_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_product_report_product_id'), ['product_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('product_report', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_product_report_product_id'))
        batch_op.drop_index(batch_op.f('ix_product_report_job_id'))
        batch_op.drop_index(batch_op.f('ix_product_report_customer_org_id'))
    op.drop_table('product_report')
    with op.batch_alter_table('gov_product', schema=None) as batch_op:
        batch_op.drop_column('consent_required')
