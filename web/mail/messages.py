"""Messages from templates: partials/mail/<kind>.txt and <kind>.html, each extending the
base of its kind, rendered outside any request (the command line sends mail too).

Links are built from BASE_URL, never from a request's Host header (a forged Host would
otherwise put an attacker's address in a reset link)."""
import uuid
from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from ..core.config import ROOT

PRODUCT = "Gatehouse"

templates = Environment(
    loader=FileSystemLoader(ROOT / "partials"),
    autoescape=select_autoescape(["html"], default_for_string=False),
    undefined=StrictUndefined,  # a message with a missing value is never sent
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
)


@dataclass(frozen=True)
class Message:
    kind: str
    recipient: str
    subject: str
    text: str
    html: str
    message_id: str


def link(config, path: str, **query: str) -> str:
    """An absolute link into the app: BASE_URL, the path, the query."""
    return config.base_url + path + ("?" + urlencode(query) if query else "")


def new_message_id(config) -> str:
    return f"<{uuid.uuid4().hex}@{urlsplit(config.base_url).hostname}>"


def compose(config, kind: str, *, to: str, subject: str, **context) -> Message:
    """The message of `kind` to `to`, both parts rendered with `context`."""
    values = {"product": PRODUCT, "base_url": config.base_url, "to": to, "subject": subject, **context}
    return Message(
        kind=kind, recipient=to, subject=f"{subject} · {PRODUCT}",
        text=templates.get_template(f"mail/{kind}.txt").render(values),
        html=templates.get_template(f"mail/{kind}.html").render(values),
        message_id=new_message_id(config),
    )
