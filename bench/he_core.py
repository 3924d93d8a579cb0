"""he-core: encrypt, sum and decrypt in one process, through blindsum's own code paths.

- Party: :func:`~blindsum.crypto.he.to_centred`, ``BfvPublicContext.encrypt`` (which
  serializes the chunks it sends) and the receipt signature, as ``party/node.py`` does.
- Aggregator: :class:`~blindsum.protocol.he.HeAccumulator` ``add`` with the receipt
  check, as the round service calls it (the store checkpoint is the service's cost).
- Custodian: :meth:`aggregator.custodian.Custodian.decrypt`, with its registry in a
  temporary SQLite store: the receipt and certificate checks, then the BFV decryption.

Baseline ``raw-tenseal``: TenSEAL alone with the same parameters and vectors (a BFV
context, ``bfv_vector``, in-place ``+=``, ``decrypt``), all in memory. Serializing and
parsing are reported beside it but are not in its totals: they are the price of
sending ciphertexts anywhere, which blindsum pays and an in-memory floor does not.

Encrypting is the slow part, so ``DISTINCT_INPUTS`` parties encrypt (and are timed);
the other parties submit copies of those ciphertexts under their own receipts, which
costs the aggregator and the custodian exactly as much as fresh ones.
"""

from __future__ import annotations

import math
import secrets
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tenseal as ts

from aggregator.custodian import Custodian
from aggregator.store import open_store
from bench.common import (
    Result,
    Stopwatch,
    format_table,
    parse_scenario_args,
    ratio,
    result_row,
    skipped,
)
from blindsum.crypto.he import BfvPublicContext, BfvSecretContext, to_centred
from blindsum.crypto.sign import SigningKey
from blindsum.protocol.he import HeAccumulator, context_hash, make_receipt
from blindsum.rpc.v1 import round_pb2
from blindsum.schema import Schema
from blindsum.transport.pki import Identity, Role, create_ca, issue_identity_cert
from blindsum.types import U64Vector

SCENARIO = "he-core"
ROUND_ID = "bench-he-0001"
SCHEMA_ID = "bench-schema"

FULL_GRID: tuple[tuple[int, int], ...] = tuple(
    (n, m) for n in (10, 100, 1000) for m in (4096, 16384)
)
QUICK_GRID: tuple[tuple[int, int], ...] = ((10, 4096), (10, 16384), (100, 4096), (100, 16384))
#: Quick mode stops starting new grid points after this many seconds.
QUICK_BUDGET_S = 120.0
#: Parties that really encrypt (and are timed); the rest reuse their ciphertexts.
DISTINCT_INPUTS = 16
#: Inputs are drawn from [0, VALUE_BOUND): sums of 1000 parties stay far below p / 2.
VALUE_BOUND = 1000

#: Headline metrics of this scenario's table rows (``python -m bench`` reads it).
KEY_METRICS = ("party_total_s", "server_add_s", "custodian_decrypt_s", "party_sent_bytes")


@dataclass(frozen=True)
class Inputs:
    """The distinct party vectors and the expected sum over ``n`` cyclic submissions."""

    vectors: list[U64Vector]
    expected: list[int]


def make_inputs(n: int, m: int, *, seed: int, distinct: int) -> Inputs:
    """``min(n, distinct)`` vectors; party i submits vector ``i % len(vectors)``."""
    rng = np.random.default_rng(seed)
    count = min(n, distinct)
    vectors = [
        rng.integers(0, VALUE_BOUND, size=m, dtype=np.uint64, endpoint=False) for _ in range(count)
    ]
    total = np.zeros(m, dtype=np.int64)
    for i in range(n):
        total += vectors[i % count].astype(np.int64)
    return Inputs(vectors, [int(v) for v in total])


# --------------------------------------------------------------------------- one round


