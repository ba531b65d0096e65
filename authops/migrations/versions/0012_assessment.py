"""assessment: pre-filing, ratings, annual assessment, rectification

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07 15:45:00
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('assessment_year_settings',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('year', sa.Integer(), nullable=False),
    sa.Column('metrics', sa.JSON(), nullable=False),
    sa.Column('expert_weight', sa.Float(), nullable=False),
    sa.Column('excellent', sa.Float(), nullable=False),
    sa.Column('qualified', sa.Float(), nullable=False),
    sa.Column('indicators', sa.JSON(), nullable=False),
    sa.Column('updated_by', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_assessment_year_settings')),
    sa.UniqueConstraint('year', name=op.f('uq_assessment_year_settings_year'))
    )

    op.create_table('assessment',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('year', sa.Integer(), nullable=False),
    sa.Column('operator_org_id', sa.Integer(), nullable=False),
    sa.Column('kind', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('parent_id', sa.Integer(), nullable=True),
    sa.Column('period_start', sa.DateTime(), nullable=False),
    sa.Column('period_end', sa.DateTime(), nullable=False),
    sa.Column('settings', sa.JSON(), nullable=False),
    sa.Column('metrics', sa.JSON(), nullable=False),
    sa.Column('expert_scores', sa.JSON(), nullable=False),
    sa.Column('total_score', sa.Float(), nullable=False),
    sa.Column('grade', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('grade_reason', sqlmodel.sql.sqltypes.AutoString(length=500), nullable=False),
    sa.Column('state', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('body_sha256', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('signature', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('key_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('signed_by', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('signed_at', sa.DateTime(), nullable=True),
    sa.Column('consequences', sa.JSON(), nullable=False),
    sa.Column('computed_at', sa.DateTime(), nullable=False),
    sa.Column('created_by', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.ForeignKeyConstraint(['operator_org_id'], ['organisation.id'], name=op.f('fk_assessment_operator_org_id_organisation')),
    sa.ForeignKeyConstraint(['parent_id'], ['assessment.id'], name=op.f('fk_assessment_parent_id_assessment')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_assessment'))
    )

    with op.batch_alter_table('assessment', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_assessment_operator_org_id'), ['operator_org_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_assessment_state'), ['state'], unique=False)
        batch_op.create_index(batch_op.f('ix_assessment_year'), ['year'], unique=False)

    op.create_table('assessment_prefiling_schedule',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('operator_org_id', sa.Integer(), nullable=False),
    sa.Column('target_kind', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('target', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('first_due_on', sa.Date(), nullable=False),
    sa.Column('period_months', sa.Integer(), nullable=False),
    sa.Column('blocks_jobs', sa.Boolean(), nullable=False),
    sa.Column('flagged', sa.JSON(), nullable=False),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('created_by', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['operator_org_id'], ['organisation.id'], name=op.f('fk_assessment_prefiling_schedule_operator_org_id_organisation')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_assessment_prefiling_schedule'))
    )

    with op.batch_alter_table('assessment_prefiling_schedule', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_assessment_prefiling_schedule_operator_org_id'), ['operator_org_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_assessment_prefiling_schedule_target'), ['target'], unique=False)

    op.create_table('assessment_prefiling',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('schedule_id', sa.Integer(), nullable=False),
    sa.Column('operator_org_id', sa.Integer(), nullable=False),
    sa.Column('due_on', sa.Date(), nullable=False),
    sa.Column('on_time', sa.Boolean(), nullable=False),
    sa.Column('filename', sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
    sa.Column('content_type', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
    sa.Column('size', sa.Integer(), nullable=False),
    sa.Column('sha256', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('object_key', sqlmodel.sql.sqltypes.AutoString(length=300), nullable=False),
    sa.Column('filed_by', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('filed_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['operator_org_id'], ['organisation.id'], name=op.f('fk_assessment_prefiling_operator_org_id_organisation')),
    sa.ForeignKeyConstraint(['schedule_id'], ['assessment_prefiling_schedule.id'], name=op.f('fk_assessment_prefiling_schedule_id_assessment_prefiling_schedule')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_assessment_prefiling')),
    sa.UniqueConstraint('schedule_id', 'due_on', name='uq_assessment_prefiling_due')
    )

    with op.batch_alter_table('assessment_prefiling', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_assessment_prefiling_operator_org_id'), ['operator_org_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_assessment_prefiling_schedule_id'), ['schedule_id'], unique=False)

    op.create_table('assessment_rectification',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('assessment_id', sa.Integer(), nullable=False),
    sa.Column('operator_org_id', sa.Integer(), nullable=False),
    sa.Column('due_on', sa.Date(), nullable=False),
    sa.Column('state', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('plan', sa.Text(), nullable=False),
    sa.Column('plan_sha256', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('submitted_by', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('submitted_at', sa.DateTime(), nullable=True),
    sa.Column('reassessment_id', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['assessment_id'], ['assessment.id'], name=op.f('fk_assessment_rectification_assessment_id_assessment')),
    sa.ForeignKeyConstraint(['operator_org_id'], ['organisation.id'], name=op.f('fk_assessment_rectification_operator_org_id_organisation')),
    sa.ForeignKeyConstraint(['reassessment_id'], ['assessment.id'], name=op.f('fk_assessment_rectification_reassessment_id_assessment')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_assessment_rectification')),
    sa.UniqueConstraint('assessment_id', name=op.f('uq_assessment_rectification_assessment_id'))
    )

    with op.batch_alter_table('assessment_rectification', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_assessment_rectification_operator_org_id'), ['operator_org_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_assessment_rectification_state'), ['state'], unique=False)

    op.create_table('assessment_rating',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('customer_org_id', sa.Integer(), nullable=False),
    sa.Column('product_id', sa.Integer(), nullable=False),
    sa.Column('year', sa.Integer(), nullable=False),
    sa.Column('score', sa.Integer(), nullable=False),
    sa.Column('comment', sa.Text(), nullable=False),
    sa.Column('rated_by', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('rated_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['customer_org_id'], ['organisation.id'], name=op.f('fk_assessment_rating_customer_org_id_organisation')),
    sa.ForeignKeyConstraint(['product_id'], ['gov_product.id'], name=op.f('fk_assessment_rating_product_id_gov_product')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_assessment_rating')),
    sa.UniqueConstraint('customer_org_id', 'product_id', 'year', name='uq_assessment_rating')
    )

    with op.batch_alter_table('assessment_rating', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_assessment_rating_customer_org_id'), ['customer_org_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_assessment_rating_product_id'), ['product_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_assessment_rating_year'), ['year'], unique=False)

    # ### end Alembic commands ###



def downgrade() -> None:
    op.drop_table('assessment_rating')
    op.drop_table('assessment_rectification')
    op.drop_table('assessment_prefiling')
    op.drop_table('assessment_prefiling_schedule')
    op.drop_table('assessment')
    op.drop_table('assessment_year_settings')

