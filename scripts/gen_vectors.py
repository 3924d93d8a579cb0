"""Regenerate the committed test vectors in tests/vectors/v1/ (or check them).

    .venv/bin/python scripts/gen_vectors.py            # rewrite tests/vectors/v1/*.json
    .venv/bin/python scripts/gen_vectors.py --check    # exit 1 if any file would change

Every vector is deterministic: randomness comes from the DRBG described in each
file's ``provenance`` (SHAKE-256 over a label and a counter), never from the OS.
tests/unit/test_crypto_vectors.py replays every file against the library and
checks that this script still produces the committed bytes.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import sys
from pathlib import Path
from typing import Any

from blindsum.crypto import envelope, kex, prg, shamir
from blindsum.crypto.encoding import format_dst
from blindsum.crypto.sign import SigningKey
from blindsum.protocol import graph, params, secagg
from blindsum.types import RandFn

VECTOR_DIR = Path(__file__).resolve().parent.parent / "tests" / "vectors" / "v1"

DRBG_DESCRIPTION = (
    "rand(n) = SHAKE-256(label || counter.to_bytes(8, 'big')).digest(n); counter starts at 0 "
    "and increases by one per call"
)


def drbg(label: bytes) -> RandFn:
    """The deterministic stand-in for secrets.token_bytes used by every vector."""
    counter = itertools.count()

    def rand(n: int) -> bytes:
        return hashlib.shake_256(label + next(counter).to_bytes(8, "big")).digest(n)

    return rand


def provenance(what: str) -> dict[str, str]:
    return {
        "generator": "scripts/gen_vectors.py",
        "protocol": "blindsum/v1",
        "drbg": DRBG_DESCRIPTION,
        "description": what,
    }


def prg_vectors() -> dict[str, Any]:
    seed = bytes(range(32))
    expand_cases = []
    for label, length in (("vectors/a", 4), ("vectors/b", 4), ("vectors/a", 0)):
        dst = format_dst(label)
        out = prg.expand(seed, dst, length)
        expand_cases.append(
            {
                "seed": seed.hex(),
                "dst": dst.hex(),
                "length": length,
                "output": [f"{int(v):016x}" for v in out],
            }
        )
    b_seed = drbg(b"prg/self")(32)
    self_cases = [
        {
            "seed": b_seed.hex(),
            "round_id": "round-1",
            "party": "alice",
            "length": 5,
            "output": [
                f"{int(v):016x}"
                for v in prg.self_mask(b_seed, round_id="round-1", party="alice", length=5)
            ],
        }
    ]
    shared = drbg(b"prg/pair")(32)
    pair_cases = [
        {
            "shared_secret": shared.hex(),
            "round_id": "round-1",
            "a": "bob",
            "b": "alice",
            "length": 5,
            "output": [
                f"{int(v):016x}"
                for v in prg.pair_mask(shared, round_id="round-1", a="bob", b="alice", length=5)
            ],
        }
    ]
    return {
        "provenance": provenance(
            "PRG: HKDF-SHA256(seed, salt=None, info=dst) -> AES-256-CTR keystream from a zero "
            "counter block, read as little-endian uint64 (output words in hex)"
        ),
        "expand": expand_cases,
        "self_mask": self_cases,
        "pair_mask": pair_cases,
        "failures": [
            {
                "seed": bytes(15).hex(),
                "dst": format_dst("vectors/a").hex(),
                "length": 1,
                "error": "InvalidArgument",
                "field": "seed",
            },
        ],
    }


def shamir_vectors() -> dict[str, Any]:
    cases: list[dict[str, Any]] = []
    for label, secret, threshold, xs in (
        (b"shamir/1", bytes(range(32)), 3, [1, 2, 3, 4, 5]),
        (b"shamir/2", b"\x00" * 31 + b"\x07", 2, [3, 9, 4294967296]),
        (b"shamir/3", b"\xff" * 64, 1, [1, 2]),
    ):
        shares = shamir.split(secret, threshold=threshold, xs=xs, rand=drbg(label))
        cases.append(
            {
                "drbg_label": label.hex(),
                "secret": secret.hex(),
                "threshold": threshold,
                "xs": xs,
                "shares": {str(x): shares[x].to_bytes().hex() for x in xs},
            }
        )
    first = cases[0]
    return {
        "provenance": provenance(
            "Shamir over GF(2^521-1): coefficients are rand(80) mod P in order a_1..a_{t-1}; "
            "share y is 66 bytes big-endian"
        ),
        "split": cases,
        "failures": [
            {
                "what": "t-1 shares",
                "threshold": 3,
                "secret_len": 32,
                "shares": {k: first["shares"][k] for k in ("1", "2")},
                "error": "InvalidArgument",
                "field": "shares",
            },
            {
                "what": "share value not below P",
                "x": 1,
                "share": ((1 << 521) - 1).to_bytes(66, "big").hex(),
                "error": "InvalidArgument",
                "field": "share",
            },
        ],
    }


def _envelope_case() -> dict[str, Any]:
    rand = drbg(b"envelope")
    sender = kex.KeyPair.generate(rand)
    receiver = kex.KeyPair.generate(rand)
    ctx = {"round_id": "round-1", "sender": "alice", "receiver": "bob", "phase": "share"}
    plaintext = b"a share for bob"
    nonce, ct = envelope.seal_share(
        own_private=sender.private,
        peer_public=receiver.public,
        plaintext=plaintext,
        rand=rand,
        **ctx,
    )
    return {
        "sender_private": sender.private.hex(),
        "sender_public": sender.public.hex(),
        "receiver_private": receiver.private.hex(),
        "receiver_public": receiver.public.hex(),
        **ctx,
        "plaintext": plaintext.hex(),
        "nonce": nonce.hex(),
        "ciphertext": ct.hex(),
    }


def envelope_vectors() -> dict[str, Any]:
    case = _envelope_case()
    ct = bytes.fromhex(case["ciphertext"])
    flipped_ct = bytes([ct[0] ^ 0x01]) + ct[1:]
    nonce = bytes.fromhex(case["nonce"])
    flipped_nonce = nonce[:-1] + bytes([nonce[-1] ^ 0x80])
    failures = [
        {
            "what": "ciphertext bit flipped",
            "override": {"ciphertext": flipped_ct.hex()},
            "error": "InvalidTag",
        },
        {"what": "tag truncated", "override": {"ciphertext": ct[:-1].hex()}, "error": "InvalidTag"},
        {
            "what": "nonce changed",
            "override": {"nonce": flipped_nonce.hex()},
            "error": "InvalidTag",
        },
        {"what": "other round", "override": {"round_id": "round-2"}, "error": "InvalidTag"},
        {"what": "other sender", "override": {"sender": "carol"}, "error": "InvalidTag"},
        {"what": "other receiver", "override": {"receiver": "carol"}, "error": "InvalidTag"},
        {"what": "other phase", "override": {"phase": "unmask"}, "error": "InvalidTag"},
        {
            "what": "short nonce",
            "override": {"nonce": nonce[:11].hex()},
            "error": "InvalidArgument",
        },
    ]
    return {
        "provenance": provenance(
            "AES-256-GCM share envelope: key = HKDF-SHA256(X25519(c_u, c_v), info=format_dst("
            "'envelope/key', round, sender, receiver)); AAD = format_dst('envelope/aad', round, "
            "sender, receiver, phase); ciphertext includes the 16-byte tag. The receiver opens "
            "with receiver_private and sender_public."
        ),
        "valid": [case],
        "failures": failures,
    }


def kex_vectors() -> dict[str, Any]:
    rand = drbg(b"kex")
    a = kex.KeyPair.generate(rand)
    b = kex.KeyPair.generate(rand)
    shared = kex.agree(a.private, b.public)
    dst = format_dst("vectors/kex")
    return {
        "provenance": provenance("X25519 agreement and HKDF-SHA256 key derivation"),
        "agree": [
            {
                "private": a.private.hex(),
                "public": a.public.hex(),
                "peer_private": b.private.hex(),
                "peer_public": b.public.hex(),
                "shared": shared.hex(),
            }
        ],
        "derive_key": [
            {
                "shared": shared.hex(),
                "dst": dst.hex(),
                "length": 32,
                "key": kex.derive_key(shared, dst).hex(),
            },
            {
                "shared": shared.hex(),
                "dst": dst.hex(),
                "length": 48,
                "key": kex.derive_key(shared, dst, 48).hex(),
            },
        ],
        "failures": [
            {
                "what": "low-order point",
                "private": a.private.hex(),
                "peer_public": bytes(32).hex(),
                "error": "InvalidArgument",
                "field": "public_key",
            },
            {
                "what": "short key",
                "private": a.private.hex(),
                "peer_public": bytes(31).hex(),
                "error": "InvalidArgument",
                "field": "public_key",
            },
        ],
    }


SECAGG_INPUTS = (
    "config: round-1 / schema-1, parties p00..p09, t = 3, vector length 4, degree 4, no "
    "threat model; identity key of party p: SigningKey.generate(drbg(b'secagg/identity/' + p)); "
    "party p runs SecAggParty(config, p, identity, drbg(b'secagg/party/' + p)): commit() draws "
    "its 32-byte nonce, advertise(L) its c and s key pairs and its 32-byte self-mask seed b, in "
    "that order; every party commits and every party advertises over the full list L"
)
SECAGG_HISTORY = (
    "Issue 10 ('a roster the aggregator cannot choose', verifiable reveals) replaced the v1 "
    "transcripts in this file: the advert was signed over its keys only, the graph seed hashed "
    "the advertised keys and the consistency transcript bound neither the roster nor the whole "
    "config. The labels below end in /v2; the v1 vectors were removed with the v1 code. "
    "Issue 12 (complaints) moved the consistency transcript to consistency/v3, which adds "
    "the accused list, and added the complaint transcript."
)


def _secagg_config_doc(config: secagg.SecAggConfig) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "round_id": config.round_id,
        "schema_id": config.schema_id,
        "parties": list(config.parties),
        "threshold": config.threshold,
        "vector_length": config.vector_length,
        "graph_degree": config.graph_degree,
    }
    if config.threat is not None:
        doc["threat"] = json.loads(params.threat_to_json(config.threat))
    return doc


def secagg_vectors() -> dict[str, Any]:
    config = secagg.SecAggConfig(
        round_id="round-1",
        schema_id="schema-1",
        parties=tuple(f"p{i:02d}" for i in range(10)),
        threshold=3,
        vector_length=4,
        graph_degree=4,
    )
    identities = {
        p: SigningKey.generate(drbg(b"secagg/identity/" + p.encode())) for p in config.parties
    }
    verify_keys = {p: k.verify_key for p, k in identities.items()}
    parties = {
        p: secagg.SecAggParty(config, p, identities[p], drbg(b"secagg/party/" + p.encode()))
        for p in config.parties
    }
    commits = {p: party.commit() for p, party in parties.items()}
    adverts = {p: party.advertise(commits, verify_keys) for p, party in parties.items()}
    list_digest = secagg.commit_list_digest(config, {p: c.commitment for p, c in commits.items()})
    nonces = {p: a.nonce for p, a in adverts.items()}
    seed = secagg.graph_seed(config, list_digest, nonces)
    nbrs = graph.neighbours(config.parties, config.graph_degree, seed)
    # The roster hash has no public name: it is what SecAggParty and SecAggServer both use.
    roster_digest = secagg.roster_digest(adverts)
    binding = secagg.roster_binding(seed, roster_digest)

    me = "p00"
    advert = adverts[me]
    b_seed = bytes.fromhex(json.loads(parties[me].to_state())["b_seed"])
    # Lists given out of config order on purpose: the transcript sorts them.
    survivors = ["p05", "p00", "p01", "p02", "p04", "p06", "p07", "p09"]
    dropped = ["p08", "p03"]
    accused = ["p08"]
    consistency = secagg.consistency_transcript(config, survivors, dropped, binding, accused)
    # A complaint by p00 about the envelope p01 sent it (a made-up one: the digest is
    # all the complaint names).
    bad_envelope = secagg.SealedShare("p01", me, bytes(12), bytes(range(32)))
    bad_digest = secagg.envelope_digest(bad_envelope)
    complaint = secagg.complaint_transcript(config, binding, me, "p01", bad_digest)
    other_seed = secagg.graph_seed(config, list_digest, {**nonces, "p09": bytes(32)})

    threat_config = secagg.SecAggConfig(
        round_id="round-1",
        schema_id="schema-1",
        parties=config.parties,
        threshold=params.find(10, params.DEFAULT_THREAT_MODEL).threshold,
        vector_length=4,
        graph_degree=0,
        threat=params.DEFAULT_THREAT_MODEL,
    )
    return {
        "provenance": {
            **provenance(
                "secagg v2 transcripts: the config digest (format_dst('secagg/config/v2', every "
                "field, the threat model's fractions as repr(float))), the phase-0 commitment "
                "H('graph/commit/v2', config digest, party, nonce) and its Ed25519 signature over "
                "commit_transcript, H(L) = commit_list_digest over L in config order, the advert "
                "(signed over advert_transcript: config digest, keys, opened nonce, H(L), "
                "self-mask commitment), the graph seed H('graph/seed/v2', H(L), the nonces of L "
                "in config order) and the Harary H(k, n) it seeds (Fisher-Yates permutation from "
                "prg.expand(seed, format_dst('graph/perm'), 2n)), the roster binding "
                "H('secagg/roster-binding/v2', seed, roster hash) and the consistency-round "
                "signature over consistency_transcript ('consistency/v3', config digest, binding, "
                "|U3|, *U3, |U2 \\ U3|, *(U2 \\ U3), |accused|, *accused, lists in config "
                "order), and a complaint: the envelope digest H('secagg/share-envelope/v1', "
                "sender, receiver, nonce, ciphertext) and complaint_transcript ('complaint/v1', "
                "config digest, binding, accuser, accused, digest)"
            ),
            "inputs": SECAGG_INPUTS,
            "history": SECAGG_HISTORY,
        },
        "config": _secagg_config_doc(config),
        "config_digest": config.digest.hex(),
        "config_with_threat": {
            "config": _secagg_config_doc(threat_config),
            "digest": threat_config.digest.hex(),
        },
        "identities": {p: k.public_bytes.hex() for p, k in identities.items()},
        "commits": {
            p: {
                "nonce": nonces[p].hex(),
                "commitment": c.commitment.hex(),
                "signature": c.signature.hex(),
            }
            for p, c in commits.items()
        },
        "commit": {
            "party": me,
            "transcript": secagg.commit_transcript(config, me, commits[me].commitment).hex(),
        },
        "list_digest": list_digest.hex(),
        "adverts": {
            p: {
                "c_public": a.c_public.hex(),
                "s_public": a.s_public.hex(),
                "self_mask_commitment": a.self_mask_commitment.hex(),
                "signature": a.signature.hex(),
            }
            for p, a in adverts.items()
        },
        "advert": {
            "party": me,
            "self_mask_seed": b_seed.hex(),
            "transcript": secagg.advert_transcript(
                config,
                me,
                advert.c_public,
                advert.s_public,
                nonce=advert.nonce,
                list_digest=list_digest,
                self_mask=advert.self_mask_commitment,
            ).hex(),
        },
        "graph": {
            "seed": seed.hex(),
            "degree": config.graph_degree,
            "neighbours": {p: sorted(v) for p, v in nbrs.items()},
        },
        "roster": {"digest": roster_digest.hex(), "binding": binding.hex()},
        "consistency": {
            "identity_public": identities[me].public_bytes.hex(),
            "survivors": survivors,
            "dropped": dropped,
            "accused": accused,
            "binding": binding.hex(),
            "transcript": consistency.hex(),
            "signature": identities[me].sign(consistency).hex(),
            "failures": [
                {
                    "what": "signature checked against lists with one party moved to dropped",
                    "survivors": [p for p in survivors if p != "p09"],
                    "dropped": [*dropped, "p09"],
                    "error": "InvalidSignature",
                },
                {
                    "what": "signature checked against lists that omit a dropped party",
                    "dropped": ["p03"],
                    "error": "InvalidSignature",
                },
                {
                    "what": "signature checked against lists with no accused party",
                    "accused": [],
                    "error": "InvalidSignature",
                },
                {
                    "what": "signature checked without the roster binding (the v1 transcript)",
                    "binding": "",
                    "error": "InvalidSignature",
                },
                {
                    "what": "signature checked with the binding of another graph seed",
                    "binding": secagg.roster_binding(other_seed, roster_digest).hex(),
                    "error": "InvalidSignature",
                },
            ],
        },
        "complaint": {
            "accuser": me,
            "accused": "p01",
            "envelope": {
                "sender": bad_envelope.sender,
                "receiver": bad_envelope.receiver,
                "nonce": bad_envelope.nonce.hex(),
                "ciphertext": bad_envelope.ciphertext.hex(),
            },
            "digest": bad_digest.hex(),
            "transcript": complaint.hex(),
            "signature": identities[me].sign(complaint).hex(),
        },
        "failures": [
            {
                "what": "advert signature over another round id",
                "signed": "advert",
                "round_id": "round-2",
                "error": "InvalidSignature",
            },
            {
                "what": "commit signature over a config with another threshold",
                "signed": "commit",
                "threshold": 4,
                "error": "InvalidSignature",
            },
            {
                "what": "advert signature over the digest of another list",
                "signed": "advert",
                "list_digest": secagg.commit_list_digest(
                    config, {p: c.commitment for p, c in commits.items() if p != "p09"}
                ).hex(),
                "error": "InvalidSignature",
            },
        ],
    }


def build_vectors() -> dict[str, dict[str, Any]]:
    """Every vector file's content, keyed by file name."""
    return {
        "prg.json": prg_vectors(),
        "shamir.json": shamir_vectors(),
        "envelope.json": envelope_vectors(),
        "kex.json": kex_vectors(),
        "secagg.json": secagg_vectors(),
    }


def render(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=VECTOR_DIR, help="output directory")
    parser.add_argument("--check", action="store_true", help="fail if a file would change")
    args = parser.parse_args(argv)
    out: Path = args.out
    stale = []
    for name, doc in build_vectors().items():
        path = out / name
        text = render(doc)
        if args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(str(path))
            continue
        out.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path}")
    if stale:
        print("stale vector files: " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
