"""schema.sql, rendered from the metadata in tables.py for each database the app runs on."""
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.schema import CreateIndex, CreateTable

from .tables import EXTENSIONS, SQL_AFTER_TABLES, metadata, users_search

HEADER = """\
-- Gatehouse schema. Generated from web/tables.py by `python run.py schema`; do not edit.
-- A test fails when this file, web/tables.py or a database the app created disagree.
"""


def _sql(ddl, dialect) -> str:
    return "\n".join(line.rstrip() for line in str(ddl.compile(dialect=dialect)).strip().splitlines())


def made_on(index, dialect_name: str) -> bool:
    """Whether `index` exists on that database (an index declared with .ddl_if(dialect=...)
    exists on that one only)."""
    only = index._ddl_if  # what Index.ddl_if() set; SQLAlchemy has no public reader
    return only is None or only.dialect in (None, dialect_name)


def in_metadata(name, type_, _parent_names) -> bool:
    """Alembic's include_name: whether autogenerate compares this object of the database with
    the metadata; not users_search nor the tables FTS5 keeps for it (SQL_AFTER_TABLES makes them)."""
    return not (type_ == "table" and (name == users_search.name or name.startswith(users_search.name + "_")))


def render_ddl(dialect) -> str:
    statements = [f"CREATE EXTENSION IF NOT EXISTS {name}" for name in EXTENSIONS.get(dialect.name, ())]
    for table in metadata.sorted_tables:
        statements.append(_sql(CreateTable(table), dialect))
        for index in sorted(table.indexes, key=lambda i: i.name):
            if made_on(index, dialect.name):
                statements.append(_sql(CreateIndex(index), dialect))
    statements.extend(SQL_AFTER_TABLES.get(dialect.name, ()))
    return ";\n\n".join(statements) + ";\n"


def render_schema_sql() -> str:
    parts = [HEADER]
    for title, dialect in (("SQLite", sqlite.dialect()), ("PostgreSQL", postgresql.dialect())):
        parts.append(f"\n-- ===== {title} =====\n\n{render_ddl(dialect)}")
    return "".join(parts)
