"""Queries about import jobs and their rows (tables.imports, tables.import_rows)."""
from sqlalchemy import and_, bindparam, func, insert, or_, select, update

from ..core.db import utcnow
from ..core.tables import import_rows, imports
from . import rows as checks

PREVIEW, RUNNING, DONE, CANCELLED = "preview", "running", "done", "cancelled"
OUTCOMES = ("created", "skipped", "failed")
INSERT_CHUNK = 1000
PAGE_SIZE = 100


async def create(conn, actor_id: int, filename: str, sheet) -> int:
    """A job in preview, with the file's rows; mapped and checked by `remap` next."""
    job_id = (await conn.execute(insert(imports).values(
        created_by=actor_id, created_at=utcnow(), filename=filename[:255], state=PREVIEW,
        header=sheet.header, total=len(sheet.rows)).returning(imports.c.id))).scalar_one()
    for start in range(0, len(sheet.rows), INSERT_CHUNK):
        await conn.execute(insert(import_rows), [
            {"import_id": job_id, "line": line, "cells": cells}
            for line, cells in sheet.rows[start:start + INSERT_CHUNK]])
    return job_id


async def get(conn, job_id: int):
    return (await conn.execute(select(imports).where(imports.c.id == job_id))).first()


async def lock(conn, job_id: int):
    """The job, locked until the write transaction ends."""
    return (await conn.execute(select(imports).where(imports.c.id == job_id).with_for_update())).first()


async def recent(conn, user_id: int | None, limit: int = 10):
    """The newest jobs: everyone's (user_id None, for Admins) or one person's."""
    query = select(imports).order_by(imports.c.id.desc()).limit(limit)
    if user_id is not None:
        query = query.where(imports.c.created_by == user_id)
    return (await conn.execute(query)).all()


def values_of(row) -> dict[str, str]:
    return {field: getattr(row, field) for field in checks.FIELDS}


async def _all_rows(conn, job_id: int):
    return (await conn.execute(select(import_rows).where(import_rows.c.import_id == job_id)
                               .order_by(import_rows.c.line))).all()


async def _store_checks(conn, job_id: int, found: dict[int, dict], values: dict[int, dict] | None = None,
                        before=None) -> None:
    """Writes each row's problems (and mapped values), skipping rows where nothing changed."""
    changed = [
        {"b_line": line, "problems": problems or None, "bad": bool(problems), **(values[line] if values else {})}
        for line, problems in found.items()
        if values is not None or (before[line] or {}) != problems]
    if changed:
        columns = {"problems": bindparam("problems"), "bad": bindparam("bad")}
        if values is not None:
            columns.update({field: bindparam(field) for field in checks.FIELDS})
        await conn.execute(update(import_rows).where(import_rows.c.import_id == job_id,
                                                     import_rows.c.line == bindparam("b_line")).values(columns),
                           changed)


async def remap(conn, job, mapping: dict[str, int], importer_role: str) -> None:
    """Maps the file's columns to fields as `mapping` says and checks every row again."""
    stored = await _all_rows(conn, job.id)
    values = {row.line: checks.mapped(row.cells, mapping) for row in stored}
    found = await checks.problems_of(conn, list(values.items()), importer_role)
    await _store_checks(conn, job.id, found, values)
    await conn.execute(update(imports).where(imports.c.id == job.id).values(mapping=mapping))


async def recheck(conn, job, importer_role: str) -> None:
    """Every row checked again (an inline fix may end or make a duplicate elsewhere)."""
    stored = await _all_rows(conn, job.id)
    found = await checks.problems_of(conn, [(row.line, values_of(row)) for row in stored], importer_role)
    await _store_checks(conn, job.id, found, before={row.line: row.problems for row in stored})


async def fix(conn, job, line: int, values: dict[str, str], importer_role: str) -> None:
    await conn.execute(update(import_rows).where(import_rows.c.import_id == job.id, import_rows.c.line == line)
                       .values(**{field: values[field] for field in checks.FIELDS if field in values}))
    await recheck(conn, job, importer_role)


async def get_row(conn, job_id: int, line: int):
    return (await conn.execute(select(import_rows).where(import_rows.c.import_id == job_id,
                                                         import_rows.c.line == line))).first()


async def tally(conn, job_id: int) -> dict[str, int]:
    """How many rows there are, how many have problems, and how many ended each way."""
    outcome = import_rows.c.outcome
    row = (await conn.execute(select(
        func.count().label("rows"),
        func.count().filter(import_rows.c.bad).label("bad"),
        *(func.count().filter(outcome == name).label(name) for name in OUTCOMES),
    ).where(import_rows.c.import_id == job_id))).one()
    return dict(row._mapping)


