from __future__ import annotations

import pytest

from blindsum.crypto.envelope import open_share, seal_share
from blindsum.crypto.kex import KeyPair
from blindsum.errors import InvalidArgument, InvalidTag
from tests.drbg import drbg

ALICE = KeyPair.generate(drbg(b"alice"))
BOB = KeyPair.generate(drbg(b"bob"))
EVE = KeyPair.generate(drbg(b"eve"))


def _seal(plaintext: bytes = b"share bytes") -> tuple[bytes, bytes]:
    return seal_share(
        own_private=ALICE.private,
        peer_public=BOB.public,
        round_id="r1",
        sender="alice",
        receiver="bob",
        phase="share",
        plaintext=plaintext,
        rand=drbg(b"nonce"),
    )


def test_round_trip_and_sizes() -> None:
    nonce, ct = _seal(b"x" * 40)
    assert len(nonce) == 12
    assert len(ct) == 40 + 16
    out = open_share(
        own_private=BOB.private,
        peer_public=ALICE.public,
        round_id="r1",
        sender="alice",
        receiver="bob",
        phase="share",
        nonce=nonce,
        ciphertext=ct,
    )
    assert out == b"x" * 40


def test_direction_is_bound() -> None:
    """An envelope from alice to bob does not open as one from bob to alice."""
    nonce, ct = _seal()
    with pytest.raises(InvalidTag):
        open_share(
            own_private=ALICE.private,
            peer_public=BOB.public,
            round_id="r1",
            sender="bob",
            receiver="alice",
            phase="share",
            nonce=nonce,
            ciphertext=ct,
        )


def test_wrong_receiver_key_fails() -> None:
    nonce, ct = _seal()
    with pytest.raises(InvalidTag) as info:
        open_share(
            own_private=EVE.private,
            peer_public=ALICE.public,
            round_id="r1",
            sender="alice",
            receiver="bob",
            phase="share",
            nonce=nonce,
            ciphertext=ct,
        )
    assert info.value.field == "ciphertext"


def test_short_ciphertext_and_bad_nonce() -> None:
    nonce, ct = _seal()
    kwargs = dict(
        own_private=BOB.private,
        peer_public=ALICE.public,
        round_id="r1",
        sender="alice",
        receiver="bob",
        phase="share",
    )
    with pytest.raises(InvalidTag):
        open_share(**kwargs, nonce=nonce, ciphertext=ct[:10])  # type: ignore[arg-type]  # kwargs dict
    with pytest.raises(InvalidArgument) as info:
        open_share(**kwargs, nonce=nonce[:11], ciphertext=ct)  # type: ignore[arg-type]  # kwargs dict
    assert info.value.field == "nonce"


def test_low_order_peer_key_is_rejected_when_sealing() -> None:
    with pytest.raises(InvalidArgument) as info:
        seal_share(
            own_private=ALICE.private,
            peer_public=bytes(32),
            round_id="r1",
            sender="alice",
            receiver="bob",
            phase="share",
            plaintext=b"x",
            rand=drbg(b"n"),
        )
    assert info.value.field == "public_key"


def test_fresh_nonce_per_seal() -> None:
    rand = drbg(b"many")
    nonces = {
        seal_share(
            own_private=ALICE.private,
            peer_public=BOB.public,
            round_id="r1",
            sender="alice",
            receiver="bob",
            phase="share",
            plaintext=b"x",
            rand=rand,
        )[0]
        for _ in range(20)
    }
    assert len(nonces) == 20
