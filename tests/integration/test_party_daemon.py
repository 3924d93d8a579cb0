"""Daemon mode: a party node joins every round it is invited to, until told to stop."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from aggregator.service import RunningAggregator
from blindsum.bundle import load_bundle
from blindsum.model import Mode, OpenRoundSpec, RoundState
from party.node import PartyNode
from tests.conftest import PARTIES, Deployment
from tests.integration.test_rounds_grpc import assert_report_matches, party_vector, plain_sum


async def test_daemons_join_consecutive_rounds_of_both_modes(
    deployment: Deployment, aggregator: RunningAggregator
) -> None:
    vectors = {n: party_vector(40 + i) for i, n in enumerate(PARTIES)}
    stop = asyncio.Event()

    async def daemon(name: str) -> list[str]:
        bundle = load_bundle(deployment.bundle(name))
        bundle = replace(bundle, config=replace(bundle.config, poll_interval_s=0.05))
        node = PartyNode(bundle, address=f"127.0.0.1:{aggregator.port}")
        try:
            views = await node.daemon(lambda _s, _w: vectors[name], stop=stop, max_rounds=2)
            return [v.round_id for v in views if v.state is RoundState.COMPLETE]
        finally:
            await node.close()

    tasks = [asyncio.create_task(daemon(n)) for n in PARTIES]
    first = await aggregator.manager.open_round(OpenRoundSpec(Mode.SECAGG, PARTIES))
    for _ in range(600):
        if aggregator.manager.view(first.round_id).state is not RoundState.OPEN:
            break
        await asyncio.sleep(0.05)
    second = await aggregator.manager.open_round(OpenRoundSpec(Mode.HE, PARTIES))
    done = await asyncio.wait_for(asyncio.gather(*tasks), timeout=120)
    stop.set()
    assert all(rounds == [first.round_id, second.round_id] for rounds in done)
    expected = plain_sum(list(vectors.values()))
    for rid in (first.round_id, second.round_id):
        assert_report_matches(aggregator.manager.report(rid), expected)
