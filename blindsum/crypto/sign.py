"""Ed25519 identity keys. Verification raises InvalidSignature; it never returns a bool."""

from __future__ import annotations

from cryptography.exceptions import InvalidSignature as _CryptoInvalidSignature
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from blindsum.errors import InvalidArgument, InvalidSignature
from blindsum.types import RandFn

KEY_BYTES = 32
SIGNATURE_BYTES = 64


class VerifyKey:
    """An Ed25519 public key. Equal and hashable by its raw 32 bytes."""

    __slots__ = ("_key", "_raw")

    def __init__(self, key: Ed25519PublicKey) -> None:
        self._key = key
        self._raw = key.public_bytes_raw()

    @classmethod
    def from_bytes(cls, raw: bytes) -> VerifyKey:
        """Parse a raw 32-byte public key (InvalidArgument(field="public_key") otherwise)."""
        if not isinstance(raw, bytes) or len(raw) != KEY_BYTES:
            raise InvalidArgument(f"must be {KEY_BYTES} bytes", field="public_key")
        try:
            return cls(Ed25519PublicKey.from_public_bytes(raw))
        except ValueError:
            raise InvalidArgument("is not an Ed25519 key", field="public_key") from None

    @classmethod
    def from_public_key(cls, key: Ed25519PublicKey) -> VerifyKey:
        """Wrap a key taken from, for example, a certificate."""
        if not isinstance(key, Ed25519PublicKey):
            raise InvalidArgument("is not an Ed25519 key", field="public_key")
        return cls(key)

    @property
    def raw(self) -> bytes:
        """The raw 32-byte public key."""
        return self._raw

    @property
    def public_key(self) -> Ed25519PublicKey:
        """The underlying ``cryptography`` key object."""
        return self._key

    def verify(self, signature: bytes, message: bytes) -> None:
        """Return if ``signature`` is valid for ``message``; raise InvalidSignature otherwise."""
        if not isinstance(signature, bytes) or len(signature) != SIGNATURE_BYTES:
            raise InvalidSignature(f"must be {SIGNATURE_BYTES} bytes", field="signature")
        if not isinstance(message, bytes):
            raise InvalidArgument("must be bytes", field="message")
        try:
            self._key.verify(signature, message)
        except _CryptoInvalidSignature:
            raise InvalidSignature("does not verify", field="signature") from None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, VerifyKey):
            return NotImplemented
        return self._raw == other._raw

    def __hash__(self) -> int:
        return hash(self._raw)

    def __repr__(self) -> str:
        return f"VerifyKey({self._raw.hex()})"


class SigningKey:
    """An Ed25519 private key. ``repr`` shows only the public half."""

    __slots__ = ("_key",)

    def __init__(self, key: Ed25519PrivateKey) -> None:
        if not isinstance(key, Ed25519PrivateKey):
            raise InvalidArgument("is not an Ed25519 key", field="private_key")
        self._key = key

    @classmethod
    def generate(cls, rand: RandFn) -> SigningKey:
        """A fresh key from 32 bytes of ``rand`` (a CSPRNG in production)."""
        seed = rand(KEY_BYTES)
        if len(seed) != KEY_BYTES:
            raise InvalidArgument("returned the wrong number of bytes", field="rand")
        return cls(Ed25519PrivateKey.from_private_bytes(seed))

    @classmethod
    def from_pem(cls, data: bytes) -> SigningKey:
        """Load an unencrypted PKCS8 PEM Ed25519 key; else InvalidArgument(field="private_key")."""
        if not isinstance(data, bytes):
            raise InvalidArgument("must be bytes", field="private_key")
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            # The parser's message could quote key material; keep it out.
            raise InvalidArgument(
                "is not an unencrypted PEM private key", field="private_key"
            ) from None
        if not isinstance(key, Ed25519PrivateKey):
            raise InvalidArgument("is not an Ed25519 key", field="private_key")
        return cls(key)

    def to_pem(self) -> bytes:
        """PKCS8 PEM without encryption; store it in a 0600 file."""
        return self._key.private_bytes(
            encoding=serialization.Encoding.PEM,
            format=serialization.PrivateFormat.PKCS8,
            encryption_algorithm=serialization.NoEncryption(),
        )

    def sign(self, message: bytes) -> bytes:
        """The 64-byte Ed25519 signature of ``message``."""
        if not isinstance(message, bytes):
            raise InvalidArgument("must be bytes", field="message")
        return self._key.sign(message)

    @property
    def verify_key(self) -> VerifyKey:
        """The matching public key."""
        return VerifyKey(self._key.public_key())

    @property
    def public_bytes(self) -> bytes:
        """The raw 32-byte public key."""
        return self._key.public_key().public_bytes_raw()

    @property
    def private_key(self) -> Ed25519PrivateKey:
        """The underlying ``cryptography`` key (for building certificates)."""
        return self._key

    def __repr__(self) -> str:
        return f"SigningKey(public={self.public_bytes.hex()})"
