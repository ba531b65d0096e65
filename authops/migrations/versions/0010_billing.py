"""billing: prices, caps, invoices, books, settlement

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07 15:00:00
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('billing_book_entry',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('operator_org_id', sa.Integer(), nullable=False),
    sa.Column('book', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('category', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
    sa.Column('amount_fen', sa.Integer(), nullable=False),
    sa.Column('occurred_on', sa.Date(), nullable=False),
    sa.Column('year', sa.Integer(), nullable=False),
    sa.Column('description', sqlmodel.sql.sqltypes.AutoString(length=500), nullable=False),
    sa.Column('reference', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
    sa.Column('reverses_id', sa.Integer(), nullable=True),
    sa.Column('recorded_by', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
    sa.Column('recorded_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['operator_org_id'], ['organisation.id'], name=op.f('fk_billing_book_entry_operator_org_id_organisation')),
    sa.ForeignKeyConstraint(['reverses_id'], ['billing_book_entry.id'], name=op.f('fk_billing_book_entry_reverses_id_billing_book_entry')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_billing_book_entry')),
    sa.UniqueConstraint('reverses_id', name=op.f('uq_billing_book_entry_reverses_id'))
    )

    with op.batch_alter_table('billing_book_entry', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_billing_book_entry_operator_org_id'), ['operator_org_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_billing_book_entry_year'), ['year'], unique=False)

    op.create_table('billing_max_revenue',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('operator_org_id', sa.Integer(), nullable=False),
    sa.Column('year', sa.Integer(), nullable=False),
    sa.Column('amount_fen', sa.Integer(), nullable=False),
    sa.Column('warn_at_pct', sa.JSON(), nullable=False),
    sa.Column('co_set_by_org_id', sa.Integer(), nullable=True),
    sa.Column('set_by_org_id', sa.Integer(), nullable=False),
    sa.Column('set_by', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
    sa.Column('reason', sqlmodel.sql.sqltypes.AutoString(length=500), nullable=False),
    sa.Column('effective_from', sa.DateTime(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['co_set_by_org_id'], ['organisation.id'], name=op.f('fk_billing_max_revenue_co_set_by_org_id_organisation')),
    sa.ForeignKeyConstraint(['operator_org_id'], ['organisation.id'], name=op.f('fk_billing_max_revenue_operator_org_id_organisation')),
    sa.ForeignKeyConstraint(['set_by_org_id'], ['organisation.id'], name=op.f('fk_billing_max_revenue_set_by_org_id_organisation')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_billing_max_revenue'))
    )

    with op.batch_alter_table('billing_max_revenue', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_billing_max_revenue_operator_org_id'), ['operator_org_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_billing_max_revenue_year'), ['year'], unique=False)

    op.create_table('billing_revenue_counter',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('operator_org_id', sa.Integer(), nullable=False),
    sa.Column('year', sa.Integer(), nullable=False),
    sa.Column('revenue_fen', sa.Integer(), nullable=False),
    sa.Column('ceiling_fen', sa.Integer(), nullable=True),
    sa.Column('warn_at_pct', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['operator_org_id'], ['organisation.id'], name=op.f('fk_billing_revenue_counter_operator_org_id_organisation')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_billing_revenue_counter')),
    sa.UniqueConstraint('operator_org_id', 'year', name='uq_billing_revenue_counter')
    )

    op.create_table('billing_revenue_warning',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('operator_org_id', sa.Integer(), nullable=False),
    sa.Column('year', sa.Integer(), nullable=False),
    sa.Column('threshold_pct', sa.Integer(), nullable=False),
    sa.Column('revenue_fen', sa.Integer(), nullable=False),
    sa.Column('ceiling_fen', sa.Integer(), nullable=False),
    sa.Column('at', sa.DateTime(), nullable=False),
    sa.Column('notified_at', sa.DateTime(), nullable=True),
    sa.ForeignKeyConstraint(['operator_org_id'], ['organisation.id'], name=op.f('fk_billing_revenue_warning_operator_org_id_organisation')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_billing_revenue_warning')),
    sa.UniqueConstraint('operator_org_id', 'year', 'threshold_pct', 'ceiling_fen', name='uq_billing_revenue_warning')
    )

    with op.batch_alter_table('billing_revenue_warning', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_billing_revenue_warning_operator_org_id'), ['operator_org_id'], unique=False)

    op.create_table('billing_settlement',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('number', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
    sa.Column('operator_org_id', sa.Integer(), nullable=False),
    sa.Column('year', sa.Integer(), nullable=False),
    sa.Column('revenue_fen', sa.Integer(), nullable=False),
    sa.Column('rule', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('inputs', sa.JSON(), nullable=False),
    sa.Column('created_by', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('filed_with_org_id', sa.Integer(), nullable=True),
    sa.Column('filed_at', sa.DateTime(), nullable=True),
    sa.ForeignKeyConstraint(['filed_with_org_id'], ['organisation.id'], name=op.f('fk_billing_settlement_filed_with_org_id_organisation')),
    sa.ForeignKeyConstraint(['operator_org_id'], ['organisation.id'], name=op.f('fk_billing_settlement_operator_org_id_organisation')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_billing_settlement')),
    sa.UniqueConstraint('number', name=op.f('uq_billing_settlement_number')),
    sa.UniqueConstraint('operator_org_id', 'year', name='uq_billing_settlement_year')
    )

    with op.batch_alter_table('billing_settlement', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_billing_settlement_operator_org_id'), ['operator_org_id'], unique=False)

    op.create_table('billing_price',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('operator_org_id', sa.Integer(), nullable=False),
    sa.Column('product_id', sa.Integer(), nullable=False),
    sa.Column('unit', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('price_fen', sa.Integer(), nullable=False),
    sa.Column('kind', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('basis', sa.Text(), nullable=False),
    sa.Column('set_by', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
    sa.Column('effective_from', sa.DateTime(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['operator_org_id'], ['organisation.id'], name=op.f('fk_billing_price_operator_org_id_organisation')),
    sa.ForeignKeyConstraint(['product_id'], ['gov_product.id'], name=op.f('fk_billing_price_product_id_gov_product')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_billing_price'))
    )

    with op.batch_alter_table('billing_price', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_billing_price_operator_org_id'), ['operator_org_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_billing_price_product_id'), ['product_id'], unique=False)

    op.create_table('billing_price_cap',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('product_id', sa.Integer(), nullable=False),
    sa.Column('unit', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('cap_fen', sa.Integer(), nullable=False),
    sa.Column('set_by_org_id', sa.Integer(), nullable=False),
    sa.Column('set_by', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
    sa.Column('reason', sqlmodel.sql.sqltypes.AutoString(length=500), nullable=False),
    sa.Column('effective_from', sa.DateTime(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['product_id'], ['gov_product.id'], name=op.f('fk_billing_price_cap_product_id_gov_product')),
    sa.ForeignKeyConstraint(['set_by_org_id'], ['organisation.id'], name=op.f('fk_billing_price_cap_set_by_org_id_organisation')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_billing_price_cap'))
    )

    with op.batch_alter_table('billing_price_cap', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_billing_price_cap_product_id'), ['product_id'], unique=False)

    op.create_table('billing_settlement_line',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('settlement_id', sa.Integer(), nullable=False),
    sa.Column('product_id', sa.Integer(), nullable=False),
    sa.Column('party', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('party_org_id', sa.Integer(), nullable=True),
    sa.Column('amount_fen', sa.Integer(), nullable=False),
    sa.Column('non_tax', sa.Boolean(), nullable=False),
    sa.Column('basis', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['party_org_id'], ['organisation.id'], name=op.f('fk_billing_settlement_line_party_org_id_organisation')),
    sa.ForeignKeyConstraint(['product_id'], ['gov_product.id'], name=op.f('fk_billing_settlement_line_product_id_gov_product')),
    sa.ForeignKeyConstraint(['settlement_id'], ['billing_settlement.id'], name=op.f('fk_billing_settlement_line_settlement_id_billing_settlement')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_billing_settlement_line'))
    )

    with op.batch_alter_table('billing_settlement_line', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_billing_settlement_line_settlement_id'), ['settlement_id'], unique=False)

    op.create_table('billing_price_filing',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('price_id', sa.Integer(), nullable=False),
    sa.Column('number', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
    sa.Column('filed_with_org_id', sa.Integer(), nullable=False),
    sa.Column('filed_by', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
    sa.Column('filed_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['filed_with_org_id'], ['organisation.id'], name=op.f('fk_billing_price_filing_filed_with_org_id_organisation')),
    sa.ForeignKeyConstraint(['price_id'], ['billing_price.id'], name=op.f('fk_billing_price_filing_price_id_billing_price')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_billing_price_filing')),
    sa.UniqueConstraint('number', name=op.f('uq_billing_price_filing_number')),
    sa.UniqueConstraint('price_id', name=op.f('uq_billing_price_filing_price_id'))
    )

    with op.batch_alter_table('billing_price_filing', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_billing_price_filing_filed_with_org_id'), ['filed_with_org_id'], unique=False)

    with op.batch_alter_table('billing_usage', schema=None) as batch_op:
        batch_op.add_column(sa.Column('operator_org_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('unit', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False, server_default=''))
        batch_op.add_column(sa.Column('agreed_price_fen', sa.Integer(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('price_source', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False, server_default=''))
        batch_op.create_index(batch_op.f('ix_billing_usage_operator_org_id'), ['operator_org_id'], unique=False)
        batch_op.create_foreign_key(batch_op.f('fk_billing_usage_operator_org_id_organisation'), 'organisation', ['operator_org_id'], ['id'])

    # Usage metered before this revision: its operator, billing unit and rule (the agreement's price).
    op.execute("UPDATE billing_usage SET operator_org_id = (SELECT operator_org_id FROM gov_product "
               "WHERE gov_product.id = billing_usage.product_id), agreed_price_fen = unit_price_fen, "
               "price_source = 'agreement', unit = CASE pricing_method WHEN 'per_call' THEN 'per_call' "
               "WHEN 'per_record' THEN 'per_subject' WHEN 'per_batch' THEN 'per_batch' "
               "WHEN 'monthly' THEN 'per_month' ELSE '' END WHERE operator_org_id IS NULL")


def downgrade() -> None:
    with op.batch_alter_table('billing_usage', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_billing_usage_operator_org_id_organisation'), type_='foreignkey')
        batch_op.drop_index(batch_op.f('ix_billing_usage_operator_org_id'))
        batch_op.drop_column('price_source')
        batch_op.drop_column('agreed_price_fen')
        batch_op.drop_column('unit')
        batch_op.drop_column('operator_org_id')

    with op.batch_alter_table('billing_price_filing', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_billing_price_filing_filed_with_org_id'))

    op.drop_table('billing_price_filing')

    with op.batch_alter_table('billing_settlement_line', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_billing_settlement_line_settlement_id'))

    op.drop_table('billing_settlement_line')

    with op.batch_alter_table('billing_price_cap', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_billing_price_cap_product_id'))

    op.drop_table('billing_price_cap')

    with op.batch_alter_table('billing_price', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_billing_price_product_id'))
        batch_op.drop_index(batch_op.f('ix_billing_price_operator_org_id'))

    op.drop_table('billing_price')

    with op.batch_alter_table('billing_settlement', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_billing_settlement_operator_org_id'))

    op.drop_table('billing_settlement')

    with op.batch_alter_table('billing_revenue_warning', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_billing_revenue_warning_operator_org_id'))

    op.drop_table('billing_revenue_warning')

    op.drop_table('billing_revenue_counter')

    with op.batch_alter_table('billing_max_revenue', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_billing_max_revenue_year'))
        batch_op.drop_index(batch_op.f('ix_billing_max_revenue_operator_org_id'))

    op.drop_table('billing_max_revenue')

    with op.batch_alter_table('billing_book_entry', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_billing_book_entry_year'))
        batch_op.drop_index(batch_op.f('ix_billing_book_entry_operator_org_id'))

    op.drop_table('billing_book_entry')