@dataclass
class Encrypted:
    """What the timed parties produced, for both systems."""

    ours: list[list[bytes]]  # blindsum: serialized chunks per distinct party
    sent_bytes: list[int]  # SubmitCiphertextRequest size per distinct party
    raw: list[list[Any]]  # TenSEAL BFVVector objects per distinct party


def encrypt_parties(
    public: BfvPublicContext,
    keys: Sequence[SigningKey],
    raw_ctx: Any,
    inputs: Inputs,
    ours_sw: Stopwatch,
    raw_sw: Stopwatch,
) -> Encrypted:
    """Each distinct party encrypts its vector with blindsum and then with raw TenSEAL,
    back to back, so both systems see the same load on a shared machine."""
    slots = public.params.slots
    ctx = context_hash(public.to_bytes())
    out = Encrypted([], [], [])
    for key, x in zip(keys, inputs.vectors, strict=False):
        with ours_sw.phase("encrypt"):
            chunks = public.encrypt(to_centred(x))
        with ours_sw.phase("receipt"):
            signature = make_receipt(
                key, round_id=ROUND_ID, schema_id=SCHEMA_ID, chunks=chunks, context=ctx
            )
        request = round_pb2.SubmitCiphertextRequest(
            round_id=ROUND_ID,
            schema_id=SCHEMA_ID,
            chunks=chunks,
            receipt_signature=signature,
            context_hash=ctx,
        )
        out.ours.append(chunks)
        out.sent_bytes.append(request.ByteSize())
        with raw_sw.phase("encrypt"):
            values = x.tolist()
            vecs = [
                ts.bfv_vector(raw_ctx, values[i : i + slots]) for i in range(0, len(values), slots)
            ]
        with raw_sw.phase("serialize"):
            blobs = [v.serialize() for v in vecs]
        with raw_sw.phase("deserialize"):
            for blob in blobs:
                ts.bfv_vector_from(raw_ctx, blob)
        out.raw.append(vecs)
    return out


def schema_of_length(m: int) -> tuple[Schema, str]:
    """A one-region schema whose vector has exactly ``m`` slots (``m - 1`` data slots and
    the contributor indicator): the custodian takes the vector length from the schema."""
    lines = [
        "[campaign]",
        'name = "bench-he"',
        "version = 1",
        "max_parties = 100000",
        "max_tickets_per_region = 1000",
        "per_customer_cap = 5",
        "max_parties_per_customer = 1",
        "min_cell = 1",
        'regions = ["R"]',
    ]
    left, i = m - 1, 0
    while left > 0:
        bins = min(4096, left)
        lines += ["[[metrics]]", f'name = "m{i}"', "dp_weight = 1"]
        if bins == 1:
            lines.append('kind = "count"')
        else:
            lines += ['kind = "histogram"', f"edges = [{', '.join(map(str, range(bins + 1)))}]"]
        left, i = left - bins, i + 1
    text = "\n".join(lines) + "\n"
    schema = Schema.from_toml(text)
    if schema.vector_length != m:  # pragma: no cover - the layout above is exact
        raise RuntimeError(f"schema has {schema.vector_length} slots, wanted {m}")
    return schema, text


