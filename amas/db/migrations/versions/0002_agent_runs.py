"""agent runs: case, actor, attempts; typed output and LLM usage per result; artifact description

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 02:02:12.759074
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0002'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Server defaults fill the new NOT NULL columns on rows that exist already.
    with op.batch_alter_table('agent_tasks', schema=None) as batch_op:
        batch_op.add_column(sa.Column('case_id', sa.String(length=64), nullable=True, comment='The investigation the task belongs to.'))
        batch_op.add_column(sa.Column('actor', sa.String(length=200), nullable=False, server_default='amas', comment='Who asked for the task.'))
        batch_op.add_column(sa.Column('attempts', sa.Integer(), nullable=False, server_default='0', comment='Times the task was started (retries count).'))
        batch_op.create_index(batch_op.f('ix_agent_tasks_case_id'), ['case_id'], unique=False)

    with op.batch_alter_table('artifacts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('description', sa.Text(), nullable=True))

    with op.batch_alter_table('task_results', schema=None) as batch_op:
        batch_op.add_column(sa.Column('output', sa.JSON().with_variant(postgresql.JSONB(), 'postgresql'), nullable=False, server_default='{}'))
        batch_op.add_column(sa.Column('llm', sa.JSON().with_variant(postgresql.JSONB(), 'postgresql'), nullable=False, server_default='{}', comment='Provider, tokens and cost of the model summary.'))


def downgrade() -> None:
    with op.batch_alter_table('task_results', schema=None) as batch_op:
        batch_op.drop_column('llm')
        batch_op.drop_column('output')

    with op.batch_alter_table('artifacts', schema=None) as batch_op:
        batch_op.drop_column('description')

    with op.batch_alter_table('agent_tasks', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_agent_tasks_case_id'))
        batch_op.drop_column('attempts')
        batch_op.drop_column('actor')
        batch_op.drop_column('case_id')
