"""A software WebAuthn authenticator for HTTP tests: an ECDSA P-256 key per passkey, and the
authenticatorData, clientDataJSON and signatures a browser would send, built by hand. It can
lie (another origin, another relying party, no user verification, a counter that goes back)."""
import hashlib
import json
import secrets

import cbor2
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from webauthn.helpers import bytes_to_base64url

ORIGIN = "http://localhost:8000"  # the test app's BASE_URL (Config's default)
RP_ID = "localhost"
UP, UV, AT = 0x01, 0x04, 0x40


class SoftAuthenticator:
    def __init__(self, counts: bool = True):
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.credential_id = secrets.token_bytes(16)
        self.user_handle: str | None = None
        self.counts = counts  # False: a synced passkey, whose counter stays 0
        self.sign_count = 0

    @property
    def id(self) -> str:
        return bytes_to_base64url(self.credential_id)

    def _client_data(self, kind: str, options: dict, origin: str) -> bytes:
        return json.dumps({"type": kind, "challenge": options["challenge"], "origin": origin,
                           "crossOrigin": False}).encode()

    def _flags(self, verified: bool, extra: int = 0) -> bytes:
        return bytes([UP | (UV if verified else 0) | extra])

    def create(self, options: dict, *, origin: str = ORIGIN, rp_id: str = RP_ID, verified: bool = True) -> str:
        """The JSON a browser posts after navigator.credentials.create(options)."""
        self.user_handle = options["user"]["id"]
        numbers = self.key.public_key().public_numbers()
        cose_key = cbor2.dumps({1: 2, 3: -7, -1: 1,  # EC2, ES256, P-256
                                -2: numbers.x.to_bytes(32, "big"), -3: numbers.y.to_bytes(32, "big")})
        auth_data = (hashlib.sha256(rp_id.encode()).digest() + self._flags(verified, AT)
                     + self.sign_count.to_bytes(4, "big") + bytes(16)  # the AAGUID: none
                     + len(self.credential_id).to_bytes(2, "big") + self.credential_id + cose_key)
        attestation = cbor2.dumps({"fmt": "none", "attStmt": {}, "authData": auth_data})
        client_data = self._client_data("webauthn.create", options, origin)
        return json.dumps({"id": self.id, "rawId": self.id, "type": "public-key", "clientExtensionResults": {},
                           "response": {"clientDataJSON": bytes_to_base64url(client_data),
                                        "attestationObject": bytes_to_base64url(attestation),
                                        "transports": ["internal"]}})

    def get(self, options: dict, *, origin: str = ORIGIN, rp_id: str = RP_ID, verified: bool = True,
            sign_count: int | None = None) -> str:
        """The JSON a browser posts after navigator.credentials.get(options), signed."""
        if sign_count is None:
            self.sign_count += 1 if self.counts else 0
            sign_count = self.sign_count
        auth_data = hashlib.sha256(rp_id.encode()).digest() + self._flags(verified) + sign_count.to_bytes(4, "big")
        client_data = self._client_data("webauthn.get", options, origin)
        signature = self.key.sign(auth_data + hashlib.sha256(client_data).digest(), ec.ECDSA(hashes.SHA256()))
        response = {"clientDataJSON": bytes_to_base64url(client_data),
                    "authenticatorData": bytes_to_base64url(auth_data), "signature": bytes_to_base64url(signature)}
        if self.user_handle:
            response["userHandle"] = self.user_handle
        return json.dumps({"id": self.id, "rawId": self.id, "type": "public-key", "clientExtensionResults": {},
                           "response": response})


def allowed_ids(options: dict) -> list[str]:
    return [c["id"] for c in options.get("allowCredentials", [])]

