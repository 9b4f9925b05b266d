"""The benchmark's ceiling (only with GATEHOUSE_BENCH=1): a fixed 5 KB page, no database, no auth.

What a request costs the framework and the server alone on this machine; `python bench/run.py`
reports every other scenario as a share of it.
"""
from quart import Blueprint

from .access import public

bp = Blueprint("bench", __name__)

_ROW = "<tr><td>ada.adams{n}</td><td>ada.adams{n}@example.com</td><td>Customer</td><td>Yes</td></tr>\n"
_HEAD = "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Ceiling</title></head><body><table>\n"
_TAIL = "</table></body></html>\n"
_rows = "".join(_ROW.format(n=n) for n in range(100))
BODY = (_HEAD + _rows)[:5 * 1024 - len(_TAIL)] + _TAIL  # exactly 5 KB (ASCII)


@bp.get("/bench/ceiling")
@public
async def ceiling():
    return BODY
