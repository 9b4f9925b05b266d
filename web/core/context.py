"""What every blueprint reads from the request it serves: the settings, the client's
address, the fields of a posted form, a safe place to go next."""
from urllib.parse import urlsplit

from quart import current_app, request

from .config import Config


def settings() -> Config:
    return current_app.config["GATEHOUSE"]


def client_ip() -> str:
    return request.remote_addr or ""


async def form_fields(*names: str) -> dict[str, str]:
    """Only the named fields of the posted form, as stripped strings (passwords kept as typed)."""
    form = await request.form
    return {name: form.get(name, "") if "password" in name else form.get(name, "").strip()
            for name in names}


def safe_next(target: str | None) -> str | None:
    """`next` only when it is a path on this site: no scheme, no host, no backslash tricks."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return None
    if any(ord(c) < 32 for c in target):
        return None
    parts = urlsplit(target)
    return target if not parts.scheme and not parts.netloc else None
