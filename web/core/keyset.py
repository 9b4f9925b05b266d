"""Keyset pagination cursors: the sort key and id of a row, as an opaque URL-safe token.

A page is found from the row before it (`after`) or after it (`before`), never by OFFSET,
so page 2,000 costs what page 1 costs. Also the reading of a paged list's link: its
position, and the filters and sort it names from a fixed set.
"""
import base64
import json
from dataclasses import dataclass


def encode_cursor(value, row_id: int) -> str:
    raw = json.dumps([value, row_id], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(token: str, parse=str):
    """(key value, id), or None when the token is not one of ours."""
    try:
        value, row_id = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        value, row_id = parse(value), int(row_id)
    except (ValueError, TypeError):
        return None
    if not 0 < row_id < 2**63 or getattr(value, "tzinfo", None) is not None:
        return None  # not an id of ours, or a time with a zone where we store UTC without one
    return value, row_id


def position(args, longest: int) -> dict:
    """Where in a keyset-paged list a link points: the cursor it pages from (`after`, or
    `before` going back; tokens longer than `longest` are none of ours) and its page number."""
    after = args.get("after", "")[:longest]
    return {"after": after, "before": "" if after else args.get("before", "")[:longest],
            "page": page_number(args)}


def one_of(args, name: str, allowed, default: str = "") -> str:
    """The link's `name` when it is one of `allowed`, else `default`: a value the list does not
    know is none."""
    value = args.get(name, default)
    return value if value in allowed else default


def page_number(args) -> int:
    """The page number a link carries: shown to people, never used to find rows."""
    try:
        return max(1, int(args.get("page", "1")))
    except ValueError:
        return 1


@dataclass
class Page:
    rows: list
    number: int
    prev_url: str | None
    next_url: str | None
    first_url: str | None
    total: int | None = None
    at_least: bool = False  # `total` is a lower bound: more rows than that match


def page_of(fetched: list, size: int, view, backwards: bool, had_cursor: bool, cursor_of) -> Page:
    """The page from rows read in the direction of travel, one more than `size` to learn whether
    more follow; its links carry the cursors of its first and last rows (`cursor_of(row)`)."""
    more = len(fetched) > size
    rows = fetched[:size]
    if backwards:
        rows.reverse()
        has_prev, has_next = more, True
    else:
        has_prev, has_next = had_cursor, more
    number = view.page if has_prev else 1
    return Page(
        rows=rows, number=number,
        prev_url=view.url(before=cursor_of(rows[0]), after="", page=number - 1) if has_prev and rows else None,
        next_url=view.url(after=cursor_of(rows[-1]), before="", page=number + 1) if has_next and rows else None,
        first_url=view.url(after="", before="", page=1) if has_prev else None,
    )
