"""Request bodies are capped at MAX_CONTENT_LENGTH (64 KiB); a route that takes an upload
gets a larger cap of its own, for its POSTs only, decided before any byte of the body is read."""


def allow_uploads(app, path: str, limit: int) -> None:
    """POST bodies to `path` may be up to `limit` bytes."""
    base = app.request_class

    class Request(base):
        def __init__(self, method, scheme, request_path, *args, max_content_length=None, **kwargs):
            upload = method == "POST" and request_path == path
            super().__init__(method, scheme, request_path, *args,
                             max_content_length=limit if upload else max_content_length, **kwargs)
            if upload:  # the form parser's limit, besides the body's
                self.max_content_length = limit

    app.request_class = Request
