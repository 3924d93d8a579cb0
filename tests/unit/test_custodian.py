"""The custodian decrypts only what k enrolled parties vouched for, once per round."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from aggregator.custodian import Custodian
from aggregator.store import open_store
from blindsum.crypto.he import BfvSecretContext
from blindsum.crypto.sign import SigningKey
from blindsum.errors import InvalidArgument, InvalidSignature, PermissionDenied
from blindsum.protocol.he import (
    HeAccumulator,
    ReceiptRecord,
    ciphertext_digest,
    context_hash,
    decrypt_request_digest,
    make_receipt,
    result_transcript,
)
from blindsum.schema import Schema
from blindsum.transport.pki import Identity, KeyAndCert, Role, create_ca, issue_identity_cert

#: A one-region schema of 4 slots (3 bins and the contributor indicator): the custodian
#: takes the vector length from the schema, which must hash to the round's schema id.
SCHEMA_TOML = """
[campaign]
name = "custodian-test"
version = 1
max_parties = 10
max_tickets_per_region = 1000
per_customer_cap = 5
max_parties_per_customer = 1
min_cell = 1

regions = ["R"]

[[metrics]]
name = "h"
dp_weight = 1
kind = "histogram"
edges = [0, 1, 2, 3]
"""
SCHEMA = Schema.from_toml(SCHEMA_TOML)
SID = SCHEMA.schema_id


@pytest.fixture(scope="module")
def secret() -> BfvSecretContext:
    return BfvSecretContext.generate()


class World:
    def __init__(self, tmp: Path, secret: BfvSecretContext) -> None:
        self.ca: KeyAndCert = create_ca()
        self.store = open_store("sqlite:///custodian.sqlite", base_dir=tmp, create=True)
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
        self.ctx = context_hash(secret.public_bytes())

    def party(self, name: str, *, register: bool = True) -> SigningKey:
        key = SigningKey.generate(secrets.token_bytes)
        cert = issue_identity_cert(self.ca, Identity(Role.PARTY, name), key.public_bytes)
        if register:
            self.store.enroll(name, cert)
        self.keys[name] = key
        return key

    def submit(self, acc: HeAccumulator, name: str, values: list[int]) -> ReceiptRecord:
        chunks = self.public.encrypt(values)
        sig = make_receipt(
            self.keys[name], round_id="r1", schema_id=SID, chunks=chunks, context=self.ctx
        )
        return acc.add(name, chunks, sig)


def test_decrypts_a_receipted_sum_once_and_signs_it(
    tmp_path: Path, secret: BfvSecretContext
) -> None:
    w = World(tmp_path, secret)
    outcomes: list[str] = []
    w.custodian.on_decrypt = outcomes.append  # what the metrics count (issue 13)
    acc = HeAccumulator("r1", SID, w.public, 4)
    for i, name in enumerate(("a", "b", "c")):
        w.party(name)
        w.submit(acc, name, [i, 10 * i, -i, 7])
    kw = dict(
        round_id="r1",
        schema_id=SID,
        chunks=acc.aggregate(),
        receipts=acc.receipts(),
        vector_length=4,
        min_receipts=3,
        schema_toml=SCHEMA_TOML,
    )
    values, sig = w.custodian.decrypt(**kw)  # type: ignore[arg-type]
    assert values == [3, 30, -3, 21]
    parties = ["a", "b", "c"]
    digest = decrypt_request_digest("r1", SID, 4, acc.aggregate(), parties)
    transcript = result_transcript(
        "r1", SID, values, receipt_parties=parties, request_digest=digest
    )
    w.signing.verify_key.verify(sig, transcript)
    # The signed result names its receipts and its request: it cannot be passed off as
    # the decryption of another receipt set or another aggregate.
    for other_parties, other_digest in (
        (["a", "b"], digest),
        (parties, decrypt_request_digest("r1", SID, 4, [b"x"], parties)),
    ):
        with pytest.raises(InvalidSignature):
            w.signing.verify_key.verify(
                sig,
                result_transcript(
                    "r1", SID, values, receipt_parties=other_parties, request_digest=other_digest
                ),
            )
    # An identical retry gets the same answer; a second, different aggregate is refused.
    assert w.custodian.decrypt(**kw) == (values, sig)  # type: ignore[arg-type]
    other = HeAccumulator("r1", SID, w.public, 4)
    for name in ("a", "b", "c"):
        w.submit(other, name, [1, 1, 1, 1])
    with pytest.raises(PermissionDenied, match="already decrypted"):
        w.custodian.decrypt(**{**kw, "chunks": other.aggregate(), "receipts": other.receipts()})  # type: ignore[arg-type]
    assert [e[2] for e in w.store.audit_log("r1")] == ["decrypted", "decrypt_refused"]
    assert outcomes == ["decrypted", "replayed", "refused"]


def test_refuses_fewer_than_its_own_floor_of_receipts(
    tmp_path: Path, secret: BfvSecretContext
) -> None:
    w = World(tmp_path, secret)
    acc = HeAccumulator("r1", SID, w.public, 4)
    for name in ("a", "b"):
        w.party(name)
        w.submit(acc, name, [1, 2, 0, 0])
    with pytest.raises(PermissionDenied, match="3 required"):
        # The aggregator asks for k = 1; the custodian's own floor of 3 wins.
        w.custodian.decrypt(
            round_id="r1",
            schema_id=SID,
            chunks=acc.aggregate(),
            receipts=acc.receipts(),
            vector_length=4,
            min_receipts=1,
            schema_toml=SCHEMA_TOML,
        )


def test_refuses_parties_missing_from_its_own_registry(
    tmp_path: Path, secret: BfvSecretContext
) -> None:
    w = World(tmp_path, secret)
    acc = HeAccumulator("r1", SID, w.public, 4)
    w.party("a")
    w.party("b")
    w.party("sybil", register=False)  # a valid CA certificate, but never enrolled here
    for name in ("a", "b", "sybil"):
        w.submit(acc, name, [1, 2, 0, 0])
    with pytest.raises(PermissionDenied, match="not enrolled with the custodian"):
        w.custodian.decrypt(
            round_id="r1",
            schema_id=SID,
            chunks=acc.aggregate(),
            receipts=acc.receipts(),
            vector_length=4,
            min_receipts=3,
            schema_toml=SCHEMA_TOML,
        )
    assert w.store.submissions("r1", "decrypt") == []


def test_refuses_revoked_parties_and_forged_receipts(
    tmp_path: Path, secret: BfvSecretContext
) -> None:
    w = World(tmp_path, secret)
    acc = HeAccumulator("r1", SID, w.public, 4)
    for name in ("a", "b", "c"):
        w.party(name)
        w.submit(acc, name, [1, 2, 0, 0])
    w.store.revoke("c")
    with pytest.raises(PermissionDenied, match="revoked"):
        w.custodian.decrypt(
            round_id="r1",
            schema_id=SID,
            chunks=acc.aggregate(),
            receipts=acc.receipts(),
            vector_length=4,
            min_receipts=3,
            schema_toml=SCHEMA_TOML,
        )
    (tmp_path / "2").mkdir()
    w2 = World(tmp_path / "2", secret)
    acc2 = HeAccumulator("r1", SID, w2.public, 4)
    for name in ("a", "b", "c"):
        w2.party(name)
        w2.submit(acc2, name, [1, 2, 0, 0])
    forged = [
        *acc2.receipts()[:2],
        ReceiptRecord("c", ciphertext_digest([b"x"]), acc2.receipts()[2].signature),
    ]
    with pytest.raises(InvalidSignature, match="receipts"):
        w2.custodian.decrypt(
            round_id="r1",
            schema_id=SID,
            chunks=acc2.aggregate(),
            receipts=forged,
            vector_length=4,
            min_receipts=3,
            schema_toml=SCHEMA_TOML,
        )


def test_one_decryption_cannot_open_several_parties_ciphertexts(
    tmp_path: Path, secret: BfvSecretContext
) -> None:
    """The review's attack: three parties' own ciphertexts laid side by side as the
    chunks of one long "aggregate", with the vector length (and TenSEAL's size field)
    claiming a longer vector, so that one decryption returns all three inputs."""
    w = World(tmp_path, secret)
    acc = HeAccumulator("r1", SID, w.public, 4)
    singles: list[bytes] = []
    for i, name in enumerate(("a", "b", "c")):
        w.party(name)
        chunks = w.public.encrypt([i, 1, 2, 3])
        singles += chunks
        sig = make_receipt(w.keys[name], round_id="r1", schema_id=SID, chunks=chunks, context=w.ctx)
        acc.add(name, chunks, sig)
    base = dict(
        round_id="r1",
        schema_id=SID,
        receipts=acc.receipts(),
        min_receipts=3,
        schema_toml=SCHEMA_TOML,
    )
    # The aggregator's length is not the schema's: refused before anything is parsed.
    with pytest.raises(PermissionDenied, match="vector_length 12 is not the schema's 4"):
        w.custodian.decrypt(chunks=singles, vector_length=12, **base)  # type: ignore[arg-type]
    # The schema's length with three chunks: one ciphertext is expected.
    with pytest.raises(InvalidArgument, match="chunks"):
        w.custodian.decrypt(chunks=singles, vector_length=4, **base)  # type: ignore[arg-type]
    # A schema text that is not the round's (its hash differs) is refused too.
    longer = SCHEMA_TOML.replace(
        "edges = [0, 1, 2, 3]", "edges = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]"
    )
    with pytest.raises(PermissionDenied, match="does not hash to schema_id"):
        w.custodian.decrypt(
            chunks=singles,
            vector_length=12,
            **{**base, "schema_toml": longer},  # type: ignore[arg-type]
        )
    assert w.store.submissions("r1", "decrypt") == []
    # The real aggregate still decrypts.
    values, _ = w.custodian.decrypt(chunks=acc.aggregate(), vector_length=4, **base)  # type: ignore[arg-type]
    assert values == [3, 3, 6, 9]
