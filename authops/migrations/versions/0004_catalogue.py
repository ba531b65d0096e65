"""catalogue: data resources, schema versions, datasets, ingest runs and sources

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22 02:18:09.531315
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('data_resource',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('code', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('org_id', sa.Integer(), nullable=False),
    sa.Column('no', sa.Integer(), nullable=True),
    sa.Column('name_zh', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('name_en', sqlmodel.sql.sqltypes.AutoString(length=300), nullable=False),
    sa.Column('description', sqlmodel.sql.sqltypes.AutoString(length=4000), nullable=False),
    sa.Column('grade', sqlmodel.sql.sqltypes.AutoString(length=2), nullable=False),
    sa.Column('share_modes', sa.JSON(), nullable=False),
    sa.Column('provision_modes', sa.JSON(), nullable=False),
    sa.Column('update_cycle', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('schema_version', sa.Integer(), nullable=False),
    sa.Column('dataset_id', sa.Integer(), nullable=True),
    sa.Column('last_loaded_at', sa.DateTime(), nullable=True),
    sa.Column('mock_object_key', sqlmodel.sql.sqltypes.AutoString(length=300), nullable=True),
    sa.Column('mock_rows', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['org_id'], ['organisation.id'], name=op.f('fk_data_resource_org_id_organisation')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_data_resource'))
    )
    with op.batch_alter_table('data_resource', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_data_resource_code'), ['code'], unique=True)
        batch_op.create_index(batch_op.f('ix_data_resource_org_id'), ['org_id'], unique=False)

    op.create_table('dataset',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('resource_id', sa.Integer(), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('schema_version', sa.Integer(), nullable=False),
    sa.Column('object_key', sqlmodel.sql.sqltypes.AutoString(length=300), nullable=False),
    sa.Column('rows', sa.Integer(), nullable=False),
    sa.Column('nbytes', sa.Integer(), nullable=False),
    sa.Column('sha256', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('quality', sa.JSON(), nullable=False),
    sa.Column('load_id', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['resource_id'], ['data_resource.id'], name=op.f('fk_dataset_resource_id_data_resource')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_dataset')),
    sa.UniqueConstraint('object_key', name=op.f('uq_dataset_object_key')),
    sa.UniqueConstraint('resource_id', 'version', name=op.f('uq_dataset_resource_id'))
    )
    with op.batch_alter_table('dataset', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_dataset_resource_id'), ['resource_id'], unique=False)

    op.create_table('ingest_source',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('resource_id', sa.Integer(), nullable=False),
    sa.Column('kind', sqlmodel.sql.sqltypes.AutoString(length=8), nullable=False),
    sa.Column('config_sealed', sa.LargeBinary(), nullable=False),
    sa.Column('display', sqlmodel.sql.sqltypes.AutoString(length=300), nullable=False),
    sa.Column('incremental', sa.Boolean(), nullable=False),
    sa.Column('updated_column', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
    sa.Column('watermark', sa.DateTime(), nullable=True),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('next_run_at', sa.DateTime(), nullable=True),
    sa.Column('last_run_id', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['resource_id'], ['data_resource.id'], name=op.f('fk_ingest_source_resource_id_data_resource')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_ingest_source'))
    )
    with op.batch_alter_table('ingest_source', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_ingest_source_next_run_at'), ['next_run_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_ingest_source_resource_id'), ['resource_id'], unique=False)

    op.create_table('schema_version',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('resource_id', sa.Integer(), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('definition', sa.JSON(), nullable=False),
    sa.Column('note', sqlmodel.sql.sqltypes.AutoString(length=1000), nullable=False),
    sa.Column('breaking', sa.Boolean(), nullable=False),
    sa.Column('created_by', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['resource_id'], ['data_resource.id'], name=op.f('fk_schema_version_resource_id_data_resource')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_schema_version')),
    sa.UniqueConstraint('resource_id', 'version', name=op.f('uq_schema_version_resource_id'))
    )
    with op.batch_alter_table('schema_version', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_schema_version_resource_id'), ['resource_id'], unique=False)

    op.create_table('ingest_run',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('resource_id', sa.Integer(), nullable=False),
    sa.Column('org_id', sa.Integer(), nullable=False),
    sa.Column('path', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('mode', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('state', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('source_id', sa.Integer(), nullable=True),
    sa.Column('job_id', sa.Integer(), nullable=True),
    sa.Column('staged_key', sqlmodel.sql.sqltypes.AutoString(length=300), nullable=True),
    sa.Column('rows_received', sa.Integer(), nullable=False),
    sa.Column('rows_rejected', sa.Integer(), nullable=False),
    sa.Column('error_count', sa.Integer(), nullable=False),
    sa.Column('report', sa.JSON(), nullable=True),
    sa.Column('dataset_id', sa.Integer(), nullable=True),
    sa.Column('message', sqlmodel.sql.sqltypes.AutoString(length=1000), nullable=True),
    sa.Column('created_by', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('finished_at', sa.DateTime(), nullable=True),
    sa.ForeignKeyConstraint(['job_id'], ['job.id'], name=op.f('fk_ingest_run_job_id_job')),
    sa.ForeignKeyConstraint(['org_id'], ['organisation.id'], name=op.f('fk_ingest_run_org_id_organisation')),
    sa.ForeignKeyConstraint(['resource_id'], ['data_resource.id'], name=op.f('fk_ingest_run_resource_id_data_resource')),
    sa.ForeignKeyConstraint(['source_id'], ['ingest_source.id'], name=op.f('fk_ingest_run_source_id_ingest_source')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_ingest_run'))
    )
    with op.batch_alter_table('ingest_run', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_ingest_run_org_id'), ['org_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_ingest_run_resource_id'), ['resource_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_ingest_run_state'), ['state'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('ingest_run', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_ingest_run_state'))
        batch_op.drop_index(batch_op.f('ix_ingest_run_resource_id'))
        batch_op.drop_index(batch_op.f('ix_ingest_run_org_id'))

    op.drop_table('ingest_run')
    with op.batch_alter_table('schema_version', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_schema_version_resource_id'))

    op.drop_table('schema_version')
    with op.batch_alter_table('ingest_source', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_ingest_source_resource_id'))
        batch_op.drop_index(batch_op.f('ix_ingest_source_next_run_at'))

    op.drop_table('ingest_source')
    with op.batch_alter_table('dataset', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_dataset_resource_id'))

    op.drop_table('dataset')
    with op.batch_alter_table('data_resource', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_data_resource_org_id'))
        batch_op.drop_index(batch_op.f('ix_data_resource_code'))

    op.drop_table('data_resource')
