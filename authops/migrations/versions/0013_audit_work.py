"""audit work: findings and reports

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07 15:45:00
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('audit_finding',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('year', sa.Integer(), nullable=False),
    sa.Column('org_id', sa.Integer(), nullable=False),
    sa.Column('severity', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('title', sqlmodel.sql.sqltypes.AutoString(length=300), nullable=False),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('related', sa.JSON(), nullable=False),
    sa.Column('state', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('recorded_by', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
    sa.Column('recorded_by_org_id', sa.Integer(), nullable=False),
    sa.Column('recorded_at', sa.DateTime(), nullable=False),
    sa.Column('response', sa.Text(), nullable=False),
    sa.Column('responded_by', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
    sa.Column('responded_at', sa.DateTime(), nullable=True),
    sa.Column('disclosure_id', sa.Integer(), nullable=True),
    sa.Column('published_at', sa.DateTime(), nullable=True),
    sa.ForeignKeyConstraint(['disclosure_id'], ['gov_call.id'], name=op.f('fk_audit_finding_disclosure_id_gov_call')),
    sa.ForeignKeyConstraint(['org_id'], ['organisation.id'], name=op.f('fk_audit_finding_org_id_organisation')),
    sa.ForeignKeyConstraint(['recorded_by_org_id'], ['organisation.id'], name=op.f('fk_audit_finding_recorded_by_org_id_organisation')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_finding'))
    )
    with op.batch_alter_table('audit_finding', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_audit_finding_org_id'), ['org_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_audit_finding_state'), ['state'], unique=False)
        batch_op.create_index(batch_op.f('ix_audit_finding_year'), ['year'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('audit_finding', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_audit_finding_year'))
        batch_op.drop_index(batch_op.f('ix_audit_finding_state'))
        batch_op.drop_index(batch_op.f('ix_audit_finding_org_id'))

    op.drop_table('audit_finding')
