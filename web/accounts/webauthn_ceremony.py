"""The WebAuthn ceremonies, server side (py_webauthn): the options a browser passes to
navigator.credentials.create() or .get(), and the checks of what the authenticator answered.

The relying party is BASE_URL's host and the only origin accepted is BASE_URL's: never the
request's Host header. Every ceremony requires user verification (a PIN, a fingerprint), asks
for a discoverable credential (one that can sign in without a name typed first) and no
attestation. An answer is checked in the caller's write transaction, which uses its
challenge up whatever the outcome; the caller counts the attempt and audits.
"""
import ipaddress
import secrets
from dataclasses import dataclass, replace
from functools import lru_cache
from urllib.parse import urlsplit

from webauthn import (
    generate_authentication_options, generate_registration_options, options_to_json,
    verify_authentication_response, verify_registration_response,
)
from webauthn.helpers import (
    base64url_to_bytes, bytes_to_base64url, parse_authentication_credential_json, parse_client_data_json,
    parse_registration_credential_json,
)
from webauthn.helpers.structs import (
    AttestationConveyancePreference, AuthenticatorSelectionCriteria, AuthenticatorTransport,
    PublicKeyCredentialDescriptor, ResidentKeyRequirement, UserVerificationRequirement,
)

from ..core.context import settings
from ..core.tables import CREDENTIAL_ID_MAX
from . import passkeys

REGISTER, SIGN_IN, SECOND_STEP, REAUTH = "register", "sign_in", "second_step", "reauth"
RP_NAME = "Gatehouse"
TIMEOUT_MS = int(passkeys.CHALLENGE_LIFETIME.total_seconds() * 1000)
TRANSPORTS = {t.value for t in AuthenticatorTransport}

TOO_LATE = "That took longer than 5 minutes, or the page is stale. Try again."
NOT_VERIFIED = "Your browser's answer could not be verified. Try again."
ALREADY_ADDED = "That passkey is already added to your account."


@dataclass(frozen=True)
class RelyingParty:
    id: str
    origin: str


@lru_cache(maxsize=8)
def _relying_party(base_url: str) -> RelyingParty | None:
    url = urlsplit(base_url)
    try:
        ipaddress.ip_address(url.hostname)
        return None  # an IP address cannot be a relying party id: no passkeys
    except ValueError:
        return RelyingParty(url.hostname, f"{url.scheme}://{url.netloc.lower()}")


def relying_party() -> RelyingParty | None:
    """This site as WebAuthn sees it, from BASE_URL; None when BASE_URL names an IP address."""
    return _relying_party(settings().base_url)


def _descriptor(row) -> PublicKeyCredentialDescriptor:
    return PublicKeyCredentialDescriptor(
        id=base64url_to_bytes(row.credential_id),
        transports=[AuthenticatorTransport(t) for t in row.transports or () if t in TRANSPORTS] or None)


REQUIRED = AuthenticatorSelectionCriteria(resident_key=ResidentKeyRequirement.REQUIRED,
                                          user_verification=UserVerificationRequirement.REQUIRED)


# ---- registering a passkey -------------------------------------------------------------

async def registration_options(conn, user) -> str:
    """The JSON for navigator.credentials.create(), its challenge stored (a write transaction).
    The account's passkeys are excluded: an authenticator holding one says so instead of
    making a second."""
    handle = await passkeys.user_handle_of(conn, user.id) or bytes_to_base64url(secrets.token_bytes(32))
    challenge = secrets.token_bytes(32)
    options = generate_registration_options(
        rp_id=relying_party().id, rp_name=RP_NAME, user_name=user.username, user_id=base64url_to_bytes(handle),
        challenge=challenge, timeout=TIMEOUT_MS, attestation=AttestationConveyancePreference.NONE,
        authenticator_selection=REQUIRED,
        exclude_credentials=[_descriptor(row) for row in await passkeys.list_for(conn, user.id)])
    await passkeys.store_challenge(conn, challenge, REGISTER, user.id, handle)
    return options_to_json(options)


@dataclass(frozen=True)
class Registration:
    passkey_id: int | None = None
    problem: str | None = None  # what to tell the person when it failed