def aggregate_and_decrypt(
    secret: BfvSecretContext,
    names: Sequence[str],
    keys: Sequence[SigningKey],
    encrypted: Encrypted,
    m: int,
    sw: Stopwatch,
) -> tuple[list[int], list[int], int]:
    """The aggregator's HeAccumulator over every party, then the custodian's decrypt.

    Returns (the custodian's values, a second plain BFV decryption, the chunk count).
    """
    n = len(names)
    ca = create_ca()
    with tempfile.TemporaryDirectory(prefix="blindsum-bench-") as tmp:
        store = open_store("sqlite:///custodian.sqlite", base_dir=Path(tmp), create=True)
        try:
            with store.transaction():
                for p, key in zip(names, keys, strict=True):
                    store.enroll(
                        p, issue_identity_cert(ca, Identity(Role.PARTY, p), key.public_bytes)
                    )
            custodian = Custodian(
                secret=secret,
                signing_key=SigningKey.generate(secrets.token_bytes),
                ca_cert_pem=ca.cert_pem,
                store=store,
                min_receipts=min(3, n),
            )
            schema, schema_toml = schema_of_length(m)
            schema_id = schema.schema_id
            submissions = []
            for i, (p, key) in enumerate(zip(names, keys, strict=True)):
                chunks = encrypted.ours[i % len(encrypted.ours)]
                signature = make_receipt(
                    key,
                    round_id=ROUND_ID,
                    schema_id=schema_id,
                    chunks=chunks,
                    context=context_hash(secret.public_bytes()),
                )
                submissions.append((p, chunks, signature, key.verify_key))
            acc = HeAccumulator(ROUND_ID, schema_id, secret.public(), m)
            for p, chunks, signature, verify_key in submissions:
                with sw.phase("add"):
                    acc.add(p, chunks, signature, verify_key=verify_key)
            aggregate = acc.aggregate()
            with sw.phase("custodian_decrypt"):
                values, _ = custodian.decrypt(
                    round_id=ROUND_ID,
                    schema_id=schema_id,
                    chunks=aggregate,
                    receipts=acc.receipts(),
                    vector_length=m,
                    min_receipts=n,
                    schema_toml=schema_toml,
                )
            with sw.phase("bfv_decrypt"):
                again = secret.decrypt(aggregate, m)
        finally:
            store.close()
    return values, again, len(aggregate)


def raw_sum_and_decrypt(raw: Sequence[Sequence[Any]], n: int, sw: Stopwatch) -> list[int]:
    """TenSEAL alone: n in-memory additions (cycling the distinct ciphertexts), decrypt."""
    with sw.phase("add"):
        # The first sum makes new vectors (so no party's ciphertext is modified); the
        # rest add in place. BFVVector.copy() would also copy the context: far slower.
        acc = list(raw[0])
        for i in range(1, n):
            other = raw[i % len(raw)]
            if i == 1:
                acc = [a + b for a, b in zip(acc, other, strict=True)]
                continue
            for j, b in enumerate(other):
                acc[j] += b
    with sw.phase("decrypt"):
        return [int(v) for vec in acc for v in vec.decrypt()]


# --------------------------------------------------------------------------- results


