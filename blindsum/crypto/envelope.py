"""AES-256-GCM envelopes for Shamir shares sent between parties via the aggregator.

The key is HKDF-SHA256 of the X25519 agreement between the sender's and the
receiver's c keys, bound to (round, sender, receiver). The AAD binds (round,
sender, receiver, phase), so an envelope cannot be replayed into another round,
redirected, or reinterpreted in another phase.
"""

from __future__ import annotations

from cryptography.exceptions import InvalidTag as _CryptoInvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from blindsum.crypto.encoding import format_dst
from blindsum.crypto.kex import agree, derive_key
from blindsum.errors import InvalidArgument, InvalidTag
from blindsum.types import RandFn

NONCE_BYTES = 12
TAG_BYTES = 16


def _key(
    own_private: bytes, peer_public: bytes, round_id: str, sender: str, receiver: str
) -> AESGCM:
    shared = agree(own_private, peer_public)
    return AESGCM(derive_key(shared, format_dst("envelope/key", round_id, sender, receiver)))


def _aad(round_id: str, sender: str, receiver: str, phase: str) -> bytes:
    return format_dst("envelope/aad", round_id, sender, receiver, phase)


def seal_share(
    *,
    own_private: bytes,
    peer_public: bytes,
    round_id: str,
    sender: str,
    receiver: str,
    phase: str,
    plaintext: bytes,
    rand: RandFn,
) -> tuple[bytes, bytes]:
    """Encrypt ``plaintext`` from ``sender`` to ``receiver``; returns ``(nonce, ciphertext)``.

    ``own_private`` is the sender's c private key, ``peer_public`` the receiver's
    c public key. The 12-byte nonce comes from ``rand``; the ciphertext is
    ``len(plaintext) + 16`` bytes (GCM tag appended).
    """
    if not isinstance(plaintext, bytes):
        raise InvalidArgument("must be bytes", field="plaintext")
    aead = _key(own_private, peer_public, round_id, sender, receiver)
    nonce = rand(NONCE_BYTES)
    if len(nonce) != NONCE_BYTES:
        raise InvalidArgument("returned the wrong number of bytes", field="rand")
    return nonce, aead.encrypt(nonce, plaintext, _aad(round_id, sender, receiver, phase))


def open_share(
    *,
    own_private: bytes,
    peer_public: bytes,
    round_id: str,
    sender: str,
    receiver: str,
    phase: str,
    nonce: bytes,
    ciphertext: bytes,
) -> bytes:
    """Decrypt an envelope addressed to ``receiver``; ``own_private`` is the receiver's c key.

    Raises InvalidTag on a wrong key, AAD or any tampering, InvalidArgument on a
    malformed nonce or key.
    """
    if not isinstance(nonce, bytes) or len(nonce) != NONCE_BYTES:
        raise InvalidArgument(f"must be {NONCE_BYTES} bytes", field="nonce")
    if not isinstance(ciphertext, bytes) or len(ciphertext) < TAG_BYTES:
        raise InvalidTag("envelope is too short to be authentic", field="ciphertext")
    aead = _key(own_private, peer_public, round_id, sender, receiver)
    try:
        return aead.decrypt(nonce, ciphertext, _aad(round_id, sender, receiver, phase))
    except _CryptoInvalidTag:
        raise InvalidTag("envelope failed authentication", field="ciphertext") from None
