"""Time-based one-time passwords (RFC 6238): 30-second steps, 6 digits, SHA-1, as every
authenticator app reads them from a QR code; a code is accepted one step either side."""
import hmac

import pyotp
import segno

STEP_SECONDS = 30
WINDOW = 1  # steps accepted either side of now: a phone's clock a little off, a slow typist
ISSUER = "Gatehouse"


def new_secret() -> str:
    return pyotp.random_base32()  # 160 bits, as RFC 4226 recommends


def step_of(now: float) -> int:
    return int(now) // STEP_SECONDS


def matching_step(secret: str, code: str, now: float) -> int | None:
    """The step whose code `code` is, within the window around `now`; None when none."""
    if len(code) != 6 or not code.isascii() or not code.isdigit():
        return None
    generator = pyotp.TOTP(secret)
    current = step_of(now)
    found = None
    for step in range(current - WINDOW, current + WINDOW + 1):
        # Every step compared, in constant time: the answer's timing says nothing of which.
        if hmac.compare_digest(generator.at(step * STEP_SECONDS), code):
            found = step
    return found


def provisioning_uri(secret: str, account: str) -> str:
    return pyotp.TOTP(secret).provisioning_uri(name=account, issuer_name=ISSUER)


def qr_svg(uri: str) -> str:
    """The URI as a QR code in inline SVG: no script, no image request, the CSP untouched.
    The SVG has a title, and the page shows the secret as text beside it."""
    svg = segno.make(uri, error="m").svg_inline(scale=4, border=2, title="QR code for your authenticator app",
                                                  dark="#000", light="#fff")
    return svg.replace("<svg ", '<svg role="img" ', 1)


def grouped(secret: str) -> str:
    """The secret in groups of four, easier to type by hand (apps ignore the spaces)."""
    return " ".join(secret[i:i + 4] for i in range(0, len(secret), 4))
