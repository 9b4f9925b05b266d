"""The schema: schema.sql, web/tables.py and the databases the app creates agree,
and the constraints the app relies on are really enforced by both databases."""
import warnings
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql import visitors

from web.accounts import queries as user_queries
from web.core.db import POOL_CACHE_KB, utcnow
from web.core.schema import in_metadata, made_on, render_schema_sql
from web.core.tables import EXTENSIONS, SQL_AFTER_TABLES, metadata, sessions, users

ROOT = Path(__file__).resolve().parent.parent


# ---- helpers ----------------------------------------------------------------------------

def _reflected_indexes(sync_conn, table: str) -> dict[str, str]:
    """{index name: its definition as text} for the indexes the database holds on `table`.

    SQLAlchemy's SQLite inspector skips expression indexes such as lower(username), so on
    SQLite the definitions come from sqlite_master instead (its implicit autoindexes have no
    sql and are left out). PostgreSQL reflects them, expressions included, with the method,
    operator classes and storage parameters of an index that has them (the trigram indexes).
    """
    if sync_conn.dialect.name == "sqlite":
        rows = sync_conn.exec_driver_sql(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = ? AND sql IS NOT NULL",
            (table,)).all()
        return {name: sql for name, sql in rows}
    found = {}
    for index in sa.inspect(sync_conn).get_indexes(table):
        parts = [c for c in index["column_names"] if c] + list(index.get("expressions") or [])
        options = index.get("dialect_options", {})
        extras = [f"USING {options['postgresql_using']}"] if "postgresql_using" in options else []
        extras += [f"{part} {ops}" for part, ops in options.get("postgresql_ops", {}).items()]
        extras += [f"WITH {key}={value}" for key, value in options.get("postgresql_with", {}).items()]
        found[index["name"]] = f"{'UNIQUE ' if index['unique'] else ''}({', '.join(parts)}) {' '.join(extras)}"
    return found


def _normalised(sql: str) -> str:
    return "".join(sql.lower().replace('"', "").replace("::text", "").split())


def _indexes_made_on(dialect_name: str, table: sa.Table) -> list[sa.Index]:
    return [index for index in table.indexes if made_on(index, dialect_name)]


async def _insert_user(db, username: str, email: str, role: str = "Customer") -> int:
    async with db.write() as conn:
        return await user_queries.create_user(conn, username, email, "not-a-real-hash", role)


# ---- schema.sql ---------------------------------------------------------------------------

def test_schema_sql_matches_the_metadata_in_tables_py():
    on_disk = (ROOT / "schema.sql").read_text(encoding="utf-8")
    assert on_disk == render_schema_sql(), "schema.sql is stale: run `python run.py schema > schema.sql`"


# ---- the created database matches the metadata ------------------------------------------

def _is_expression_index(index: sa.Index) -> bool:
    return any(not isinstance(element, sa.Column) for element in index.expressions)


def _without_expression_index_rewrites(diffs: list) -> list:
    """The diffs, less the remove_index + add_index pairs alembic reports for an expression
    index that is in fact present: PostgreSQL reflects the expression as it normalised it
    (COALESCE(last_login_at, '1970-...'::timestamp without time zone), lower(email::text))
    and alembic compares that text with the metadata's rendering, so any expression it
    rewrites shows up as "drop it and create it again". Such indexes are checked by name
    and definition in the tests below instead."""
    expression_indexes = {index.name for table in metadata.tables.values()
                          for index in table.indexes if _is_expression_index(index)}
    added = {d[1].name for d in diffs if isinstance(d, tuple) and d[0] == "add_index"}
    removed = {d[1].name for d in diffs if isinstance(d, tuple) and d[0] == "remove_index"}
    spurious = added & removed & expression_indexes
    return [d for d in diffs
            if not (isinstance(d, tuple) and d[0] in {"add_index", "remove_index"} and d[1].name in spurious)]


