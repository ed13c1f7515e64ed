"""The first schema: devices, software, deployments, their packages and targets.

Revision ID: 0001
Revises:
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "devices",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("agent_id", sa.String(128), nullable=False, unique=True),
        sa.Column("hostname", sa.String(255), nullable=False),
        sa.Column("platform", sa.String(16), nullable=False),
        sa.Column("os_version", sa.String(255), nullable=False, server_default=""),
        sa.Column("agent_version", sa.String(255), nullable=False, server_default=""),
        sa.Column("ip", sa.String(255)),
        sa.Column("mac", sa.String(255)),
        sa.Column("online", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("last_seen", _TS),
    )
    op.create_table(
        "software",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("version", sa.String(255), nullable=False, server_default=""),
        sa.Column("file_name", sa.String(255), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False, index=True),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("installer_type", sa.String(16), nullable=False),
        sa.Column("install_args", sa.Text, nullable=False, server_default=""),
        sa.Column("timeout_s", sa.Integer, nullable=False, server_default="3600"),
        sa.Column("added_at", _TS, nullable=False),
    )
    op.create_table(
        "deployments",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("deployment_name", sa.String(255), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("started_at", _TS),
        sa.Column("completed_at", _TS),
    )
    op.create_table(
        "deployment_software",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "deployment_id",
            sa.Integer,
            sa.ForeignKey("deployments.id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
        sa.Column(
            "software_id", sa.Integer, sa.ForeignKey("software.id"), nullable=False
        ),
        sa.Column("position", sa.Integer, nullable=False),
    )
    op.create_table(
        "deployment_targets",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "deployment_id",
            sa.Integer,
            sa.ForeignKey("deployments.id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
        sa.Column(
            "device_id",
            sa.Integer,
            sa.ForeignKey("devices.id"),
            nullable=False,
            index=True,
        ),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("progress_percent", sa.Float, nullable=False, server_default="0"),
        sa.Column("message", sa.Text),
        sa.Column("exit_code", sa.BigInteger),
        sa.Column("reboot_required", sa.Boolean),
        sa.Column("started_at", _TS),
        sa.Column("completed_at", _TS),
        sa.Column("log_tail", sa.Text),
        sa.Column("attempt", sa.Integer, nullable=False, server_default="1"),
        sa.UniqueConstraint("deployment_id", "device_id"),
    )


def downgrade() -> None:
    op.drop_table("deployment_targets")
    op.drop_table("deployment_software")
    op.drop_table("deployments")
    op.drop_table("software")
    op.drop_table("devices")
