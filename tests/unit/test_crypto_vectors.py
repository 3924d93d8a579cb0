"""Replay the committed vectors in tests/vectors/v1 (see scripts/gen_vectors.py)."""

from __future__ import annotations

import hashlib
import importlib.util
import itertools
import json
from pathlib import Path
from typing import Any

import pytest

from blindsum import errors
from blindsum.crypto import envelope, kex, prg, shamir
from blindsum.crypto.sign import VerifyKey
from blindsum.protocol import graph, secagg
from blindsum.types import RandFn

ROOT = Path(__file__).resolve().parents[2]
VECTORS = ROOT / "tests" / "vectors" / "v1"


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((VECTORS / name).read_text(encoding="utf-8"))
    assert data["provenance"]["generator"] == "scripts/gen_vectors.py"
    return data


def drbg(seed: bytes) -> RandFn:
    counter = itertools.count()

    def rand(n: int) -> bytes:
        return hashlib.shake_256(seed + next(counter).to_bytes(8, "big")).digest(n)

    return rand


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


def test_secagg_vectors() -> None:
    v = load("secagg.json")
    config = secagg.SecAggConfig(**{**v["config"], "parties": tuple(v["config"]["parties"])})
    ad = v["advert"]
    transcript = secagg.advert_transcript(
        config, ad["party"], bytes.fromhex(ad["c_public"]), bytes.fromhex(ad["s_public"])
    )
    assert transcript.hex() == ad["transcript"]
    vk = VerifyKey.from_bytes(bytes.fromhex(ad["identity_public"]))
    vk.verify(bytes.fromhex(ad["signature"]), transcript)
    (failure,) = v["failures"]
    other = secagg.SecAggConfig(
        **{**v["config"], "parties": tuple(v["config"]["parties"]), "round_id": failure["round_id"]}
    )
    with pytest.raises(error_class(failure["error"])):
        vk.verify(
            bytes.fromhex(ad["signature"]),
            secagg.advert_transcript(
                other, ad["party"], bytes.fromhex(ad["c_public"]), bytes.fromhex(ad["s_public"])
            ),
        )
    g = v["graph"]
    adverts = {p: (bytes.fromhex(c), bytes.fromhex(s)) for p, (c, s) in g["adverts"].items()}
    seed = graph.graph_seed(adverts)
    assert seed.hex() == g["seed"]
    nbrs = graph.neighbours(config.parties, g["degree"], seed)
    assert {p: sorted(n) for p, n in nbrs.items()} == g["neighbours"]
