"""scheduling: job priority, rank key, nodes, preemption; user quotas and usage

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07 12:40:00

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa

import shared.infra.models


# revision identifiers, used by Alembic.
revision: str = '0013'
down_revision: Union[str, Sequence[str], None] = '0012'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

# The default priority and aging (shared.settings) the rank keys of waiting jobs start from.
DEFAULT_PRIORITY, DEFAULT_AGING = 50, 600.0


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('priority', sa.Integer(), server_default='50', nullable=False))
        batch_op.add_column(sa.Column('nodes', sa.Integer(), server_default='1', nullable=False))
        batch_op.add_column(sa.Column('rank_key', sa.Float(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('preemptible', sa.Boolean(), server_default=sa.true(), nullable=False))
        batch_op.add_column(sa.Column('preemptions', sa.Integer(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('preempt_by', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True))
        batch_op.add_column(sa.Column('claimed_at', shared.infra.models.UTCDateTime(timezone=True), nullable=True))
        batch_op.create_index('ix_jobs_claim', ['status', 'queue', 'owner_id', 'rank_key', 'id'], unique=False)
        batch_op.create_index('ix_jobs_priority_rank', ['status', 'queue', 'priority', 'rank_key'], unique=False)
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.add_column(sa.Column('max_priority', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('max_running', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('max_devices', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('max_queued', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('usage', sa.Float(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('usage_at', shared.infra.models.UTCDateTime(timezone=True), nullable=True))
    _backfill()


def _backfill() -> None:
    """Jobs still waiting or running get their nodes and a rank key in submit order."""
    bind = op.get_bind()
    jobs = sa.table(
        'jobs',
        sa.column('id', sa.BigInteger()),
        sa.column('status', sa.String()),
        sa.column('spec', sa.JSON()),
        sa.column('created_at', shared.infra.models.UTCDateTime(timezone=True)),
        sa.column('nodes', sa.Integer()),
        sa.column('rank_key', sa.Float()),
    )
    rows = bind.execute(
        sa.select(jobs.c.id, jobs.c.spec, jobs.c.created_at).where(
            jobs.c.status.in_(['queued', 'running', 'paused'])
        )
    ).all()
    for row in rows:
        spec = row.spec if isinstance(row.spec, dict) else {}
        nodes = int((spec.get('resources') or {}).get('nodes') or 1)
        key = row.created_at.timestamp() - DEFAULT_PRIORITY * DEFAULT_AGING
        bind.execute(jobs.update().where(jobs.c.id == row.id).values(nodes=nodes, rank_key=key))


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table('users', schema=None) as batch_op:
        for column in ('usage_at', 'usage', 'max_queued', 'max_devices', 'max_running', 'max_priority'):
            batch_op.drop_column(column)
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_index('ix_jobs_priority_rank')
        batch_op.drop_index('ix_jobs_claim')
        for column in ('claimed_at', 'preempt_by', 'preemptions', 'preemptible', 'rank_key', 'nodes', 'priority'):
            batch_op.drop_column(column)
