"""Realistic fake users for development and benchmarks."""
import random
from datetime import timedelta

from sqlalchemy import func, insert, select

from .db import utcnow
from .tables import users

FIRST = ("ada alan anna ben carla chen dana diego elena emil farah felix grace hana ivan "
         "jamal jana kai karin leo lena liam maria mateo mia nadia noah olga omar paula "
         "pedro quinn rosa sam sara sofia tariq tom uma victor wei yara yusuf zoe").split()
LAST = ("adams baker costa diaz evans fischer garcia haddad ito jensen kim kowalski lopez "
        "martin meyer nakamura novak okafor patel quint rossi santos schmidt silva tanaka "
        "usman varga wagner weber xu young zhang").split()
# Domains the app's own email check accepts (it refuses special-use names such as .test).
DOMAINS = ("example.com", "example.org", "example.net", "mail.example.com", "corp.example.org")


def role_for(rng: random.Random) -> str:
    roll = rng.random()
    return "Admin" if roll < 0.01 else "Manager" if roll < 0.10 else "Customer"


def fake_users(count: int, start: int, password_hash: str, seed: int = 42):
    rng = random.Random(seed + start)
    now = utcnow()
    for n in range(start, start + count):
        first, last = rng.choice(FIRST), rng.choice(LAST)
        created = now - timedelta(seconds=rng.randint(3600, 730 * 86400))
        seen = rng.random() < 0.8
        yield {
            "username": f"{first}.{last}{n}",
            "email": f"{first}.{last}{n}@{rng.choice(DOMAINS)}",
            "password_hash": password_hash,
            "role": role_for(rng),
            "active": rng.random() > 0.05,
            "version": 1,
            "created_at": created,
            "updated_at": created,
            "email_confirmed_at": created,
            "last_login_at": created + (now - created) * rng.random() if seen else None,
        }


async def add_demo_users(db, count: int, password_hash: str, batch: int = 5000, progress=None) -> int:
    async with db.read() as conn:
        start = ((await conn.execute(select(func.max(users.c.id)))).scalar() or 0) + 1
    rows = fake_users(count, start, password_hash)
    # SQLite: with RETURNING, SQLAlchemy sends a batch as a few INSERTs of 1,000 rows
    # ("insertmanyvalues") instead of one per row. Each statement opens a savepoint, where the
    # users_search FTS5 table writes out what it holds in memory: row by row made an index
    # segment per user, and the load took twice the CPU (docs/PERFORMANCE.md).
    statement = insert(users).returning(users.c.id) if db.is_sqlite else insert(users)
    done = 0
    while done < count:
        chunk = [row for _, row in zip(range(min(batch, count - done)), rows)]
        async with db.write() as conn:
            await conn.execute(statement, chunk)
        done += len(chunk)
        if progress:
            progress(done, count)
    if not db.is_sqlite:
        # Until autovacuum's next pass, PostgreSQL plans with the statistics of the table as
        # it was before the load: a deep page of the users table then scanned the whole table
        # (67 ms instead of 0.2 ms on 100,000 users, docs/PERFORMANCE.md).
        async with db.write() as conn:
            await conn.exec_driver_sql("ANALYZE users")
    return done
