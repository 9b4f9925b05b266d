"""CSV that spreadsheets open safely: the audit log's export and an import's result."""
import csv
import io

# A cell starting with one of these is a formula to a spreadsheet (or becomes one once a
# leading tab or carriage return is trimmed): such a cell is written with a quote before it.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(value) -> str:
    """A cell a spreadsheet shows as text."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def csv_line(values) -> str:
    out = io.StringIO()
    csv.writer(out).writerow([spreadsheet_safe(v) for v in values])
    return out.getvalue()