async def schema_diffs(db) -> list:
    """What alembic's autogenerate finds different between the database and web/tables.py."""
    def compare(sync_conn):
        # compare_type: column types. compare_server_default only on PostgreSQL: on SQLite
        # alembic reports a spurious 'modify_default' for every server_default="" column
        # (it compares the reflected text "''" with the metadata's "" and calls them
        # different), although the DDL and schema.sql say DEFAULT '' on both sides.
        context = MigrationContext.configure(sync_conn, opts={
            "compare_type": True,
            "compare_server_default": not db.is_sqlite,
            "include_name": in_metadata,
        })
        with warnings.catch_warnings():
            # SQLite cannot reflect expression indexes (lower(username), coalesce(...)), so
            # alembic warns and skips them instead of reporting a diff; they are checked
            # by name and definition in the tests below.
            warnings.filterwarnings("ignore", message=r".*expression-based index.*")
            return compare_metadata(context, metadata)

    async with db.read() as conn:
        return _without_expression_index_rewrites(await conn.run_sync(compare))


async def reflected_indexes(db) -> dict[str, dict[str, str]]:
    """{table: {index name: normalised definition}} for every table of the metadata."""
    async with db.read() as conn:
        return {table.name: {name: _normalised(sql) for name, sql in
                             (await conn.run_sync(_reflected_indexes, table.name)).items()}
                for table in metadata.sorted_tables}


async def outside_metadata(db) -> set[str]:
    """What the database holds of tables.py's SQL outside the metadata: on SQLite the SQL of
    its virtual tables and triggers (normalised), on PostgreSQL the extensions' names."""
    async with db.read() as conn:
        if db.is_sqlite:
            rows = await conn.exec_driver_sql(
                "SELECT sql FROM sqlite_master WHERE type = 'trigger' OR sql LIKE 'CREATE VIRTUAL TABLE%'")
            return {_normalised(sql) for sql, in rows}
        return set((await conn.exec_driver_sql("SELECT extname FROM pg_extension")).scalars())


async def test_created_database_matches_metadata(db):
    diffs = await schema_diffs(db)
    assert diffs == [], f"the database the app created differs from web/tables.py: {diffs}"


async def test_created_database_has_every_index_of_the_metadata(db):
    reflected = await reflected_indexes(db)
    for table in metadata.sorted_tables:
        expected = {index.name for index in _indexes_made_on(db.engine.dialect.name, table)}
        assert set(reflected[table.name]) == expected, f"indexes of {table.name}"


async def test_created_database_has_the_sql_of_tables_py_outside_the_metadata(db):
    """SQLite: the users_search table and its triggers, exactly; PostgreSQL: the extensions."""
    found = await outside_metadata(db)
    if db.is_sqlite:
        assert found == {_normalised(sql) for sql in SQL_AFTER_TABLES["sqlite"]}
    else:
        assert set(EXTENSIONS["postgresql"]) <= found


async def test_expression_indexes_have_the_functions_columns_and_uniqueness_of_the_metadata(db):
    reflected = await reflected_indexes(db)
    checked = 0
    for table in metadata.sorted_tables:
        for index in (i for i in _indexes_made_on(db.engine.dialect.name, table) if _is_expression_index(i)):
            definition = reflected[table.name][index.name]
            assert ("unique" in definition) == bool(index.unique), f"{index.name}: {definition}"
            for element in index.expressions:
                if isinstance(element, sa.FunctionElement):
                    assert f"{element.name.lower()}(" in definition, f"{index.name}: {definition}"
                for column in visitors.iterate(element):
                    if isinstance(column, sa.Column):
                        assert column.name in definition, f"{index.name}: {definition}"
            checked += 1
    assert checked >= 2, "the lower(username) and lower(email) indexes were not checked"


