"""The custodian decrypts only what k enrolled parties vouched for, once per round."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from aggregator.custodian import Custodian
from aggregator.store import open_store
from blindsum.crypto.he import BfvSecretContext
from blindsum.crypto.sign import SigningKey
from blindsum.errors import InvalidSignature, PermissionDenied
from blindsum.protocol.he import (
    HeAccumulator,
    ReceiptRecord,
    ciphertext_digest,
    make_receipt,
    result_transcript,
)
from blindsum.transport.pki import Identity, KeyAndCert, Role, create_ca, issue_identity_cert


@pytest.fixture(scope="module")
def secret() -> BfvSecretContext:
    return BfvSecretContext.generate()


class World:
    def __init__(self, tmp: Path, secret: BfvSecretContext) -> None:
        self.ca: KeyAndCert = create_ca()
        self.store = open_store("sqlite:///custodian.sqlite", base_dir=tmp)
        self.signing = SigningKey.generate(secrets.token_bytes)
        self.custodian = Custodian(
            secret=secret,
            signing_key=self.signing,
            ca_cert_pem=self.ca.cert_pem,
            store=self.store,
            min_receipts=3,
        )
        self.keys: dict[str, SigningKey] = {}
        self.public = secret.public()

    def party(self, name: str, *, register: bool = True) -> SigningKey:
        key = SigningKey.generate(secrets.token_bytes)
        cert = issue_identity_cert(self.ca, Identity(Role.PARTY, name), key.public_bytes)
        if register:
            self.store.enroll(name, cert)
        self.keys[name] = key
        return key

    def submit(self, acc: HeAccumulator, name: str, values: list[int]) -> ReceiptRecord:
        chunks = self.public.encrypt(values)
        sig = make_receipt(self.keys[name], round_id="r1", schema_id="s", chunks=chunks)
        return acc.add(name, chunks, sig)


def test_decrypts_a_receipted_sum_once_and_signs_it(
    tmp_path: Path, secret: BfvSecretContext
) -> None:
    w = World(tmp_path, secret)
    acc = HeAccumulator("r1", "s", w.public, 4)
    for i, name in enumerate(("a", "b", "c")):
        w.party(name)
        w.submit(acc, name, [i, 10 * i, -i, 7])
    kw = dict(
        round_id="r1",
        schema_id="s",
        chunks=acc.aggregate(),
        receipts=acc.receipts(),
        vector_length=4,
        min_receipts=3,
    )
    values, sig = w.custodian.decrypt(**kw)  # type: ignore[arg-type]
    assert values == [3, 30, -3, 21]
    w.signing.verify_key.verify(sig, result_transcript("r1", "s", values))
    # An identical retry gets the same answer; a second, different aggregate is refused.
    assert w.custodian.decrypt(**kw) == (values, sig)  # type: ignore[arg-type]
    other = HeAccumulator("r1", "s", w.public, 4)
    for name in ("a", "b", "c"):
        w.submit(other, name, [1, 1, 1, 1])
    with pytest.raises(PermissionDenied, match="already decrypted"):
        w.custodian.decrypt(**{**kw, "chunks": other.aggregate(), "receipts": other.receipts()})  # type: ignore[arg-type]
    assert [e[2] for e in w.store.audit_log("r1")] == ["decrypted", "decrypt_refused"]


def test_refuses_fewer_than_its_own_floor_of_receipts(
    tmp_path: Path, secret: BfvSecretContext
) -> None:
    w = World(tmp_path, secret)
    acc = HeAccumulator("r1", "s", w.public, 2)
    for name in ("a", "b"):
        w.party(name)
        w.submit(acc, name, [1, 2])
    with pytest.raises(PermissionDenied, match="3 required"):
        # The aggregator asks for k = 1; the custodian's own floor of 3 wins.
        w.custodian.decrypt(
            round_id="r1",
            schema_id="s",
            chunks=acc.aggregate(),
            receipts=acc.receipts(),
            vector_length=2,
            min_receipts=1,
        )


def test_refuses_parties_missing_from_its_own_registry(
    tmp_path: Path, secret: BfvSecretContext
) -> None:
    w = World(tmp_path, secret)
    acc = HeAccumulator("r1", "s", w.public, 2)
    w.party("a")
    w.party("b")
    w.party("sybil", register=False)  # a valid CA certificate, but never enrolled here
    for name in ("a", "b", "sybil"):
        w.submit(acc, name, [1, 2])
    with pytest.raises(PermissionDenied, match="not enrolled with the custodian"):
        w.custodian.decrypt(
            round_id="r1",
            schema_id="s",
            chunks=acc.aggregate(),
            receipts=acc.receipts(),
            vector_length=2,
            min_receipts=3,
        )
    assert w.store.submissions("r1", "decrypt") == []


def test_refuses_revoked_parties_and_forged_receipts(
    tmp_path: Path, secret: BfvSecretContext
) -> None:
    w = World(tmp_path, secret)
    acc = HeAccumulator("r1", "s", w.public, 2)
    for name in ("a", "b", "c"):
        w.party(name)
        w.submit(acc, name, [1, 2])
    w.store.revoke("c")
    with pytest.raises(PermissionDenied, match="revoked"):
        w.custodian.decrypt(
            round_id="r1",
            schema_id="s",
            chunks=acc.aggregate(),
            receipts=acc.receipts(),
            vector_length=2,
            min_receipts=3,
        )
    (tmp_path / "2").mkdir()
    w2 = World(tmp_path / "2", secret)
    acc2 = HeAccumulator("r1", "s", w2.public, 2)
    for name in ("a", "b", "c"):
        w2.party(name)
        w2.submit(acc2, name, [1, 2])
    forged = [
        *acc2.receipts()[:2],
        ReceiptRecord("c", ciphertext_digest([b"x"]), acc2.receipts()[2].signature),
    ]
    with pytest.raises(InvalidSignature, match="receipts"):
        w2.custodian.decrypt(
            round_id="r1",
            schema_id="s",
            chunks=acc2.aggregate(),
            receipts=forged,
            vector_length=2,
            min_receipts=3,
        )