def run_config(
    n: int,
    m: int,
    *,
    secret: BfvSecretContext | None = None,
    seed: int = 1,
    distinct: int = DISTINCT_INPUTS,
) -> list[Result]:
    """One grid point: blindsum and raw TenSEAL on the same vectors, with ratios."""
    secret = secret if secret is not None else BfvSecretContext.generate()
    params_bfv = secret.params
    inputs = make_inputs(n, m, seed=seed, distinct=distinct)
    names = [f"party-{i:04d}" for i in range(n)]
    keys = [SigningKey.generate(secrets.token_bytes) for _ in names]
    raw_ctx = ts.context(
        ts.SCHEME_TYPE.BFV,
        poly_modulus_degree=params_bfv.poly_modulus_degree,
        plain_modulus=params_bfv.plain_modulus,
    )
    ours_party, raw_party, ours_server, raw_server = (
        Stopwatch(),
        Stopwatch(),
        Stopwatch(),
        Stopwatch(),
    )
    encrypted = encrypt_parties(secret.public(), keys, raw_ctx, inputs, ours_party, raw_party)
    values, again, chunks = aggregate_and_decrypt(secret, names, keys, encrypted, m, ours_server)
    raw_values = raw_sum_and_decrypt(encrypted.raw, n, raw_server)

    party_total = ours_party.mean("encrypt") + ours_party.mean("receipt")
    add_s = ours_server.seconds["add"]
    decrypt_s = ours_server.seconds["custodian_decrypt"]
    ours_round = n * party_total + add_s + decrypt_s
    raw_encrypt = raw_party.mean("encrypt")
    raw_add, raw_decrypt = raw_server.seconds["add"], raw_server.seconds["decrypt"]
    raw_round = n * raw_encrypt + raw_add + raw_decrypt
    plaintext = 8 * m
    mean_sent = sum(encrypted.sent_bytes) / len(encrypted.sent_bytes)
    params: dict[str, Any] = {"n": n, "m": m, "mode": "he", "distinct_inputs": len(inputs.vectors)}
    ours = {
        "party_total_s": party_total,
        "server_add_s": add_s,
        "custodian_decrypt_s": decrypt_s,
        "party_sent_bytes": mean_sent,
        "party_encrypt_s": ours_party.mean("encrypt"),
        "party_receipt_s": ours_party.mean("receipt"),
        "server_add_per_party_s": add_s / n,
        "bfv_decrypt_s": ours_server.seconds["bfv_decrypt"],
        "round_compute_s": ours_round,
        "plaintext_bytes": float(plaintext),
        "chunks": float(chunks),
        "sum_ok": float(values == inputs.expected and again == inputs.expected),
        "party_vs_raw_ratio": ratio(party_total, raw_encrypt),
        "sum_vs_raw_ratio": ratio(add_s, raw_add),
        "decrypt_vs_raw_ratio": ratio(decrypt_s, raw_decrypt),
        "round_vs_raw_ratio": ratio(ours_round, raw_round),
        "bytes_vs_plaintext_ratio": ratio(mean_sent, plaintext),
    }
    raw = {
        "party_encrypt_s": raw_encrypt,
        "server_add_s": raw_add,
        "decrypt_s": raw_decrypt,
        "round_compute_s": raw_round,
        "party_serialize_s": raw_party.mean("serialize"),
        "server_deserialize_per_party_s": raw_party.mean("deserialize"),
        "sum_ok": float(raw_values == inputs.expected),
    }
    return [
        Result(SCENARIO, "blindsum", params, ours),
        Result(SCENARIO, "raw-tenseal", dict(params), raw),
    ]


def run_grid(
    grid: Sequence[tuple[int, int]],
    *,
    budget_s: float = math.inf,
    progress: Callable[[str], None] | None = None,
) -> list[Result]:
    """Run the grid points with one custodian key; once ``budget_s`` is spent, later
    points are recorded as skipped rather than run."""
    secret = BfvSecretContext.generate()
    results: list[Result] = []
    start = time.perf_counter()
    for i, (n, m) in enumerate(grid):
        spent = time.perf_counter() - start
        if spent > budget_s:
            reason = f"quick-mode time cap: {spent:.0f}s spent of {budget_s:.0f}s"
            results.append(skipped(SCENARIO, "blindsum", {"n": n, "m": m, "mode": "he"}, reason))
            continue
        if progress is not None:
            progress(f"{SCENARIO}: n={n} m={m}")
        results.extend(run_config(n, m, secret=secret, seed=2000 + i))
    return results


def _progress(message: str) -> None:
    print(f"  .. {message}", file=sys.stderr, flush=True)


def run(quick: bool) -> list[Result]:
    """The he-core scenario over the quick or the full grid."""
    if quick:
        return run_grid(QUICK_GRID, budget_s=QUICK_BUDGET_S, progress=_progress)
    return run_grid(FULL_GRID, progress=_progress)


def main(argv: Sequence[str]) -> int:
    """``python -m bench he-core [--parties N] [--length M] [--full]``."""
    args = parse_scenario_args(argv, "python -m bench he-core")
    if args.mode not in (None, "he"):
        print("he-core runs he only", file=sys.stderr)
        return 2
    if args.parties is None and args.length is None:
        results = run(quick=not args.full)
    else:
        results = run_grid([(args.parties or 100, args.length or 16384)], progress=_progress)
    print(format_table([result_row(r, KEY_METRICS) for r in results]))
    return 0