async def test_trigram_indexes_have_the_method_operator_class_and_storage_of_the_metadata(db):
    if db.is_sqlite:
        pytest.skip("SQLite has no trigram indexes: it searches an FTS5 table")
    reflected = await reflected_indexes(db)
    checked = 0
    for table in metadata.sorted_tables:
        for index in _indexes_made_on("postgresql", table):
            options = index.dialect_options["postgresql"]
            if not options["using"]:
                continue
            definition = reflected[table.name][index.name]
            assert f"using{options['using']}" in definition, definition
            assert all(ops in definition for ops in options["ops"].values()), definition
            assert all(f"with{key}={value}" in definition for key, value in options["with"].items()), definition
            checked += 1
    assert checked == 2, "the trigram indexes of username and email were not checked"


async def test_username_and_email_indexes_are_unique_on_lowercased_values(db):
    async with db.read() as conn:
        indexes = await conn.run_sync(_reflected_indexes, "users")
    for name, column in (("uq_users_username_lower", "username"), ("uq_users_email_lower", "email")):
        definition = _normalised(indexes[name])
        assert "unique" in definition, f"{name} is not unique: {indexes[name]}"
        assert f"lower({column})" in definition, f"{name} is not on lower({column}): {indexes[name]}"


# ---- constraints enforced by both databases ---------------------------------------------

@pytest.mark.parametrize("first, second", [
    (("Alice", "alice@example.com"), ("aLICE", "someone.else@example.com")),
    (("alice", "Alice@Example.com"), ("bob", "alice@EXAMPLE.COM")),
], ids=["username", "email"])
async def test_names_and_emails_differing_only_in_case_are_refused_by_the_database(db, first, second):
    await _insert_user(db, *first)
    with pytest.raises(IntegrityError):
        await _insert_user(db, *second)
    async with db.read() as conn:
        assert await user_queries.count_users(conn) == 1


async def test_session_for_a_nonexistent_user_is_refused(db):
    now = utcnow()
    with pytest.raises(IntegrityError):
        async with db.write() as conn:
            await conn.execute(sa.insert(sessions).values(
                id="0" * 64, user_id=987_654_321, remember=False, created_at=now,
                last_seen_at=now, expires_at=now + timedelta(hours=1)))
    async with db.read() as conn:
        assert (await conn.execute(sa.select(sa.func.count()).select_from(sessions))).scalar_one() == 0


async def test_user_with_an_unknown_role_is_refused(db):
    with pytest.raises(IntegrityError):
        await _insert_user(db, "mallory", "mallory@example.com", role="Superuser")


async def test_deleting_a_user_deletes_their_sessions(db):
    user_id = await _insert_user(db, "carol", "carol@example.com")
    now = utcnow()
    async with db.write() as conn:
        await conn.execute(sa.insert(sessions).values(
            id="1" * 64, user_id=user_id, remember=False, created_at=now,
            last_seen_at=now, expires_at=now + timedelta(hours=1)))
    async with db.write() as conn:
        await conn.execute(sa.delete(users).where(users.c.id == user_id))
    async with db.read() as conn:
        assert (await conn.execute(sa.select(sa.func.count()).select_from(sessions))).scalar_one() == 0


# ---- SQLite connection settings ---------------------------------------------------------

async def test_sqlite_connections_use_wal_foreign_keys_busy_timeout_and_full_sync(db):
    if not db.is_sqlite:
        pytest.skip("SQLite PRAGMAs do not apply to PostgreSQL")
    async with db.read() as conn:
        async def pragma(name):
            return (await conn.exec_driver_sql(f"PRAGMA {name}")).scalar()
        assert str(await pragma("journal_mode")).lower() == "wal"
        assert await pragma("foreign_keys") == 1
        assert await pragma("busy_timeout") == 5000
        assert await pragma("synchronous") == 2  # FULL


async def test_pooled_sqlite_connections_keep_a_small_page_cache(db):
    if not db.is_sqlite:
        pytest.skip("SQLite PRAGMAs do not apply to PostgreSQL")
    async with db.read() as conn:
        assert (await conn.exec_driver_sql("PRAGMA cache_size")).scalar() == -POOL_CACHE_KB  # KiB
