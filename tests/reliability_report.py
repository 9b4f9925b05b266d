#!/usr/bin/env python3
"""Renders docs/RELIABILITY.md from the figures the reliability tests recorded.

    RELIABILITY_SECONDS=20 RELIABILITY_REPORT=/tmp/reliability.jsonl \\
        .venv/bin/python -m pytest -m reliability
    .venv/bin/python tests/reliability_report.py /tmp/reliability.jsonl > docs/RELIABILITY.md

Each test appends one JSON line per run and database; the newest line of each wins. Nothing
in the tables below is typed by hand.
"""
import json
import sys
from pathlib import Path

TEMPLATE = Path(__file__).with_name("reliability_report.md")


def latest(lines) -> dict:
    found = {}
    for line in lines:
        if line.strip():
            entry = json.loads(line)
            found[(entry["test"], entry["database"])] = entry
    return found


def table(entries: list[dict], columns: list[tuple[str, str]]) -> str:
    if not entries:
        return "_(not run)_"
    head = "| database | " + " | ".join(title for _, title in columns) + " |"
    rule = "|---|" + "---|" * len(columns)
    rows = []
    for entry in entries:
        cells = []
        for key, _ in columns:
            value = entry.get(key, "")
            if isinstance(value, dict):
                value = ", ".join(f"{k}: {v:,}" for k, v in value.items())
            elif isinstance(value, bool):
                value = "yes" if value else "no"
            elif isinstance(value, int):
                value = f"{value:,}"
            cells.append(str(value))
        rows.append(f"| {entry['database']} | " + " | ".join(cells) + " |")
    return "\n".join([head, rule, *rows])


TABLES = {
    "concurrency": [("clients", "clients"), ("sessions", "logins shared"), ("rows", "rows"),
                    ("seconds", "seconds"), ("requests", "requests"), ("requests_per_second", "req/s"),
                    ("accepted", "saves accepted (2xx)"), ("refused_409", "refused (409)"),
                    ("server_errors", "5xx / 'database is locked'")],
    "crash": [("kills", "SIGKILLs survived"), ("clients", "clients"), ("seconds_per_round", "s per round"),
              ("requests", "requests"), ("accepted", "saves acknowledged"),
              ("acknowledged_checked", "acknowledged found after restart"),
              ("events_in_database", "update events in the database"),
              ("interrupted", "requests cut by the kills"), ("server_errors", "5xx / 'database is locked'"),
              ("integrity_check", "integrity_check")],
    "graceful": [("clients", "clients"), ("requests", "requests"), ("accepted", "saves acknowledged"),
                 ("acknowledged_checked", "found after restart"), ("in_flight_at_sigterm", "in flight at SIGTERM"),
                 ("in_flight_answered", "of which answered"), ("stop_seconds", "seconds to stop"),
                 ("server_errors", "5xx / 'database is locked'"), ("exit_code", "exit code"),
                 ("wal_left", "WAL left behind")],
    "backup": [("backups", "backups taken under load"), ("clients", "writing clients"), ("requests", "requests"),
               ("accepted", "saves accepted meanwhile"), ("server_errors", "5xx / 'database is locked'"),
               ("integrity_check", "copies' integrity_check"),
               ("restored", "restored and served")],
    "hostile_input": [("endpoints", "endpoints"), ("roles", "roles"), ("examples_per_endpoint", "examples each"),
                      ("inputs", "inputs tried"), ("statuses", "answers by status"), ("server_errors", "5xx")],
}


def render(entries: dict) -> str:
    text = TEMPLATE.read_text(encoding="utf-8")
    dates = sorted(e["at"] for e in entries.values())
    text = text.replace("{{ run }}", f"{dates[0]} to {dates[-1]} UTC" if dates else "never")
    for test, columns in TABLES.items():
        rows = [entries[key] for key in sorted(entries) if key[0] == test]
        text = text.replace("{{ " + test + " }}", table(rows, columns))
    return text


def main(argv) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    sys.stdout.write(render(latest(Path(argv[1]).read_text(encoding="utf-8").splitlines())))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
