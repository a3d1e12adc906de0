"""What the registries (datasets, pretrained models) share: their names' rules, the job
statuses that keep an entry in use, newest-first pages by id, and the `kind:<id>`
references a job spec names them by."""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import Select

from shared.infra.db import Database

# A name: printable, without ":" (a colon would read as dataset:<id> or model:<id>).
NAME_PATTERN = r"^[^\x00-\x1f\x7f:]+$"
NAME_MAX = 200
# Jobs in these statuses keep the datasets and base models they name from being deleted.
ACTIVE_STATUSES = ("queued", "running")
# A BIGINT id: what a reference, a cursor or a path may name.
MAX_ID = 2**63 - 1
_ID = re.compile(r"[0-9]{1,19}")


def newest_first(
    db: Database, query: Select[Any], id_column: Any, limit: int, before_id: int | None
) -> tuple[list[Any], int | None]:
    """One page of `query`'s rows, newest (highest id) first, below `before_id` when given;
    and the cursor of the next page (None on the last)."""
    query = query.order_by(id_column.desc()).limit(limit + 1)
    if before_id is not None:
        query = query.where(id_column < before_id)
    with db.session() as session:
        rows = list(session.scalars(query))
    return rows[:limit], rows[limit - 1].id if len(rows) > limit else None


def parse_reference_id(reference: str, kind: str) -> int | None:
    """The id of a `<kind>:<id>` reference: ASCII digits, 1..2^63-1 (the column's range);
    None when it is not one (the caller says so, naming its field)."""
    digits = reference.removeprefix(f"{kind}:")
    number = int(digits) if _ID.fullmatch(digits) else 0
    return number if 1 <= number <= MAX_ID else None


def invalid_reference(reference: str, kind: str) -> str:
    return (
        f"invalid {kind} reference {reference[:60]!r}: {kind}:<id> takes a whole number from 1 "
        f"to {MAX_ID}, in ASCII digits"
    )
