"""Property tests for share envelopes: round trip, and any change fails authentication."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blindsum.crypto.envelope import open_share, seal_share
from blindsum.crypto.kex import KeyPair
from blindsum.errors import InvalidTag
from tests.drbg import drbg

names = st.text(min_size=1, max_size=12)


@st.composite
def sealed(draw: st.DrawFn) -> dict[str, Any]:
    seed = draw(st.binary(min_size=1, max_size=8))
    rand = drbg(seed)
    sender_keys = KeyPair.generate(rand)
    receiver_keys = KeyPair.generate(rand)
    ctx = {
        "round_id": draw(names),
        "sender": draw(names),
        "receiver": draw(names),
        "phase": draw(st.sampled_from(["share", "unmask", "other"])),
    }
    plaintext = draw(st.binary(max_size=200))
    nonce, ct = seal_share(
        own_private=sender_keys.private,
        peer_public=receiver_keys.public,
        plaintext=plaintext,
        rand=rand,
        **ctx,
    )
    return {
        "ctx": ctx,
        "plaintext": plaintext,
        "nonce": nonce,
        "ciphertext": ct,
        "receiver_private": receiver_keys.private,
        "sender_public": sender_keys.public,
    }


def _open(env: dict[str, Any], **overrides: Any) -> bytes:
    args: dict[str, Any] = {
        "own_private": env["receiver_private"],
        "peer_public": env["sender_public"],
        "nonce": env["nonce"],
        "ciphertext": env["ciphertext"],
        **env["ctx"],
    }
    args.update(overrides)
    return open_share(**args)


@settings(max_examples=60, deadline=None)
@given(sealed())
def test_round_trip(env: dict[str, Any]) -> None:
    assert _open(env) == env["plaintext"]
    assert len(env["ciphertext"]) == len(env["plaintext"]) + 16


@settings(max_examples=100, deadline=None)
@given(sealed(), st.sampled_from(["round_id", "sender", "receiver", "phase"]), names)
def test_any_context_change_fails(env: dict[str, Any], which: str, replacement: str) -> None:
    if replacement == env["ctx"][which]:
        replacement += "x"
    with pytest.raises(InvalidTag):
        _open(env, **{which: replacement})


@settings(max_examples=100, deadline=None)
@given(sealed(), st.sampled_from(["nonce", "ciphertext"]), st.data())
def test_any_bit_flip_fails(env: dict[str, Any], which: str, data: st.DataObject) -> None:
    blob = bytearray(env[which])
    index = data.draw(st.integers(min_value=0, max_value=len(blob) - 1))
    bit = data.draw(st.integers(min_value=0, max_value=7))
    blob[index] ^= 1 << bit
    with pytest.raises(InvalidTag):
        _open(env, **{which: bytes(blob)})


@settings(max_examples=40, deadline=None)
@given(sealed(), st.data())
def test_truncation_or_extension_fails(env: dict[str, Any], data: st.DataObject) -> None:
    ct = env["ciphertext"]
    cut = data.draw(st.integers(min_value=0, max_value=len(ct) - 1))
    with pytest.raises(InvalidTag):
        _open(env, ciphertext=ct[:cut])
    with pytest.raises(InvalidTag):
        _open(env, ciphertext=ct + b"\x00")
