"""Backups of a SQLite database while the app serves writes, and restoring one.

`backup` uses SQLite's online backup API in one step: it reads the database inside a
single read transaction, so the copy is the database as of one commit (in WAL mode writers
carry on meanwhile). The copy is checked with PRAGMA integrity_check, switched to a
self-contained rollback journal, fsynced and renamed into place: a backup file either is
complete or does not exist.

`restore` replaces the database with a backup the same way (temporary file, fsync,
rename), after removing the old database's -wal and -shm files, which belong to it and
would otherwise be replayed onto the restored copy. Stop the server first: `restore`
refuses when another process has the database open (seen in /proc on Linux).

PostgreSQL has its own tools: pg_dump -Fc and pg_restore.
"""
import os
import sqlite3
from pathlib import Path

from sqlalchemy.engine import make_url

POSTGRES_HINT = ("backup and restore handle SQLite only; for PostgreSQL use pg_dump -Fc "
                 "(backup) and pg_restore --clean (restore), see docs/RELIABILITY.md")


class BackupError(RuntimeError):
    """Why a backup or a restore could not be made; nothing was changed."""


def sqlite_file(database_url: str) -> Path:
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite":
        raise BackupError(POSTGRES_HINT)
    if not url.database or url.database == ":memory:":
        raise BackupError("the database is not a file")
    return Path(url.database).resolve()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _check(conn: sqlite3.Connection, what: str) -> dict:
    try:
        return _counts(conn, what)
    except sqlite3.DatabaseError as error:  # "file is not a database", "malformed", ...
        raise BackupError(f"{what} is not a usable SQLite database: {error}") from None


def _counts(conn: sqlite3.Connection, what: str) -> dict:
    problems = [row[0] for row in conn.execute("PRAGMA integrity_check")]
    if problems != ["ok"]:
        raise BackupError(f"{what} failed its integrity check: {'; '.join(problems[:5])}")
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if not {"users", "audit_events"} <= tables:
        raise BackupError(f"{what} is not a Gatehouse database (no users or audit_events table)")
    return {table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            for table in ("users", "audit_events")}


def _temporary(next_to: Path) -> Path:
    return next_to.with_name(f".{next_to.name}.{os.getpid()}.tmp")


def backup(database: Path, destination: Path) -> dict:
    """Copies the live database to `destination`; returns the copy's row counts."""
    if not database.exists():
        raise BackupError(f"there is no database at {database}")
    destination = destination.resolve()
    if destination == database:
        raise BackupError("the backup must go to another file than the database")
    temporary = _temporary(destination)
    temporary.unlink(missing_ok=True)
    source = sqlite3.connect(database, timeout=30)
    try:
        copy = sqlite3.connect(temporary)
        try:
            source.backup(copy)  # pages=-1: the whole database in one read transaction
            copy.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
            counts = _check(copy, "the copy")
        finally:
            copy.close()
        _fsync(temporary)
        os.replace(temporary, destination)
        _fsync(destination.parent)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    finally:
        source.close()
    return counts


def processes_using(path: Path) -> list[int]:
    """Other processes holding `path` (or its -wal) open, from /proc; [] where there is none."""
    targets = {str(path), f"{path}-wal"}
    found = []
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        pid = int(fd_dir.parent.name)
        if pid == os.getpid():
            continue
        try:
            if any(os.readlink(fd) in targets for fd in fd_dir.iterdir()):
                found.append(pid)
        except OSError:
            continue  # gone, or not ours to look at
    return found


def restore(source: Path, database: Path) -> dict:
    """Replaces `database` with the backup `source`; returns the restored row counts."""
    source = source.resolve()
    if not source.exists():
        raise BackupError(f"there is no backup at {source}")
    if source == database:
        raise BackupError("the backup is the database itself")
    if users := processes_using(database):
        raise BackupError(f"the database is in use by process(es) {', '.join(map(str, users))}: "
                          "stop the server first")
    checked = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    try:
        _check(checked, "the backup")
    finally:
        checked.close()
    temporary = _temporary(database)
    temporary.unlink(missing_ok=True)
    try:
        database.parent.mkdir(parents=True, exist_ok=True)
        reader, writer = sqlite3.connect(f"file:{source}?mode=ro", uri=True), sqlite3.connect(temporary)
        try:
            reader.backup(writer)
            writer.execute("PRAGMA journal_mode=DELETE")
            counts = _check(writer, "the restored copy")
        finally:
            reader.close()
            writer.close()
        _fsync(temporary)
        if database.exists():
            # Keep the database being replaced, in case it was the wrong backup.
            # Its -wal goes with it: the old -wal/-shm describe the old file, and replayed onto
            # the restored one they would corrupt it.
            previous = database.with_name(database.name + ".before-restore")
            for suffix in ("", "-wal", "-shm", "-journal"):
                Path(f"{previous}{suffix}").unlink(missing_ok=True)
            os.link(database, previous)
            if Path(f"{database}-wal").exists():
                os.replace(f"{database}-wal", f"{previous}-wal")
        for suffix in ("-wal", "-shm", "-journal"):
            Path(f"{database}{suffix}").unlink(missing_ok=True)
        os.replace(temporary, database)
        _fsync(database.parent)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return counts
