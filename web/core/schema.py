"""schema.sql, rendered from the metadata in tables.py for each database the app runs on."""
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.schema import CreateIndex, CreateTable

from .tables import metadata

HEADER = """\
-- Gatehouse schema. Generated from web/tables.py by `python run.py schema`; do not edit.
-- A test fails when this file, web/tables.py or a database the app created disagree.
"""


def _sql(ddl, dialect) -> str:
    return "\n".join(line.rstrip() for line in str(ddl.compile(dialect=dialect)).strip().splitlines())


def render_ddl(dialect) -> str:
    statements = []
    for table in metadata.sorted_tables:
        statements.append(_sql(CreateTable(table), dialect))
        for index in sorted(table.indexes, key=lambda i: i.name):
            statements.append(_sql(CreateIndex(index), dialect))
    return ";\n\n".join(statements) + ";\n"


def render_schema_sql() -> str:
    parts = [HEADER]
    for title, dialect in (("SQLite", sqlite.dialect()), ("PostgreSQL", postgresql.dialect())):
        parts.append(f"\n-- ===== {title} =====\n\n{render_ddl(dialect)}")
    return "".join(parts)
