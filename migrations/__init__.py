"""Alembic environment (env.py) and versions; `upgrade(url)` applies them all."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

HERE = Path(__file__).resolve().parent

# Our revision is recorded here; `alembic_version`, Alembic's default, is Optuna's (its
# study tables live in the same database with their own migrations).
VERSION_TABLE = "seqtrain_alembic_version"
LEGACY_VERSION_TABLE = "alembic_version"


def ours(name: str | None, type_: str, parent_names: object) -> bool:
    """Alembic's `include_name`: autogenerate compares our tables only (Optuna's share the
    database)."""
    from shared.infra.models import Base

    return type_ != "table" or name in Base.metadata.tables


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(HERE))
    config.set_main_option("path_separator", "os")
    config.attributes["database_url"] = url
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Our migrations to `revision`; at head, Optuna's tables too (created on a fresh
    database, or upgraded by Optuna's own migrations; shared.sweeps.storage)."""
    command.upgrade(alembic_config(url), revision)
    if revision == "head":
        from shared.sweeps.storage import upgrade_optuna

        upgrade_optuna(url)
