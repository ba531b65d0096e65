"""joint modelling

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07 15:00:00
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('product_joint_model',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('customer_org_id', sa.Integer(), nullable=False),
    sa.Column('product_id', sa.Integer(), nullable=False),
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('labels', sa.Integer(), nullable=False),
    sa.Column('positives', sa.Integer(), nullable=False),
    sa.Column('labels_object_key', sqlmodel.sql.sqltypes.AutoString(length=300), nullable=False),
    sa.Column('job_id', sa.Integer(), nullable=True),
    sa.Column('state', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('model_object_key', sqlmodel.sql.sqltypes.AutoString(length=300), nullable=True),
    sa.Column('scores_object_key', sqlmodel.sql.sqltypes.AutoString(length=300), nullable=True),
    sa.Column('matched', sa.Integer(), nullable=True),
    sa.Column('scored', sa.Integer(), nullable=True),
    sa.Column('metrics', sa.JSON(), nullable=False),
    sa.Column('baseline', sa.JSON(), nullable=False),
    sa.Column('features', sa.JSON(), nullable=False),
    sa.Column('sources', sa.JSON(), nullable=False),
    sa.Column('created_by', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('trained_at', sa.DateTime(), nullable=True),
    sa.ForeignKeyConstraint(['customer_org_id'], ['organisation.id'], name=op.f('fk_product_joint_model_customer_org_id_organisation')),
    sa.ForeignKeyConstraint(['job_id'], ['job.id'], name=op.f('fk_product_joint_model_job_id_job')),
    sa.ForeignKeyConstraint(['product_id'], ['gov_product.id'], name=op.f('fk_product_joint_model_product_id_gov_product')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_product_joint_model'))
    )
    with op.batch_alter_table('product_joint_model', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_product_joint_model_customer_org_id'), ['customer_org_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_product_joint_model_job_id'), ['job_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_product_joint_model_product_id'), ['product_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_product_joint_model_state'), ['state'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('product_joint_model', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_product_joint_model_state'))
        batch_op.drop_index(batch_op.f('ix_product_joint_model_product_id'))
        batch_op.drop_index(batch_op.f('ix_product_joint_model_job_id'))
        batch_op.drop_index(batch_op.f('ix_product_joint_model_customer_org_id'))
    op.drop_table('product_joint_model')
