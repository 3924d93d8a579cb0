"""Domain <-> protobuf conversion. The only module that knows both sides.

Decoders validate shapes and sizes before anything is parsed further and raise
:class:`~blindsum.errors.InvalidArgument` naming the field.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import numpy as np

from blindsum import reportdoc
from blindsum.crypto.he import BfvParams
from blindsum.crypto.shamir import SHARE_BYTES
from blindsum.errors import InvalidArgument
from blindsum.model import (
    DpMode,
    DpSpec,
    Mode,
    OpenRoundSpec,
    Phase,
    Report,
    RoundState,
    RoundView,
)
from blindsum.protocol.he import SignedPublicContext
from blindsum.protocol.params import Adversary, ThreatModel
from blindsum.protocol.secagg import (
    DIGEST_BYTES,
    Advert,
    Commit,
    Complaint,
    Reveal,
    SealedShare,
    ShareKind,
)
from blindsum.rpc.v1 import admin_pb2, common_pb2, report_pb2, round_pb2
from blindsum.types import U64Vector

_MODE_TO_PB = {Mode.SECAGG: common_pb2.MODE_SECAGG, Mode.HE: common_pb2.MODE_HE}
_MODE_FROM_PB = {v: k for k, v in _MODE_TO_PB.items()}
_DP_MODE_TO_PB = {
    DpMode.OFF: common_pb2.DP_MODE_OFF,
    DpMode.CENTRAL: common_pb2.DP_MODE_CENTRAL,
    DpMode.DISTRIBUTED: common_pb2.DP_MODE_DISTRIBUTED,
}
_DP_MODE_FROM_PB = {v: k for k, v in _DP_MODE_TO_PB.items()}
_STATE_TO_PB = {
    RoundState.OPEN: common_pb2.ROUND_STATE_OPEN,
    RoundState.COMPLETE: common_pb2.ROUND_STATE_COMPLETE,
    RoundState.ABORTED: common_pb2.ROUND_STATE_ABORTED,
    RoundState.REJECTED: common_pb2.ROUND_STATE_REJECTED,
}
_STATE_FROM_PB = {v: k for k, v in _STATE_TO_PB.items()}
_PHASE_TO_PB = {
    Phase.COMMIT: common_pb2.PHASE_COMMIT,
    Phase.ADVERTISE: common_pb2.PHASE_ADVERTISE,
    Phase.SHARE: common_pb2.PHASE_SHARE,
    Phase.MASK: common_pb2.PHASE_MASK,
    Phase.CONSISTENCY: common_pb2.PHASE_CONSISTENCY,
    Phase.UNMASK: common_pb2.PHASE_UNMASK,
    Phase.COLLECT: common_pb2.PHASE_COLLECT,
    Phase.DONE: common_pb2.PHASE_DONE,
}
_PHASE_FROM_PB = {v: k for k, v in _PHASE_TO_PB.items()}
_KIND_TO_PB = {
    ShareKind.SELF_MASK: round_pb2.SHARE_KIND_SELF_MASK,
    ShareKind.MASK_KEY: round_pb2.SHARE_KIND_MASK_KEY,
}
_KIND_FROM_PB = {v: k for k, v in _KIND_TO_PB.items()}

MAX_ROUND_ID_LEN = 64


def mode_to_pb(mode: Mode) -> common_pb2.Mode.ValueType:
    return _MODE_TO_PB[mode]


def mode_from_pb(value: int, *, field: str = "mode") -> Mode:
    try:
        return _MODE_FROM_PB[value]  # type: ignore[index]  # an unknown int is the error case
    except KeyError:
        raise InvalidArgument(f"unknown mode {value}", field=field) from None


def phase_to_pb(phase: Phase) -> common_pb2.Phase.ValueType:
    return _PHASE_TO_PB[phase]


def phase_from_pb(value: int, *, field: str = "phase") -> Phase | None:
    """The phase, or None for PHASE_UNSPECIFIED; InvalidArgument for an unknown value."""
    if value == common_pb2.PHASE_UNSPECIFIED:
        return None
    try:
        return _PHASE_FROM_PB[value]  # type: ignore[index]  # an unknown int is the error case
    except KeyError:
        raise InvalidArgument(f"unknown phase {value}", field=field) from None


_ROUND_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def check_round_id(round_id: str, *, field: str = "round_id") -> str:
    """Round ids name files on the party side, so only a safe charset is allowed."""
    if not isinstance(round_id, str) or _ROUND_ID.fullmatch(round_id) is None:
        raise InvalidArgument("must match [A-Za-z0-9][A-Za-z0-9._-]{0,63}", field=field)
    return round_id


# -- rounds -----------------------------------------------------------------


def dp_to_pb(spec: DpSpec) -> common_pb2.DpParams:
    return common_pb2.DpParams(
        mode=_DP_MODE_TO_PB[spec.mode],
        rho=spec.rho,
        expected_parties=spec.expected_parties,
        campaign=spec.campaign,
        window=spec.window,
    )


def dp_from_pb(msg: common_pb2.DpParams, *, field: str = "dp") -> DpSpec:
    try:
        mode = _DP_MODE_FROM_PB[msg.mode]
    except KeyError:
        raise InvalidArgument(f"unknown DP mode {msg.mode}", field=f"{field}.mode") from None
    return DpSpec(
        mode=mode,
        rho=msg.rho,
        expected_parties=msg.expected_parties,
        campaign=msg.campaign,
        window=msg.window,
    )


_ADVERSARY_TO_PB = {
    Adversary.CURIOUS: common_pb2.ADVERSARY_CURIOUS,
    Adversary.DEVIATING: common_pb2.ADVERSARY_DEVIATING,
}
_ADVERSARY_FROM_PB = {v: k for k, v in _ADVERSARY_TO_PB.items()}


def threat_to_pb(model: ThreatModel) -> common_pb2.ThreatModel:
    return common_pb2.ThreatModel(
        corrupt_fraction=model.corrupt_fraction,
        dropout_fraction=model.dropout_fraction,
        adversary=_ADVERSARY_TO_PB[model.adversary],
        privacy_bits=model.privacy_bits,
        correctness_bits=model.correctness_bits,
    )


def threat_from_pb(msg: common_pb2.ThreatModel, *, field: str = "threat") -> ThreatModel:
    """The threat model; InvalidArgument naming the field for unknown or out-of-range values."""
    adversary = _ADVERSARY_FROM_PB.get(msg.adversary)
    if adversary is None:
        raise InvalidArgument(f"unknown adversary {msg.adversary}", field=f"{field}.adversary")
    return ThreatModel(
        corrupt_fraction=msg.corrupt_fraction,
        dropout_fraction=msg.dropout_fraction,
        adversary=adversary,
        privacy_bits=msg.privacy_bits,
        correctness_bits=msg.correctness_bits,
    )


def round_view_to_pb(view: RoundView) -> common_pb2.RoundInfo:
    return common_pb2.RoundInfo(
        round_id=view.round_id,
        mode=_MODE_TO_PB[view.mode],
        state=_STATE_TO_PB[view.state],
        phase=_PHASE_TO_PB[view.phase],
        schema_id=view.schema_id,
        schema_toml=view.schema_toml,
        parties=list(view.parties),
        threshold=view.threshold,
        min_contributors=view.min_contributors,
        phase_deadline_unix_ms=view.phase_deadline_ms,
        submitted=list(view.submitted),
        abort_reason=view.abort_reason,
        vector_length=view.vector_length,
        created_unix_ms=view.created_ms,
        graph_degree=view.graph_degree,
        advertised=list(view.advertised),
        shared=list(view.shared),
        masked=list(view.masked),
        unmasked=list(view.unmasked),
        consistent=list(view.consistent),
        dp=dp_to_pb(view.dp),
        window_start_unix_ms=view.window_start_ms,
        window_end_unix_ms=view.window_end_ms,
        committed=list(view.committed),
        threat=None if view.threat is None else threat_to_pb(view.threat),
        misbehaving=[common_pb2.Misbehaviour(party=p, reason=r) for p, r in view.misbehaving],
        counts=[common_pb2.PhaseCount(phase=_PHASE_TO_PB[p], count=n) for p, n in view.counts],
        caller=view.caller,
        caller_done=[_PHASE_TO_PB[p] for p in view.caller_done],
    )


def _phase_of(value: common_pb2.Phase.ValueType) -> Phase:
    try:
        return _PHASE_FROM_PB[value]
    except KeyError:
        raise InvalidArgument(f"unknown phase {value}", field="RoundInfo.counts") from None


def round_view_from_pb(info: common_pb2.RoundInfo) -> RoundView:
    try:
        state = _STATE_FROM_PB[info.state]
        phase = _PHASE_FROM_PB[info.phase]
    except KeyError:
        raise InvalidArgument("unknown round state or phase", field="RoundInfo") from None
    return RoundView(
        round_id=info.round_id,
        mode=mode_from_pb(info.mode),
        state=state,
        phase=phase,
        schema_id=info.schema_id,
        schema_toml=info.schema_toml,
        parties=tuple(info.parties),
        threshold=info.threshold,
        min_contributors=info.min_contributors,
        phase_deadline_ms=info.phase_deadline_unix_ms,
        submitted=tuple(info.submitted),
        abort_reason=info.abort_reason,
        vector_length=info.vector_length,
        created_ms=info.created_unix_ms,
        graph_degree=info.graph_degree,
        advertised=tuple(info.advertised),
        shared=tuple(info.shared),
        masked=tuple(info.masked),
        unmasked=tuple(info.unmasked),
        consistent=tuple(info.consistent),
        dp=dp_from_pb(info.dp, field="RoundInfo.dp") if info.HasField("dp") else DpSpec(),
        window_start_ms=info.window_start_unix_ms,
        window_end_ms=info.window_end_unix_ms,
        committed=tuple(info.committed),
        threat=threat_from_pb(info.threat, field="RoundInfo.threat")
        if info.HasField("threat")
        else None,
        misbehaving=tuple((m.party, m.reason) for m in info.misbehaving),
        counts=tuple((_phase_of(c.phase), c.count) for c in info.counts),
        caller=info.caller,
        caller_done=tuple(_phase_of(p) for p in info.caller_done),
    )


def open_round_to_pb(spec: OpenRoundSpec) -> admin_pb2.OpenRoundRequest:
    return admin_pb2.OpenRoundRequest(
        mode=_MODE_TO_PB[spec.mode],
        parties=list(spec.parties),
        min_contributors=spec.min_contributors,
        threshold=spec.threshold,
        phase_timeout_seconds=spec.phase_timeout_s,
        schema_toml=spec.schema_toml,
        round_id=spec.round_id,
        dp=None if spec.dp is None else dp_to_pb(spec.dp),
        window_start_unix_ms=spec.window_start_ms,
        window_end_unix_ms=spec.window_end_ms,
        threat=None if spec.threat is None else threat_to_pb(spec.threat),
        graph_degree=spec.graph_degree,
    )


def open_round_from_pb(req: admin_pb2.OpenRoundRequest) -> OpenRoundSpec:
    if req.round_id:
        check_round_id(req.round_id)
    return OpenRoundSpec(
        mode=mode_from_pb(req.mode),
        parties=tuple(req.parties),
        min_contributors=req.min_contributors,
        threshold=req.threshold,
        phase_timeout_s=req.phase_timeout_seconds,
        schema_toml=req.schema_toml,
        round_id=req.round_id,
        dp=dp_from_pb(req.dp) if req.HasField("dp") else None,
        window_start_ms=req.window_start_unix_ms,
        window_end_ms=req.window_end_unix_ms,
        threat=threat_from_pb(req.threat) if req.HasField("threat") else None,
        graph_degree=req.graph_degree,
    )


# -- secagg messages ----------------------------------------------------------


def _check_len(value: bytes, expected: int, field: str) -> bytes:
    if len(value) != expected:
        raise InvalidArgument(f"expected {expected} bytes, got {len(value)}", field=field)
    return value


def commit_from_request(party: str, req: round_pb2.CommitRequest) -> Commit:
    return Commit(
        party=party,
        commitment=_check_len(req.commitment, 32, "commitment"),
        signature=_check_len(req.signature, 64, "signature"),
    )


def commit_to_request(round_id: str, schema_id: str, commit: Commit) -> round_pb2.CommitRequest:
    return round_pb2.CommitRequest(
        round_id=round_id,
        schema_id=schema_id,
        commitment=commit.commitment,
        signature=commit.signature,
    )


def signed_commit_to_pb(commit: Commit, identity_cert_pem: bytes) -> round_pb2.SignedCommit:
    return round_pb2.SignedCommit(
        party=commit.party,
        commitment=commit.commitment,
        signature=commit.signature,
        identity_cert_pem=identity_cert_pem,
    )


def signed_commit_from_pb(msg: round_pb2.SignedCommit, index: int) -> tuple[Commit, bytes]:
    field = f"commits[{index}]"
    commit = Commit(
        party=msg.party,
        commitment=_check_len(msg.commitment, 32, f"{field}.commitment"),
        signature=_check_len(msg.signature, 64, f"{field}.signature"),
    )
    return commit, msg.identity_cert_pem


def advert_from_request(party: str, req: round_pb2.AdvertiseRequest) -> Advert:
    return Advert(
        party=party,
        c_public=_check_len(req.c_public_key, 32, "c_public_key"),
        s_public=_check_len(req.s_public_key, 32, "s_public_key"),
        signature=_check_len(req.signature, 64, "signature"),
        nonce=_check_len(req.graph_nonce, 32, "graph_nonce"),
        list_digest=_check_len(req.commit_list_digest, 32, "commit_list_digest"),
        self_mask_commitment=_check_len(req.self_mask_commitment, 32, "self_mask_commitment"),
    )


def advert_to_request(round_id: str, schema_id: str, advert: Advert) -> round_pb2.AdvertiseRequest:
    return round_pb2.AdvertiseRequest(
        round_id=round_id,
        schema_id=schema_id,
        c_public_key=advert.c_public,
        s_public_key=advert.s_public,
        signature=advert.signature,
        graph_nonce=advert.nonce,
        commit_list_digest=advert.list_digest,
        self_mask_commitment=advert.self_mask_commitment,
    )


def signed_advert_to_pb(advert: Advert, identity_cert_pem: bytes) -> round_pb2.SignedAdvert:
    return round_pb2.SignedAdvert(
        party=advert.party,
        c_public_key=advert.c_public,
        s_public_key=advert.s_public,
        signature=advert.signature,
        identity_cert_pem=identity_cert_pem,
        graph_nonce=advert.nonce,
        commit_list_digest=advert.list_digest,
        self_mask_commitment=advert.self_mask_commitment,
    )


def signed_advert_from_pb(msg: round_pb2.SignedAdvert, index: int) -> tuple[Advert, bytes]:
    field = f"adverts[{index}]"
    advert = Advert(
        party=msg.party,
        c_public=_check_len(msg.c_public_key, 32, f"{field}.c_public_key"),
        s_public=_check_len(msg.s_public_key, 32, f"{field}.s_public_key"),
        signature=_check_len(msg.signature, 64, f"{field}.signature"),
        nonce=_check_len(msg.graph_nonce, 32, f"{field}.graph_nonce"),
        list_digest=_check_len(msg.commit_list_digest, 32, f"{field}.commit_list_digest"),
        self_mask_commitment=_check_len(
            msg.self_mask_commitment, 32, f"{field}.self_mask_commitment"
        ),
    )
    return advert, msg.identity_cert_pem


def shares_to_pb(shares: Sequence[SealedShare]) -> list[round_pb2.Envelope]:
    return [
        round_pb2.Envelope(
            sender=s.sender, receiver=s.receiver, nonce=s.nonce, ciphertext=s.ciphertext
        )
        for s in shares
    ]


def shares_from_pb(envelopes: Sequence[round_pb2.Envelope], *, max_count: int) -> list[SealedShare]:
    if len(envelopes) > max_count:
        raise InvalidArgument(
            f"{len(envelopes)} envelopes, at most {max_count} expected", field="envelopes"
        )
    out = []
    for i, env in enumerate(envelopes):
        if len(env.ciphertext) > 4096:
            raise InvalidArgument("envelope too large", field=f"envelopes[{i}].ciphertext")
        out.append(
            SealedShare(
                sender=env.sender,
                receiver=env.receiver,
                nonce=_check_len(env.nonce, 12, f"envelopes[{i}].nonce"),
                ciphertext=env.ciphertext,
            )
        )
    return out


def reveals_to_pb(reveals: Sequence[Reveal]) -> list[round_pb2.RevealedShare]:
    return [
        round_pb2.RevealedShare(owner=r.owner, kind=_KIND_TO_PB[r.kind], share=r.share)
        for r in reveals
    ]


def reveals_from_pb(shares: Sequence[round_pb2.RevealedShare], *, max_count: int) -> list[Reveal]:
    if len(shares) > max_count:
        raise InvalidArgument(f"{len(shares)} shares, at most {max_count} expected", field="shares")
    out = []
    for i, s in enumerate(shares):
        kind = _KIND_FROM_PB.get(s.kind)
        if kind is None:
            raise InvalidArgument("unknown share kind", field=f"shares[{i}].kind")
        out.append(
            Reveal(
                owner=s.owner,
                kind=kind,
                share=_check_len(s.share, SHARE_BYTES, f"shares[{i}].share"),
            )
        )
    return out


def complaints_to_pb(complaints: Sequence[Complaint]) -> list[round_pb2.Complaint]:
    return [
        round_pb2.Complaint(accused=c.accused, envelope_digest=c.digest, signature=c.signature)
        for c in complaints
    ]


def complaints_from_pb(
    accuser: str, items: Sequence[round_pb2.Complaint], *, max_count: int
) -> list[Complaint]:
    """The complaints of a SubmitMasked call; the accuser is the caller."""
    if len(items) > max_count:
        raise InvalidArgument(f"{len(items)} complaints, at most {max_count}", field="complaints")
    return [
        Complaint(
            accuser=accuser,
            accused=item.accused,
            digest=_check_len(item.envelope_digest, DIGEST_BYTES, f"complaints[{i}].digest"),
            signature=_check_len(item.signature, 64, f"complaints[{i}].signature"),
        )
        for i, item in enumerate(items)
    ]


def signatures_to_pb(signatures: Mapping[str, bytes]) -> list[round_pb2.ConsistencySignature]:
    return [round_pb2.ConsistencySignature(party=p, signature=s) for p, s in signatures.items()]


def signatures_from_pb(
    items: Sequence[round_pb2.ConsistencySignature], *, max_count: int
) -> dict[str, bytes]:
    if len(items) > max_count:
        raise InvalidArgument(f"{len(items)} signatures, at most {max_count}", field="signatures")
    out: dict[str, bytes] = {}
    for i, item in enumerate(items):
        if item.party in out:
            raise InvalidArgument("duplicate signer", field=f"signatures[{i}].party")
        out[item.party] = _check_len(item.signature, 64, f"signatures[{i}].signature")
    return out


def public_context_to_pb(signed: SignedPublicContext) -> round_pb2.PublicContext:
    return round_pb2.PublicContext(
        context=signed.context,
        signature=signed.signature,
        poly_modulus_degree=signed.params.poly_modulus_degree,
        plain_modulus=signed.params.plain_modulus,
    )


def public_context_from_pb(msg: round_pb2.PublicContext) -> SignedPublicContext:
    return SignedPublicContext(
        context=msg.context,
        signature=msg.signature,
        params=BfvParams(
            poly_modulus_degree=msg.poly_modulus_degree, plain_modulus=msg.plain_modulus
        ),
    )


def vector_to_bytes(vector: U64Vector) -> bytes:
    return np.ascontiguousarray(vector, dtype="<u8").tobytes()


def vector_from_bytes(data: bytes, length: int, *, field: str = "masked_vector") -> U64Vector:
    """Parse ``length`` little-endian uint64 values; the size is checked first."""
    if len(data) != 8 * length:
        raise InvalidArgument(
            f"expected {length} uint64 values ({8 * length} bytes), got {len(data)} bytes",
            field=field,
        )
    return np.frombuffer(data, dtype="<u8").astype(np.uint64)


# -- reports -------------------------------------------------------------------


def report_to_pb(report: Report) -> report_pb2.Report:
    return report_pb2.Report(
        round_id=report.round_id,
        schema_id=report.schema_id,
        document=reportdoc.encode(report),
    )


def report_from_pb(msg: report_pb2.Report) -> Report:
    """Decode a fetched report: the document is size-checked and validated strictly, and
    must describe the round the envelope names."""
    report = reportdoc.decode(msg.document, field="Report.document")
    if report.round_id != msg.round_id or report.schema_id != msg.schema_id:
        raise InvalidArgument(
            "document describes another round or schema than the message", field="Report"
        )
    return report
