"""Error pages in the app's own style: a whole page, or the main region for htmx."""
from quart import current_app, request
from werkzeug.exceptions import HTTPException, InternalServerError, MethodNotAllowed, TooManyRequests

from .render import is_htmx, render, toast

TITLES = {
    400: "Bad request",
    401: "Please log in",
    403: "Not allowed",
    404: "Page not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Too much data",
    422: "Check the form",
    429: "Too many attempts",
    500: "Something went wrong",
}
MESSAGES = {
    400: "The request could not be understood.",
    403: "You do not have permission to see this page.",
    404: "There is nothing at this address.",
    405: "This address does not accept that kind of request.",
    409: "Someone else changed this in the meantime.",
    413: "The data sent was larger than this site accepts (64 KB).",
    429: "Too many attempts. Please wait a moment and try again.",
    500: "An unexpected error happened on our side. It has been logged; please try again.",
}


async def error_page(error: HTTPException):
    code = error.code or 500
    description = error.description if isinstance(error.description, str) else None
    if description is None or description == type(error).description:
        description = MESSAGES.get(code, "")
    headers = {}
    if isinstance(error, MethodNotAllowed) and error.valid_methods:
        headers["Allow"] = ", ".join(error.valid_methods)
    if isinstance(error, TooManyRequests) and error.retry_after:
        headers["Retry-After"] = str(error.retry_after)
    if is_htmx() and not request.headers.get("HX-Boosted"):
        # A refused action inside the page: say why in a toast and leave the page as it is.
        await toast(description, "error")
        return "", code, {**headers, "HX-Reswap": "none"}
    if is_htmx():
        headers.update({"HX-Retarget": "#main", "HX-Reswap": "innerHTML"})
    body, _ = await render("error.html", block="main" if is_htmx() else None,
                           code=code, title=TITLES.get(code, "Error"), message=description)
    return body, code, headers


async def unexpected(error: InternalServerError):
    current_app.logger.exception("unhandled error", exc_info=error.original_exception)
    return await error_page(InternalServerError())


def init_app(app):
    app.register_error_handler(HTTPException, error_page)
    app.register_error_handler(InternalServerError, unexpected)
