"""money in 64 bits

Every amount in fen was a 32-bit INTEGER on PostgreSQL: at most 2,147,483,647 fen (21.47 million
yuan), which an operator's yearly revenue, its ceiling or a settlement can pass. They become BIGINT.
SQLite's INTEGER already holds 64 bits, so there nothing changes (the models' BIGINT maps to it).

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07 22:00:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0015'
down_revision = '0014'
branch_labels = None
depends_on = None

MONEY = [  # (table, column, nullable)
    ('gov_product', 'price_fen', False),
    ('product_batch', 'amount_fen', False),
    ('billing_usage', 'unit_price_fen', False),
    ('billing_usage', 'amount_fen', False),
    ('billing_usage', 'agreed_price_fen', False),
    ('billing_book_entry', 'amount_fen', False),
    ('billing_max_revenue', 'amount_fen', False),
    ('billing_revenue_counter', 'revenue_fen', False),
    ('billing_revenue_counter', 'ceiling_fen', True),
    ('billing_revenue_warning', 'revenue_fen', False),
    ('billing_revenue_warning', 'ceiling_fen', False),
    ('billing_settlement', 'revenue_fen', False),
    ('billing_price', 'price_fen', False),
    ('billing_price_cap', 'cap_fen', False),
    ('billing_settlement_line', 'amount_fen', False),
]


def _alter(to, frm) -> None:
    if op.get_bind().dialect.name != 'postgresql':
        return  # SQLite: INTEGER is 64 bits already
    for table, column, nullable in MONEY:
        op.alter_column(table, column, type_=to, existing_type=frm, existing_nullable=nullable)


def upgrade() -> None:
    _alter(sa.BigInteger(), sa.Integer())


def downgrade() -> None:
    _alter(sa.Integer(), sa.BigInteger())
