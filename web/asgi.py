"""The ASGI application Hypercorn serves: `hypercorn web.asgi:app`."""
from . import create_app

app = create_app()
