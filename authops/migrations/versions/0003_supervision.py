"""supervision: anomaly rules, cases, access blocks, incidents

The built-in rules are seeded idempotently at first use (authops.audit.anomaly.rules), not here,
so a database emptied by tests or restored from backup gets them back.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22 00:59:11.559533
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('anomaly_rule',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('description', sqlmodel.sql.sqltypes.AutoString(length=500), nullable=False),
    sa.Column('enabled', sa.Boolean(), nullable=False),
    sa.Column('threshold', sa.BigInteger(), nullable=False),
    sa.Column('window_seconds', sa.Integer(), nullable=False),
    sa.Column('action', sa.String(length=16), nullable=False),
    sa.Column('params', sa.JSON(), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.Column('updated_by', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_anomaly_rule')),
    sa.UniqueConstraint('name', name=op.f('uq_anomaly_rule_name'))
    )
    op.create_table('anomaly_case',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('rule_id', sa.Integer(), nullable=False),
    sa.Column('subject_type', sa.String(length=16), nullable=False),
    sa.Column('subject_id', sa.String(length=64), nullable=False),
    sa.Column('org_id', sa.Integer(), nullable=True),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('open_key', sa.String(length=160), nullable=True),
    sa.Column('evidence', sa.JSON(), nullable=False),
    sa.Column('first_seq', sa.BigInteger(), nullable=True),
    sa.Column('last_seq', sa.BigInteger(), nullable=True),
    sa.Column('opened_at', sa.DateTime(), nullable=False),
    sa.Column('decided_by', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
    sa.Column('decision_reason', sqlmodel.sql.sqltypes.AutoString(length=1000), nullable=True),
    sa.Column('decided_at', sa.DateTime(), nullable=True),
    sa.Column('block_id', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['rule_id'], ['anomaly_rule.id'], name=op.f('fk_anomaly_case_rule_id_anomaly_rule')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_anomaly_case')),
    sa.UniqueConstraint('open_key', name=op.f('uq_anomaly_case_open_key'))
    )
    with op.batch_alter_table('anomaly_case', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_anomaly_case_org_id'), ['org_id'], unique=False)
        batch_op.create_index('ix_anomaly_case_rule_subject', ['rule_id', 'subject_type', 'subject_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_anomaly_case_state'), ['state'], unique=False)

    op.create_table('access_block',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('subject_type', sa.String(length=16), nullable=False),
    sa.Column('subject_id', sa.String(length=64), nullable=False),
    sa.Column('org_id', sa.Integer(), nullable=True),
    sa.Column('mode', sa.String(length=16), nullable=False),
    sa.Column('limit_per_minute', sa.Integer(), nullable=True),
    sa.Column('case_id', sa.Integer(), nullable=True),
    sa.Column('reason', sqlmodel.sql.sqltypes.AutoString(length=300), nullable=False),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('lifted_at', sa.DateTime(), nullable=True),
    sa.Column('lifted_by', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
    sa.Column('window_minute', sa.BigInteger(), nullable=True),
    sa.Column('window_count', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['case_id'], ['anomaly_case.id'], name=op.f('fk_access_block_case_id_anomaly_case')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_access_block'))
    )
    with op.batch_alter_table('access_block', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_access_block_case_id'), ['case_id'], unique=False)
        batch_op.create_index('ix_access_block_subject', ['subject_type', 'subject_id', 'active'], unique=False)

    op.create_table('incident',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('severity', sa.String(length=16), nullable=False),
    sa.Column('title', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('description', sqlmodel.sql.sqltypes.AutoString(length=4000), nullable=False),
    sa.Column('org_id', sa.Integer(), nullable=True),
    sa.Column('case_id', sa.Integer(), nullable=True),
    sa.Column('occurred_at', sa.DateTime(), nullable=False),
    sa.Column('recorded_by', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['case_id'], ['anomaly_case.id'], name=op.f('fk_incident_case_id_anomaly_case')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_incident'))
    )
    with op.batch_alter_table('incident', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_incident_org_id'), ['org_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_incident_severity'), ['severity'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('incident', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_incident_severity'))
        batch_op.drop_index(batch_op.f('ix_incident_org_id'))

    op.drop_table('incident')
    with op.batch_alter_table('access_block', schema=None) as batch_op:
        batch_op.drop_index('ix_access_block_subject')
        batch_op.drop_index(batch_op.f('ix_access_block_case_id'))

    op.drop_table('access_block')
    with op.batch_alter_table('anomaly_case', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_anomaly_case_state'))
        batch_op.drop_index('ix_anomaly_case_rule_subject')
        batch_op.drop_index(batch_op.f('ix_anomaly_case_org_id'))

    op.drop_table('anomaly_case')
    op.drop_table('anomaly_rule')
