"""Replay the committed vectors in tests/vectors/v1 (see scripts/gen_vectors.py)."""

from __future__ import annotations

import dataclasses
import importlib.util
import itertools
import json
from pathlib import Path
from typing import Any

import pytest

from blindsum import errors
from blindsum.crypto import envelope, kex, prg, shamir
from blindsum.crypto.sign import VerifyKey
from blindsum.protocol import graph, params, secagg
from tests.drbg import drbg

ROOT = Path(__file__).resolve().parents[2]
VECTORS = ROOT / "tests" / "vectors" / "v1"


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((VECTORS / name).read_text(encoding="utf-8"))
    assert data["provenance"]["generator"] == "scripts/gen_vectors.py"
    return data


def words(vec: Any) -> list[str]:
    return [f"{int(v):016x}" for v in vec]


def error_class(name: str) -> type[Exception]:
    cls = getattr(errors, name)
    assert isinstance(cls, type) and issubclass(cls, errors.BlindsumError)
    return cls


def test_generator_reproduces_committed_files() -> None:
    spec = importlib.util.spec_from_file_location(
        "gen_vectors", ROOT / "scripts" / "gen_vectors.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    built = module.build_vectors()
    assert sorted(built) == sorted(p.name for p in VECTORS.glob("*.json"))
    for name, doc in built.items():
        assert module.render(doc) == (VECTORS / name).read_text(encoding="utf-8"), name


def test_prg_vectors() -> None:
    v = load("prg.json")
    for case in v["expand"]:
        out = prg.expand(bytes.fromhex(case["seed"]), bytes.fromhex(case["dst"]), case["length"])
        assert words(out) == case["output"]
    for case in v["self_mask"]:
        out = prg.self_mask(
            bytes.fromhex(case["seed"]),
            round_id=case["round_id"],
            party=case["party"],
            length=case["length"],
        )
        assert words(out) == case["output"]
    for case in v["pair_mask"]:
        args = {"round_id": case["round_id"], "length": case["length"]}
        secret = bytes.fromhex(case["shared_secret"])
        assert words(prg.pair_mask(secret, a=case["a"], b=case["b"], **args)) == case["output"]
        assert words(prg.pair_mask(secret, a=case["b"], b=case["a"], **args)) == case["output"]
    for case in v["failures"]:
        with pytest.raises(error_class(case["error"])) as info:
            prg.expand(bytes.fromhex(case["seed"]), bytes.fromhex(case["dst"]), case["length"])
        assert getattr(info.value, "field", None) == case["field"]


def test_shamir_vectors() -> None:
    v = load("shamir.json")
    for case in v["split"]:
        secret = bytes.fromhex(case["secret"])
        shares = shamir.split(
            secret,
            threshold=case["threshold"],
            xs=case["xs"],
            rand=drbg(bytes.fromhex(case["drbg_label"])),
        )
        assert {str(x): s.to_bytes().hex() for x, s in shares.items()} == case["shares"]
        parsed = [
            shamir.Share.from_bytes(int(x), bytes.fromhex(y)) for x, y in case["shares"].items()
        ]
        t = case["threshold"]
        for subset in itertools.combinations(parsed, t):
            assert shamir.reconstruct(subset, threshold=t, secret_len=len(secret)) == secret
    too_few, bad_share = v["failures"]
    with pytest.raises(error_class(too_few["error"])) as info:
        shamir.reconstruct(
            [
                shamir.Share.from_bytes(int(x), bytes.fromhex(y))
                for x, y in too_few["shares"].items()
            ],
            threshold=too_few["threshold"],
            secret_len=too_few["secret_len"],
        )
    assert getattr(info.value, "field", None) == too_few["field"]
    with pytest.raises(error_class(bad_share["error"])) as info:
        shamir.Share.from_bytes(bad_share["x"], bytes.fromhex(bad_share["share"]))
    assert getattr(info.value, "field", None) == bad_share["field"]


def _open(case: dict[str, Any]) -> bytes:
    return envelope.open_share(
        own_private=bytes.fromhex(case["receiver_private"]),
        peer_public=bytes.fromhex(case["sender_public"]),
        round_id=case["round_id"],
        sender=case["sender"],
        receiver=case["receiver"],
        phase=case["phase"],
        nonce=bytes.fromhex(case["nonce"]),
        ciphertext=bytes.fromhex(case["ciphertext"]),
    )


def test_envelope_vectors() -> None:
    v = load("envelope.json")
    (case,) = v["valid"]
    assert _open(case) == bytes.fromhex(case["plaintext"])
    assert (
        kex.KeyPair.from_private(bytes.fromhex(case["sender_private"])).public.hex()
        == (case["sender_public"])
    )
    for failure in v["failures"]:
        with pytest.raises(error_class(failure["error"])):
            _open({**case, **failure["override"]})
    assert {f["error"] for f in v["failures"]} == {"InvalidTag", "InvalidArgument"}


def test_kex_vectors() -> None:
    v = load("kex.json")
    for case in v["agree"]:
        private, peer_private = bytes.fromhex(case["private"]), bytes.fromhex(case["peer_private"])
        assert kex.KeyPair.from_private(private).public.hex() == case["public"]
        assert kex.agree(private, bytes.fromhex(case["peer_public"])).hex() == case["shared"]
        assert kex.agree(peer_private, bytes.fromhex(case["public"])).hex() == case["shared"]
    for case in v["derive_key"]:
        key = kex.derive_key(
            bytes.fromhex(case["shared"]), bytes.fromhex(case["dst"]), case["length"]
        )
        assert key.hex() == case["key"]
    for case in v["failures"]:
        with pytest.raises(error_class(case["error"])) as info:
            kex.agree(bytes.fromhex(case["private"]), bytes.fromhex(case["peer_public"]))
        assert getattr(info.value, "field", None) == case["field"]


def _secagg_config(doc: dict[str, Any]) -> secagg.SecAggConfig:
    threat = doc.get("threat")
    return secagg.SecAggConfig(
        **{
            **doc,
            "parties": tuple(doc["parties"]),
            "threat": None if threat is None else params.threat_from_json(json.dumps(threat)),
        }
    )


def test_secagg_vectors() -> None:
    v = load("secagg.json")
    assert "issue 10" in v["provenance"]["history"].lower()
    config = _secagg_config(v["config"])
    assert config.digest.hex() == v["config_digest"]
    with_threat = _secagg_config(v["config_with_threat"]["config"])
    assert with_threat.threat == params.DEFAULT_THREAT_MODEL
    assert with_threat.digest.hex() == v["config_with_threat"]["digest"]

    # Phase 0: every commitment opens to its nonce and is signed over this config.
    vks = {p: VerifyKey.from_bytes(bytes.fromhex(k)) for p, k in v["identities"].items()}
    assert list(vks) == list(config.parties)
    commits = {p: bytes.fromhex(c["commitment"]) for p, c in v["commits"].items()}
    nonces = {p: bytes.fromhex(c["nonce"]) for p, c in v["commits"].items()}
    for p, case in v["commits"].items():
        assert secagg.nonce_commitment(config, p, nonces[p]) == commits[p]
        transcript = secagg.commit_transcript(config, p, commits[p])
        vks[p].verify(bytes.fromhex(case["signature"]), transcript)
    me = v["commit"]["party"]
    assert secagg.commit_transcript(config, me, commits[me]).hex() == v["commit"]["transcript"]
    # H(L) does not depend on the order the list is given in.
    list_digest = secagg.commit_list_digest(config, dict(reversed(commits.items())))
    assert list_digest.hex() == v["list_digest"]

    # Phase 1: adverts signed over H(L), with the self-mask commitment.
    adverts = {
        p: secagg.Advert(
            party=p,
            c_public=bytes.fromhex(a["c_public"]),
            s_public=bytes.fromhex(a["s_public"]),
            signature=bytes.fromhex(a["signature"]),
            nonce=nonces[p],
            list_digest=list_digest,
            self_mask_commitment=bytes.fromhex(a["self_mask_commitment"]),
        )
        for p, a in v["adverts"].items()
    }

    def advert_transcript(cfg: secagg.SecAggConfig, a: secagg.Advert, digest: bytes) -> bytes:
        return secagg.advert_transcript(
            cfg,
            a.party,
            a.c_public,
            a.s_public,
            nonce=a.nonce,
            list_digest=digest,
            self_mask=a.self_mask_commitment,
        )

    for p, a in adverts.items():
        vks[p].verify(a.signature, advert_transcript(config, a, list_digest))
    mine = adverts[v["advert"]["party"]]
    assert advert_transcript(config, mine, list_digest).hex() == v["advert"]["transcript"]
    b_seed = bytes.fromhex(v["advert"]["self_mask_seed"])
    assert secagg.self_mask_commitment(config, mine.party, b_seed) == mine.self_mask_commitment

    # The graph over L and the roster binding.
    g = v["graph"]
    seed = secagg.graph_seed(config, list_digest, dict(reversed(nonces.items())))
    assert seed.hex() == g["seed"]
    nbrs = graph.neighbours(config.parties, g["degree"], seed)
    assert {p: sorted(n) for p, n in nbrs.items()} == g["neighbours"]
    # The roster hash has no public name; it is the one SecAggParty and SecAggServer share.
    roster_digest = secagg.roster_digest(adverts)
    assert roster_digest.hex() == v["roster"]["digest"]
    binding = secagg.roster_binding(seed, roster_digest)
    assert binding.hex() == v["roster"]["binding"] == v["consistency"]["binding"]

    for failure in v["failures"]:
        error = error_class(failure["error"])
        if failure["signed"] == "commit":
            other = dataclasses.replace(config, threshold=failure["threshold"])
            with pytest.raises(error):
                vks[me].verify(
                    bytes.fromhex(v["commits"][me]["signature"]),
                    secagg.commit_transcript(other, me, commits[me]),
                )
            continue
        other = dataclasses.replace(config, round_id=failure.get("round_id", config.round_id))
        digest = bytes.fromhex(failure.get("list_digest", v["list_digest"]))
        with pytest.raises(error):
            vks[mine.party].verify(mine.signature, advert_transcript(other, mine, digest))
    assert {f["signed"] for f in v["failures"]} == {"commit", "advert"}
