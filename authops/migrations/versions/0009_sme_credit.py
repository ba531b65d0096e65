"""SME credit services

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 15:00:00
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('sme_financing_request',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('number', sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
    sa.Column('enterprise_org_id', sa.Integer(), nullable=False),
    sa.Column('uscc', sqlmodel.sql.sqltypes.AutoString(length=18), nullable=False),
    sa.Column('amount_band', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('term_months', sa.Integer(), nullable=False),
    sa.Column('industry', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
    sa.Column('purpose', sa.Text(), nullable=False),
    sa.Column('sharing_authorized_at', sa.DateTime(), nullable=False),
    sa.Column('profile', sa.JSON(), nullable=False),
    sa.Column('created_by', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['enterprise_org_id'], ['organisation.id'], name=op.f('fk_sme_financing_request_enterprise_org_id_organisation')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_sme_financing_request')),
    sa.UniqueConstraint('number', name=op.f('uq_sme_financing_request_number'))
    )
    with op.batch_alter_table('sme_financing_request', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_sme_financing_request_enterprise_org_id'), ['enterprise_org_id'], unique=False)

    op.create_table('sme_loan_product',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('bank_org_id', sa.Integer(), nullable=False),
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('min_amount_fen', sa.BigInteger(), nullable=False),
    sa.Column('max_amount_fen', sa.BigInteger(), nullable=False),
    sa.Column('min_term_months', sa.Integer(), nullable=False),
    sa.Column('max_term_months', sa.Integer(), nullable=False),
    sa.Column('industries', sa.JSON(), nullable=False),
    sa.Column('min_grade', sqlmodel.sql.sqltypes.AutoString(length=1), nullable=False),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('created_by', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['bank_org_id'], ['organisation.id'], name=op.f('fk_sme_loan_product_bank_org_id_organisation')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_sme_loan_product'))
    )
    with op.batch_alter_table('sme_loan_product', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_sme_loan_product_bank_org_id'), ['bank_org_id'], unique=False)

    op.create_table('sme_whitelist_subscription',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('bank_org_id', sa.Integer(), nullable=False),
    sa.Column('min_grade', sqlmodel.sql.sqltypes.AutoString(length=1), nullable=False),
    sa.Column('interval_hours', sa.Integer(), nullable=False),
    sa.Column('state', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('created_by', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('last_pushed_at', sa.DateTime(), nullable=True),
    sa.ForeignKeyConstraint(['bank_org_id'], ['organisation.id'], name=op.f('fk_sme_whitelist_subscription_bank_org_id_organisation')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_sme_whitelist_subscription'))
    )
    with op.batch_alter_table('sme_whitelist_subscription', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_sme_whitelist_subscription_bank_org_id'), ['bank_org_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_sme_whitelist_subscription_state'), ['state'], unique=False)

    op.create_table('sme_financing_match',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('request_id', sa.Integer(), nullable=False),
    sa.Column('loan_product_id', sa.Integer(), nullable=False),
    sa.Column('bank_org_id', sa.Integer(), nullable=False),
    sa.Column('state', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('history', sa.JSON(), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['bank_org_id'], ['organisation.id'], name=op.f('fk_sme_financing_match_bank_org_id_organisation')),
    sa.ForeignKeyConstraint(['loan_product_id'], ['sme_loan_product.id'], name=op.f('fk_sme_financing_match_loan_product_id_sme_loan_product')),
    sa.ForeignKeyConstraint(['request_id'], ['sme_financing_request.id'], name=op.f('fk_sme_financing_match_request_id_sme_financing_request')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_sme_financing_match')),
    sa.UniqueConstraint('request_id', 'bank_org_id', name=op.f('uq_sme_financing_match_request_id'))
    )
    with op.batch_alter_table('sme_financing_match', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_sme_financing_match_bank_org_id'), ['bank_org_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_sme_financing_match_loan_product_id'), ['loan_product_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_sme_financing_match_request_id'), ['request_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_sme_financing_match_state'), ['state'], unique=False)

    op.create_table('sme_whitelist_delivery',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('subscription_id', sa.Integer(), nullable=False),
    sa.Column('bank_org_id', sa.Integer(), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('answer_set_version', sa.Integer(), nullable=False),
    sa.Column('entries', sa.JSON(), nullable=False),
    sa.Column('added', sa.Integer(), nullable=False),
    sa.Column('removed', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['bank_org_id'], ['organisation.id'], name=op.f('fk_sme_whitelist_delivery_bank_org_id_organisation')),
    sa.ForeignKeyConstraint(['subscription_id'], ['sme_whitelist_subscription.id'], name=op.f('fk_sme_whitelist_delivery_subscription_id_sme_whitelist_subscription')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_sme_whitelist_delivery')),
    sa.UniqueConstraint('subscription_id', 'version', name=op.f('uq_sme_whitelist_delivery_subscription_id'))
    )
    with op.batch_alter_table('sme_whitelist_delivery', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_sme_whitelist_delivery_bank_org_id'), ['bank_org_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_sme_whitelist_delivery_subscription_id'), ['subscription_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('sme_whitelist_delivery', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_sme_whitelist_delivery_subscription_id'))
        batch_op.drop_index(batch_op.f('ix_sme_whitelist_delivery_bank_org_id'))

    op.drop_table('sme_whitelist_delivery')
    with op.batch_alter_table('sme_financing_match', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_sme_financing_match_state'))
        batch_op.drop_index(batch_op.f('ix_sme_financing_match_request_id'))
        batch_op.drop_index(batch_op.f('ix_sme_financing_match_loan_product_id'))
        batch_op.drop_index(batch_op.f('ix_sme_financing_match_bank_org_id'))

    op.drop_table('sme_financing_match')
    with op.batch_alter_table('sme_whitelist_subscription', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_sme_whitelist_subscription_state'))
        batch_op.drop_index(batch_op.f('ix_sme_whitelist_subscription_bank_org_id'))

    op.drop_table('sme_whitelist_subscription')
    with op.batch_alter_table('sme_loan_product', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_sme_loan_product_bank_org_id'))

    op.drop_table('sme_loan_product')
    with op.batch_alter_table('sme_financing_request', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_sme_financing_request_enterprise_org_id'))

    op.drop_table('sme_financing_request')
