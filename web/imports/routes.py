"""Importing users from a CSV file (Admins; Managers import Customers): upload, map the
columns, preview every row with its problems, fix or skip them, import with a progress bar,
and a result to read or download. The job lives in the database (jobs.py); a runner in the
workers creates its rows (runner.py)."""
import csv
import io
from urllib.parse import urlencode

from quart import Blueprint, Response, abort, current_app, g, request
from werkzeug.exceptions import RequestEntityTooLarge

from ..accounts.reauthentication import reauthenticated
from ..core import audit_trail as audit
from ..core.access import staff
from ..core.context import client_ip
from ..core.formatting import counted
from ..core.render import go, is_htmx, render, toast
from ..core.security import INT32_MAX
from ..core.spreadsheet import spreadsheet_safe
from ..core.uploads import allow_uploads
from . import csvfile, jobs, rows as checks
from .runner import started

bp = Blueprint("imports", __name__)

PAGE = "imports/job.html"
UPLOAD = "imports/index.html"
ONLY = ("", "problems", *jobs.OUTCOMES)
ROW_CLOSED = "This row can no longer change."


async def upload_page(status: int = 200, error: str | None = None):
    async with current_app.db.read() as conn:
        recent = await jobs.recent(conn, None if g.user.role == "Admin" else g.user.id)
    return await render(UPLOAD, status, recent=recent, error=error)


@bp.get("/users/import")
@staff
async def index():
    return await upload_page()


@bp.post("/users/import")
@staff
async def upload():
    try:
        files = await request.files
    except RequestEntityTooLarge:
        return await upload_page(413, f"The file is larger than {csvfile.MAX_BYTES // (1024 * 1024)} MB. "
                                      f"Split it into smaller files.")
    upload = files.get("file")
    if upload is None or not upload.filename:
        return await upload_page(422, "Choose a CSV file to import.")
    data = upload.read(csvfile.MAX_BYTES + 1)
    if len(data) > csvfile.MAX_BYTES:
        return await upload_page(413, f"The file is larger than {csvfile.MAX_BYTES // (1024 * 1024)} MB. "
                                      f"Split it into smaller files.")
    try:
        sheet = csvfile.read(data)
    except csvfile.FileProblem as problem:
        return await upload_page(422, str(problem))
    async with current_app.db.write() as conn:
        job_id = await jobs.create(conn, g.user.id, upload.filename, sheet)
        job = await jobs.get(conn, job_id)
        await jobs.remap(conn, job, checks.guess_mapping(sheet.header), g.user.role)
    return go(f"/users/import/{job_id}")


def may_see(job) -> bool:
    return g.user.role == "Admin" or job.created_by == g.user.id


async def job_or_404(conn, job_id: int, lock: bool = False):
    job = await (jobs.lock if lock else jobs.get)(conn, job_id) if job_id <= INT32_MAX else None
    if job is None or not may_see(job):
        abort(404, "This import does not exist.")
    return job


async def preview_or_409(conn, job_id: int, refusal: str):
    """The job, locked, while its preview may still change; 409 saying `refusal` once started."""
    job = await job_or_404(conn, job_id, lock=True)
    if job.state != jobs.PREVIEW:
        abort(409, refusal)
    return job


def position() -> tuple[str, int]:
    """Which rows the page shows (`only`) from which line on (`after`), from the query string."""
    only = request.args.get("only", "")
    after = request.args.get("after", "")
    return (only if only in ONLY else ""), (int(after) if after.isdigit() and len(after) < 10 else 0)


def view_query() -> str:
    """The query string that keeps the rows shown, for the links and forms of a row."""
    only, after = position()
    query = urlencode({k: v for k, v in (("only", only), ("after", after)) if v})
    return "?" + query if query else ""


async def job_page(job_id: int, status: int = 200, block: str | None = None, focus: int = 0, **context):
    only, after = position()
    async with current_app.db.read() as conn:
        job = await job_or_404(conn, job_id)
        tally = await jobs.tally(conn, job_id)
        page = await jobs.page(conn, job_id, only, after, keep=focus)
    more = len(page) > jobs.PAGE_SIZE
    page = page[:jobs.PAGE_SIZE]
    return await render(PAGE, status, block=block, job=job, tally=tally, rows=page, only=only, focus=focus,
                        next_after=page[-1].line if more else None, view_query=view_query(),
                        fields=checks.FIELDS, labels=checks.LABELS, required=checks.REQUIRED, **context)


@bp.get("/users/import/<int:job_id>")
@staff
async def show(job_id: int):
    return await job_page(job_id)


