"""Keyset pagination cursors: the sort key and id of a row, as an opaque URL-safe token.

A page is found from the row before it (`after`) or after it (`before`), never by OFFSET,
so page 2,000 costs what page 1 costs.
"""
import base64
import json


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
