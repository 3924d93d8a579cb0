"""X25519 key agreement and HKDF-SHA256 key derivation.

Keys are raw 32-byte strings. :func:`agree` rejects malformed public keys and
low-order points (an all-zero shared secret), so a malicious peer cannot force
a predictable shared secret.
"""

from __future__ import annotations

import functools
import hmac
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from blindsum.errors import InvalidArgument
from blindsum.types import RandFn

KEY_BYTES = 32
_MAX_HKDF_SHA256 = 255 * 32
# A fixed, public scalar used only to test public keys for low order.
_PROBE_PRIVATE = X25519PrivateKey.from_private_bytes(bytes(range(1, 33)))


def _check_key(value: object, field_name: str) -> bytes:
    if not isinstance(value, bytes) or len(value) != KEY_BYTES:
        raise InvalidArgument(f"must be {KEY_BYTES} bytes", field=field_name)
    return value


@dataclass(frozen=True)
class KeyPair:
    """An X25519 key pair as raw bytes. The private half is kept out of ``repr``."""

    public: bytes
    private: bytes = field(repr=False)

    @classmethod
    def generate(cls, rand: RandFn) -> KeyPair:
        """A fresh key pair from 32 bytes of ``rand`` (must be a CSPRNG in production)."""
        return cls.from_private(rand(KEY_BYTES))

    @classmethod
    def from_private(cls, private: bytes) -> KeyPair:
        """Rebuild the key pair of a raw 32-byte private key."""
        _check_key(private, "private_key")
        public = X25519PrivateKey.from_private_bytes(private).public_key().public_bytes_raw()
        return cls(public=public, private=private)


def validate_public(public: bytes) -> None:
    """Raise InvalidArgument(field="public_key") unless ``public`` is a usable X25519 key.

    Rejects wrong lengths and small-order points (whose agreement with any
    clamped scalar is all zero).
    """
    _check_key(public, "public_key")
    try:
        shared = _PROBE_PRIVATE.exchange(X25519PublicKey.from_public_bytes(public))
    except ValueError:
        raise InvalidArgument("low-order or invalid point", field="public_key") from None
    if hmac.compare_digest(shared, bytes(KEY_BYTES)):
        raise InvalidArgument("low-order or invalid point", field="public_key")


@functools.lru_cache(maxsize=8)
def _private_key(private: bytes) -> X25519PrivateKey:
    """The key object of a raw private key. A secagg party agrees with every neighbour
    under the same two private keys, and loading the key costs as much as the agreement
    itself; the few recent keys stay cached (they live in the party's memory anyway)."""
    return X25519PrivateKey.from_private_bytes(private)


def agree(private: bytes, peer_public: bytes) -> bytes:
    """Raw X25519 shared secret of ``private`` and ``peer_public`` (32 bytes each).

    Raises InvalidArgument(field="public_key") for a wrong-length key or an
    all-zero shared secret (low-order point).
    """
    _check_key(private, "private_key")
    _check_key(peer_public, "public_key")
    try:
        shared = _private_key(private).exchange(X25519PublicKey.from_public_bytes(peer_public))
    except ValueError:
        # cryptography refuses an all-zero result itself on most backends.
        raise InvalidArgument("low-order or invalid point", field="public_key") from None
    if hmac.compare_digest(shared, bytes(KEY_BYTES)):
        raise InvalidArgument("low-order or invalid point", field="public_key")
    return shared


def derive_key(shared: bytes, dst: bytes, length: int = 32) -> bytes:
    """HKDF-SHA256(ikm=shared, salt=None, info=dst) of ``length`` bytes (1..8160)."""
    if not isinstance(shared, bytes) or not shared:
        raise InvalidArgument("must be non-empty bytes", field="shared")
    if not isinstance(dst, bytes):
        raise InvalidArgument("must be bytes", field="dst")
    if isinstance(length, bool) or not isinstance(length, int):
        raise InvalidArgument("must be an integer", field="length")
    if not 1 <= length <= _MAX_HKDF_SHA256:
        raise InvalidArgument(f"must be in 1..{_MAX_HKDF_SHA256}", field="length")
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=dst).derive(shared)
