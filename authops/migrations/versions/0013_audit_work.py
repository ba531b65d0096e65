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
    pass


def downgrade() -> None:
    pass