def shown(only: str):
    """The rows a view of the job lists: all, those with problems, or those of one outcome."""
    if only == "problems":
        return import_rows.c.bad.is_(True)
    if only in OUTCOMES:
        return import_rows.c.outcome == only
    return None


async def page(conn, job_id: int, only: str = "", after: int = 0, limit: int = PAGE_SIZE, keep: int = 0):
    """`limit` rows after line `after` (and one more, to tell whether there is a next page).
    Line `keep` is shown whatever `only` says (a row just fixed stays where it was)."""
    query = (select(import_rows).where(import_rows.c.import_id == job_id, import_rows.c.line > after)
             .order_by(import_rows.c.line).limit(limit + 1))
    if (condition := shown(only)) is not None:
        query = query.where(or_(condition, import_rows.c.line == keep))
    return (await conn.execute(query)).all()


async def start(conn, job_id: int, skip_bad: bool) -> bool:
    """Preview to running: the rows with problems are skipped (when `skip_bad`; otherwise a job
    with any cannot start). False when the job was not in preview or has rows to fix."""
    job = await lock(conn, job_id)
    if job is None or job.state != PREVIEW:
        return False
    bad = (await tally(conn, job_id))["bad"]
    if bad and not skip_bad:
        return False
    if bad:
        await conn.execute(update(import_rows).where(import_rows.c.import_id == job_id, import_rows.c.bad)
                           .values(outcome="skipped", message="Skipped: it had problems at the preview."))
    await conn.execute(update(imports).where(imports.c.id == job_id).values(state=RUNNING, skipped=bad))
    return True


async def cancel(conn, job_id: int) -> bool:
    job = await lock(conn, job_id)
    if job is None or job.state != PREVIEW:
        return False
    await conn.execute(update(imports).where(imports.c.id == job_id).values(state=CANCELLED, finished_at=utcnow()))
    return True


# ---- the runner's queries ------------------------------------------------------------------

def claimable(now):
    return and_(imports.c.state == RUNNING,
                or_(imports.c.claimed_until.is_(None), imports.c.claimed_until <= now))


async def due(conn, now) -> list[int]:
    """Running jobs nobody holds (a runner that held one died, or none took it yet)."""
    return list((await conn.execute(select(imports.c.id).where(claimable(now)).order_by(imports.c.id))).scalars())


async def claim(conn, job_id: int, now, until) -> bool:
    """Holds the job until `until`, if it is running and nobody holds it."""
    result = await conn.execute(update(imports).where(imports.c.id == job_id, claimable(now))
                                .values(claimed_until=until).returning(imports.c.id))
    return result.first() is not None


async def extend(conn, job_id: int, held_until, until) -> bool:
    """Keeps holding the job, if this runner still holds it (its lease is still `held_until`)."""
    result = await conn.execute(update(imports).where(
        imports.c.id == job_id, imports.c.state == RUNNING, imports.c.claimed_until == held_until)
        .values(claimed_until=until).returning(imports.c.id))
    return result.first() is not None


async def release(conn, job_id: int, held_until) -> None:
    """Lets the job go (a runner stopping): the next runner need not wait for the lease."""
    await conn.execute(update(imports).where(imports.c.id == job_id, imports.c.claimed_until == held_until)
                       .values(claimed_until=None))


async def pending(conn, job_id: int, limit: int):
    return (await conn.execute(select(import_rows).where(
        import_rows.c.import_id == job_id, import_rows.c.outcome == "")
        .order_by(import_rows.c.line).limit(limit))).all()


async def record(conn, job_id: int, line: int, outcome: str, message: str = "", user_id: int | None = None):
    await conn.execute(update(import_rows).where(import_rows.c.import_id == job_id, import_rows.c.line == line)
                       .values(outcome=outcome, message=message[:300], user_id=user_id))


async def add_counts(conn, job_id: int, counts: dict[str, int]) -> None:
    await conn.execute(update(imports).where(imports.c.id == job_id).values(
        **{name: getattr(imports.c, name) + counts.get(name, 0) for name in OUTCOMES}))


async def finish(conn, job_id: int, state: str = DONE) -> None:
    await conn.execute(update(imports).where(imports.c.id == job_id).values(
        state=state, claimed_until=None, finished_at=utcnow()))
