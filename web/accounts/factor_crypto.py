"""The keys of second factors (FACTOR_KEYS): TOTP secrets encrypted, recovery codes hashed.

Each stored value records the id of the key it was made with (the first 8 hex digits of the
key's SHA-256), so FACTOR_KEYS=new,old decrypts both while new values use the newest key,
and `run.py factors-rekey` moves the old ones over. Without FACTOR_KEYS (development only)
one key is derived from SECRET_KEY, so `make run` needs no setting.
"""
import base64
import hashlib
import hmac
from dataclasses import dataclass

from cryptography.fernet import Fernet, InvalidToken


def key_id(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:8]


def development_key(secret_key: str) -> str:
    digest = hmac.new(secret_key.encode(), b"gatehouse second factors", hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode()


class UnknownKey(Exception):
    """A value was made with a key FACTOR_KEYS no longer lists."""


@dataclass(frozen=True)
class Keyring:
    keys: tuple[str, ...]  # newest first

    @property
    def newest_id(self) -> str:
        return key_id(self.keys[0])

    def _key(self, kid: str) -> str:
        for key in self.keys:
            if key_id(key) == kid:
                return key
        raise UnknownKey(f"no key with id {kid} in FACTOR_KEYS")

    def encrypt(self, plain: str) -> tuple[str, str]:
        """(key id, ciphertext) under the newest key."""
        return self.newest_id, Fernet(self.keys[0].encode()).encrypt(plain.encode()).decode()

    def decrypt(self, kid: str, token: str) -> str:
        try:
            return Fernet(self._key(kid).encode()).decrypt(token.encode()).decode()
        except InvalidToken:
            raise UnknownKey(f"the value does not decrypt under key {kid}") from None

    def code_hashes(self, user_id: int, code: str) -> dict[str, str]:
        """A recovery code's HMAC-SHA-256 under every key, by key id (a code is stored under
        the newest; one stored under an older key still matches while that key is listed)."""
        message = f"{user_id}:{code}".encode()
        return {key_id(key): hmac.new(_hashing_key(key), message, hashlib.sha256).hexdigest() for key in self.keys}


def _hashing_key(key: str) -> bytes:
    """A key for the codes' HMAC derived from a Fernet key: never the same bytes for two uses."""
    return hmac.new(base64.urlsafe_b64decode(key), b"gatehouse recovery codes", hashlib.sha256).digest()


def keyring(config) -> Keyring:
    return Keyring(config.factor_keys or (development_key(config.secret_key),))