async def register(conn, user_id: int, credential_json: str, name: str) -> Registration:
    """The new passkey stored, when the authenticator's answer holds."""
    rp = relying_party()
    try:
        credential = parse_registration_credential_json(credential_json)
        challenge = parse_client_data_json(credential.response.client_data_json).challenge
    except Exception:  # py_webauthn lets hostile input through as many kinds of error
        return Registration(problem=NOT_VERIFIED)
    taken = await passkeys.take_challenge(conn, challenge, REGISTER, user_id)
    if taken is None:
        return Registration(problem=TOO_LATE)
    try:
        verified = verify_registration_response(
            credential=credential, expected_challenge=challenge, expected_rp_id=rp.id, expected_origin=rp.origin,
            require_user_verification=True)
    except Exception:
        return Registration(problem=NOT_VERIFIED)
    credential_id = bytes_to_base64url(verified.credential_id)
    if len(credential_id) > CREDENTIAL_ID_MAX:
        return Registration(problem=NOT_VERIFIED)
    if await passkeys.owner_of(conn, credential_id) is not None:
        return Registration(problem=ALREADY_ADDED)
    transports = [t.value for t in credential.response.transports or ()]
    passkey_id = await passkeys.add(conn, user_id, credential_id, taken.user_handle, verified.credential_public_key,
                                    verified.sign_count, name, transports)
    return Registration(passkey_id)


# ---- signing in with a passkey ---------------------------------------------------------

async def assertion_options(conn, purpose: str, user_id: int | None = None) -> str:
    """The JSON for navigator.credentials.get(), its challenge stored (a write transaction).
    With a user (a second step, a re-authentication) only that account's passkeys are
    allowed; without one (a passwordless sign-in) the authenticator offers the passkeys it
    holds for this site, and nothing tells which accounts exist."""
    allowed = [_descriptor(row) for row in await passkeys.list_for(conn, user_id)] if user_id is not None else []
    challenge = secrets.token_bytes(32)
    options = generate_authentication_options(
        rp_id=relying_party().id, challenge=challenge, timeout=TIMEOUT_MS, allow_credentials=allowed,
        user_verification=UserVerificationRequirement.REQUIRED)
    await passkeys.store_challenge(conn, challenge, purpose, user_id)
    return options_to_json(options)


@dataclass(frozen=True)
class Assertion:
    ok: bool
    user_id: int | None = None  # whose passkey answered, when it is one of ours
    passkey_id: int | None = None
    name: str = ""
    problem: str = ""  # for the audit trail, when not ok


def credential_id_of(credential_json: str) -> str | None:
    """The credential id an answer names, unchecked (to find whose attempt it is)."""
    try:
        return parse_authentication_credential_json(credential_json).id
    except Exception:
        return None


async def verify_assertion(conn, purpose: str, credential_json: str, user_id: int | None = None) -> Assertion:
    """Checks an answer to assertion_options(purpose, user_id) in the caller's write
    transaction: the challenge (used up), the passkey (the user's, when given), the origin and
    relying party, the signature, user verification and the sign count, which must move on
    unless it stays 0 (authenticators that keep none, such as synced passkeys). A passkey that
    passes has its count and last use recorded."""
    rp = relying_party()
    try:
        credential = parse_authentication_credential_json(credential_json)
        challenge = parse_client_data_json(credential.response.client_data_json).challenge
    except Exception:  # py_webauthn lets hostile input through as many kinds of error
        return Assertion(False, problem="unreadable answer")
    if await passkeys.take_challenge(conn, challenge, purpose, user_id) is None:
        return Assertion(False, problem="unknown, used or expired challenge")
    row = await passkeys.lock_by_credential(conn, credential.id)
    if row is None or user_id is not None and row.user_id != user_id:
        return Assertion(False, problem="not a passkey of this account" if row else "unknown passkey")
    failed = Assertion(False, row.user_id, row.id, row.name)
    handle = credential.response.user_handle
    if handle is None and purpose == SIGN_IN or handle is not None and bytes_to_base64url(handle) != row.user_handle:
        return replace(failed, problem="wrong user handle")
    try:
        verified = verify_authentication_response(
            credential=credential, expected_challenge=challenge, expected_rp_id=rp.id, expected_origin=rp.origin,
            credential_public_key=row.public_key, credential_current_sign_count=row.sign_count,
            require_user_verification=True)
    except Exception as error:
        return replace(failed, problem=str(error)[:200])
    await passkeys.record_use(conn, row.id, verified.new_sign_count)
    return Assertion(True, row.user_id, row.id, row.name)
