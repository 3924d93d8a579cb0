"""The pre-parse wire check (blindsum/transport/wire.py): it counts what protobuf
would build, never crashes on hostile bytes, and refuses before the budget is spent."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from google.protobuf.message import DecodeError, Message
from hypothesis import given, settings
from hypothesis import strategies as st

from blindsum.errors import InvalidArgument
from blindsum.rpc.v1 import admin_pb2, round_pb2
from blindsum.transport import wire


def _reference_count(msg: Message) -> int:
    """Field occurrences of a parsed message, counted on the objects protobuf built."""
    total = 0
    for field, value in msg.ListFields():
        values = value if field.is_repeated else [value]
        if field.is_repeated and field.type not in (
            field.TYPE_MESSAGE,
            field.TYPE_STRING,
            field.TYPE_BYTES,
        ):
            total += 1  # packed: one length-delimited occurrence
            continue
        for item in values:
            total += 1
            if field.type == field.TYPE_MESSAGE:
                total += _reference_count(item)
    return total


names = st.text(min_size=0, max_size=12)
envelopes = st.builds(
    round_pb2.Envelope,
    sender=names,
    receiver=names,
    nonce=st.binary(max_size=12),
    ciphertext=st.binary(max_size=40),
)
shares_requests = st.builds(
    round_pb2.SubmitSharesRequest,
    round_id=names,
    envelopes=st.lists(envelopes, max_size=20),
)
open_requests = st.builds(
    admin_pb2.OpenRoundRequest,
    parties=st.lists(names, max_size=30),
    threshold=st.integers(0, 2**32 - 1),
    schema_toml=st.text(max_size=50),
)


@settings(max_examples=200, deadline=None)
@given(st.one_of(shares_requests, open_requests))
def test_counts_what_protobuf_builds(
    msg: round_pb2.SubmitSharesRequest | admin_pb2.OpenRoundRequest,
) -> None:
    raw = msg.SerializeToString()
    assert wire.count_elements(raw, msg.DESCRIPTOR, 10_000) == _reference_count(msg)


@settings(max_examples=200, deadline=None)
@given(shares_requests, st.integers(1, 200))
def test_refuses_exactly_when_over_budget(msg: round_pb2.SubmitSharesRequest, budget: int) -> None:
    raw = msg.SerializeToString()
    needed = _reference_count(msg)
    if needed <= budget:
        assert wire.count_elements(raw, msg.DESCRIPTOR, budget) == needed
    else:
        with pytest.raises(InvalidArgument, match="too many elements"):
            wire.count_elements(raw, msg.DESCRIPTOR, budget)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200))
def test_hostile_bytes_raise_only_invalid_argument(data: bytes) -> None:
    """Whatever the bytes: a count, or InvalidArgument. When the walk accepts them
    within budget, protobuf parses them or fails with its own DecodeError (never
    anything larger than the count)."""
    try:
        wire.count_elements(data, round_pb2.SubmitSharesRequest.DESCRIPTOR, 1_000)
    except InvalidArgument:
        return
    with contextlib.suppress(DecodeError):
        round_pb2.SubmitSharesRequest.FromString(data)


def test_limit_checks_bytes_before_elements_and_names_the_method() -> None:
    limit = wire.Limit(max_bytes=100, max_elements=5)
    big = round_pb2.SubmitSharesRequest(round_id="r" * 200).SerializeToString()
    with pytest.raises(wire.TooLarge, match=r"^M: request of 203 bytes"):
        wire.check(big, round_pb2.SubmitSharesRequest.DESCRIPTOR, limit, "M")
    many = round_pb2.SubmitSharesRequest(envelopes=[round_pb2.Envelope()] * 10).SerializeToString()
    with pytest.raises(InvalidArgument, match=r"^M: envelopes: too many elements") as info:
        wire.check(many, round_pb2.SubmitSharesRequest.DESCRIPTOR, limit, "M")
    assert info.value.field == "envelopes"
    deep = b"\x12\x02\x12\x00"  # an envelope holding field 2 of unknown type: skipped
    assert wire.count_elements(deep, round_pb2.SubmitSharesRequest.DESCRIPTOR, 10) == 2
    with pytest.raises(InvalidArgument):
        wire.Limit(max_bytes=0, max_elements=1)


def test_heap_trimmer_trims_once_per_interval_after_large_refusals() -> None:
    calls: list[int] = []

    async def scenario() -> int:
        trimmer = wire.HeapTrimmer(lambda: calls.append(1), interval_s=0.05)
        trimmer.refused(10)  # small: nothing to give back
        trimmer.refused(wire.TRIM_AFTER_BYTES)
        while trimmer.trims < 1:
            await asyncio.sleep(0.01)
        # A burst while a trim is pending costs one more trim after it, not one each.
        trimmer.refused(wire.TRIM_AFTER_BYTES)
        for _ in range(5):
            trimmer.refused(wire.TRIM_AFTER_BYTES)
        while trimmer.trims < 3:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)
        return trimmer.trims

    assert asyncio.run(scenario()) == 3
    assert len(calls) == 3