@bp.post("/users/import/<int:job_id>/mapping")
@staff
async def mapping(job_id: int):
    form = await request.form
    async with current_app.db.write() as conn:
        job = await preview_or_409(conn, job_id, "This import has started: its columns can no longer change.")
        chosen = {}
        for field in checks.FIELDS:
            value = form.get(field, "")
            if value.isdigit() and int(value) < len(job.header):
                chosen[field] = int(value)
        if missing := [checks.LABELS[f] for f in checks.REQUIRED if f not in chosen]:
            error = f"Choose the column of each required field: {', '.join(missing)}."
            return await job_page(job_id, 422, mapping_error=error, chosen=chosen)
        await jobs.remap(conn, job, chosen, g.user.role)
    await toast("Columns mapped; every row checked again.")
    return go(f"/users/import/{job_id}")


@bp.get("/users/import/<int:job_id>/rows/<int:line>/edit")
@staff
async def edit_row(job_id: int, line: int):
    return await row_answer(job_id, line, editing=True)


async def row_answer(job_id: int, line: int, status: int = 200, editing: bool = False):
    """One preview row: its own page without JavaScript, or the row in place."""
    async with current_app.db.read() as conn:
        job = await job_or_404(conn, job_id)
        row = await jobs.get_row(conn, job_id, line) if line <= INT32_MAX else None
    if row is None:
        abort(404, "This line is not in the file.")
    if not is_htmx():
        return await render("imports/row.html", status, job=job, row=row, fields=checks.FIELDS,
                            labels=checks.LABELS, view_query=view_query())
    return await render(PAGE, status, block="import_row", job=job, row=row, editing=editing,
                        fields=checks.FIELDS, labels=checks.LABELS, view_query=view_query())


@bp.post("/users/import/<int:job_id>/rows/<int:line>")
@staff
async def fix_row(job_id: int, line: int):
    form = await request.form
    values = {field: form.get(field, "").strip()[:csvfile.MAX_CELL + 1] for field in checks.FIELDS
              if field != "password_hash"}
    async with current_app.db.write() as conn:
        job = await preview_or_409(conn, job_id, ROW_CLOSED)
        if line > INT32_MAX or await jobs.get_row(conn, job_id, line) is None:
            abort(409, ROW_CLOSED)
        await jobs.fix(conn, job, line, values, g.user.role)
    if not is_htmx():
        return go(f"/users/import/{job_id}{view_query()}")
    # Other rows' problems may have changed with this one (a duplicate fixed): the table again.
    return await job_page(job_id, block="import_preview", focus=line)


@bp.post("/users/import/<int:job_id>/start")
@staff
@reauthenticated
async def start(job_id: int):
    form = await request.form
    async with current_app.db.write() as conn:
        job = await job_or_404(conn, job_id, lock=True)
        if not await jobs.start(conn, job_id, form.get("skip_bad") == "on"):
            tally = await jobs.tally(conn, job_id)
            error = (f"{counted(tally['bad'], 'row')} {'has' if tally['bad'] == 1 else 'have'} problems: fix them, or choose to skip them."
                     if job.state == jobs.PREVIEW else "This import has already started.")
            return await job_page(job_id, 409 if job.state != jobs.PREVIEW else 422, start_error=error)
        await audit.record(conn, "import_started", "import", job_id, actor=g.user, ip=client_ip(),
                           changes={"file": [None, job.filename], "rows": [None, job.total]})
        started.after(conn)
    return go(f"/users/import/{job_id}")


@bp.post("/users/import/<int:job_id>/cancel")
@staff
async def cancel(job_id: int):
    async with current_app.db.write() as conn:
        await job_or_404(conn, job_id, lock=True)
        cancelled = await jobs.cancel(conn, job_id)
    await toast("Import cancelled: nothing was created." if cancelled else "This import has already started.",
                "success" if cancelled else "warning")
    return go("/users/import")


@bp.get("/users/import/<int:job_id>/progress")
@staff
async def progress(job_id: int):
    """The progress block, polled by the page while the import runs."""
    return await job_page(job_id, block="import_status", polled=True)


@bp.get("/users/import/<int:job_id>/result.csv")
@staff
async def result(job_id: int):
    async with current_app.db.read() as conn:
        job = await job_or_404(conn, job_id)
        stored = await jobs.page(conn, job_id, limit=job.total)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["line", "username", "email", "role", "outcome", "message"])
    for row in stored:
        writer.writerow([spreadsheet_safe(v) for v in (row.line, row.username, row.email, row.role,
                                                         row.outcome or "not imported", row.message)])
    name = f"import-{job_id}-result.csv"
    return Response(out.getvalue(), mimetype="text/csv", headers={
        "Content-Disposition": f'attachment; filename="{name}"'})


def init_app(app) -> None:
    app.register_blueprint(bp)
    # The file and the form's few fields around it.
    allow_uploads(app, "/users/import", csvfile.MAX_BYTES + 64 * 1024)
