"""retention runs (what apply did, per category) and GDPR requests (deadline, status, subject digest)

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 05:58:11.827338
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0003'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('gdpr_requests',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('ref', sa.String(length=40), nullable=False, comment="The request's public reference."),
    sa.Column('kind', sa.Enum('erase', 'export', name='requestkind', native_enum=False, create_constraint=True, length=32), nullable=False),
    sa.Column('subject_digest', sa.String(length=64), nullable=False),
    sa.Column('key_id', sa.String(length=16), nullable=False, comment='Which erasure key made the digest.'),
    sa.Column('status', sa.Enum('received', 'in_progress', 'completed', 'failed', name='requeststatus', native_enum=False, create_constraint=True, length=32), nullable=False),
    sa.Column('actor', sa.String(length=200), nullable=False),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('due_at', sa.DateTime(timezone=True), nullable=False, comment='Statutory deadline: received_at + 30 days.'),
    sa.Column('completed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('certificate_uri', sa.String(length=1024), nullable=True, comment='Certificate or export in storage.'),
    sa.Column('summary', sa.JSON().with_variant(postgresql.JSONB(), 'postgresql'), nullable=False, comment='Counts per store; never identifiers.'),
    sa.Column('error', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_gdpr_requests')),
    sa.UniqueConstraint('ref', name=op.f('uq_gdpr_requests_ref'))
    )
    with op.batch_alter_table('gdpr_requests', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_gdpr_requests_subject_digest'), ['subject_digest'], unique=False)

    op.create_table('retention_runs',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('actor', sa.String(length=200), nullable=False),
    sa.Column('dry_run', sa.Boolean(), nullable=False),
    sa.Column('status', sa.Enum('running', 'completed', 'failed', 'stopped', name='runstatus', native_enum=False, create_constraint=True, length=32), nullable=False),
    sa.Column('policies_sha256', sa.String(length=64), nullable=False, comment='Digest of the policy files the run applied.'),
    sa.Column('as_of', sa.DateTime(timezone=True), nullable=False, comment="The 'now' the plan measured ages against."),
    sa.Column('progress', sa.JSON().with_variant(postgresql.JSONB(), 'postgresql'), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_retention_runs'))
    )


def downgrade() -> None:
    op.drop_table('retention_runs')
    with op.batch_alter_table('gdpr_requests', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_gdpr_requests_subject_digest'))

    op.drop_table('gdpr_requests')
