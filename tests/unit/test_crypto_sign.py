from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, generate_private_key
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from blindsum.crypto.sign import SigningKey, VerifyKey
from blindsum.errors import InvalidArgument, InvalidSignature
from tests.drbg import drbg

# RFC 8032, section 7.1, TEST 1 (empty message).
RFC_SECRET = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
RFC_PUBLIC = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
RFC_SIGNATURE = bytes.fromhex(
    "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
)


def test_rfc8032_vector() -> None:
    key = SigningKey.generate(lambda n: RFC_SECRET[:n])
    assert key.public_bytes == RFC_PUBLIC
    assert key.sign(b"") == RFC_SIGNATURE
    VerifyKey.from_bytes(RFC_PUBLIC).verify(RFC_SIGNATURE, b"")


def test_sign_verify_round_trip() -> None:
    key = SigningKey.generate(drbg(b"k"))
    sig = key.sign(b"hello")
    key.verify_key.verify(sig, b"hello")
    assert key.verify_key.raw == key.public_bytes
    assert VerifyKey.from_bytes(key.public_bytes) == key.verify_key
    assert hash(VerifyKey.from_bytes(key.public_bytes)) == hash(key.verify_key)


def test_verify_raises_on_wrong_message_key_or_signature() -> None:
    key = SigningKey.generate(drbg(b"k"))
    other = SigningKey.generate(drbg(b"other"))
    sig = key.sign(b"hello")
    with pytest.raises(InvalidSignature):
        key.verify_key.verify(sig, b"hellO")
    with pytest.raises(InvalidSignature):
        other.verify_key.verify(sig, b"hello")
    tampered = bytes([sig[0] ^ 1]) + sig[1:]
    with pytest.raises(InvalidSignature):
        key.verify_key.verify(tampered, b"hello")
    with pytest.raises(InvalidSignature) as info:
        key.verify_key.verify(sig[:-1], b"hello")
    assert info.value.field == "signature"


def test_verify_returns_none_not_bool() -> None:
    key = SigningKey.generate(drbg(b"k"))
    result = key.verify_key.verify(key.sign(b"m"), b"m")  # type: ignore[func-returns-value]  # checking the contract
    assert result is None


def test_pem_round_trip() -> None:
    key = SigningKey.generate(drbg(b"pem"))
    pem = key.to_pem()
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    loaded = SigningKey.from_pem(pem)
    assert loaded.public_bytes == key.public_bytes
    loaded.verify_key.verify(key.sign(b"x"), b"x")


def test_from_pem_rejects_garbage_and_other_key_types() -> None:
    with pytest.raises(InvalidArgument) as info:
        SigningKey.from_pem(b"-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n")
    assert info.value.field == "private_key"
    ec_pem = generate_private_key(SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(InvalidArgument):
        SigningKey.from_pem(ec_pem)
    encrypted = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"pw"),
    )
    with pytest.raises(InvalidArgument):
        SigningKey.from_pem(encrypted)


def test_private_key_not_in_repr() -> None:
    key = SigningKey.generate(lambda n: RFC_SECRET[:n])
    text = repr(key) + str(key)
    assert RFC_SECRET.hex() not in text
    assert RFC_PUBLIC.hex() in text


def test_from_public_key_and_bad_bytes() -> None:
    raw_key = Ed25519PrivateKey.generate().public_key()
    assert VerifyKey.from_public_key(raw_key).raw == raw_key.public_bytes_raw()
    with pytest.raises(InvalidArgument) as info:
        VerifyKey.from_bytes(bytes(31))
    assert info.value.field == "public_key"
