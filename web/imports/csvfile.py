"""Reading an uploaded CSV file of users: text checks, the delimiter, the header, its rows.

Anything wrong with the file as a whole is a FileProblem whose message tells the person what
to do; anything wrong with one row is left for the row's checks (rows.py), shown next to it.
"""
import csv
import io
from dataclasses import dataclass

MAX_BYTES = 10 * 1024 * 1024
MAX_ROWS = 50_000
MAX_COLUMNS = 50
MAX_CELL = 300  # longer than any field of an account may be: a longer cell is a problem of its row
DELIMITERS = (",", ";")


class FileProblem(ValueError):
    """The file cannot be read as CSV of users; the message says why and what to do."""


@dataclass(frozen=True)
class Sheet:
    header: list[str]
    rows: list[tuple[int, list[str]]]  # (line in the file, cells)


def text_of(data: bytes) -> str:
    if not data.strip():
        raise FileProblem("The file is empty. Choose a CSV file with a header line and one user per line.")
    if b"\x00" in data:
        raise FileProblem("This is not a CSV file (it holds binary data). Export the sheet as CSV and upload that.")
    try:
        return data.decode("utf-8-sig")  # with or without a byte order mark
    except UnicodeDecodeError as error:
        raise FileProblem(f"The file is not UTF-8 text (byte {error.start + 1} is not). Save it as "
                          f"\"CSV UTF-8\" and upload it again.") from None


def delimiter_of(first_line: str) -> str:
    """The delimiter of the header line: the one of comma and semicolon it holds more of."""
    return max(DELIMITERS, key=first_line.count)


def read(data: bytes) -> Sheet:
    """The header and the non-blank rows of a CSV file, each row with its line number."""
    text = text_of(data)
    first_line = text.lstrip("\r\n").split("\n", 1)[0]
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter_of(first_line), strict=False)
    header, rows = None, []
    try:
        for cells in reader:
            if not any(cell.strip() for cell in cells):
                continue
            if header is None:
                header = [cell.strip() for cell in cells]
                if len(header) > MAX_COLUMNS:
                    raise FileProblem(f"The header line has {len(header):,} columns; an import takes at most "
                                      f"{MAX_COLUMNS}. Keep the columns of the users' fields only.")
                continue
            if len(rows) == MAX_ROWS:
                raise FileProblem(f"The file has more than {MAX_ROWS:,} users. Split it into smaller files.")
            rows.append((reader.line_num, cells[:MAX_COLUMNS + 1]))
    except csv.Error as error:  # a field larger than the csv module allows, a stray NUL...
        raise FileProblem(f"Line {reader.line_num} cannot be read as CSV ({error}).") from None
    if header is None:
        raise FileProblem("The file is empty. Choose a CSV file with a header line and one user per line.")
    if not rows:
        raise FileProblem("The file has a header line but no users under it.")
    return Sheet(header, rows)
