"""Issue 13, item 5: rotating the custodian's BFV key. A round opened before the
rotation finishes after it, decrypted with the key it opened with; a round opened
after uses the new key; the retired key is deleted once no open round uses it."""

from __future__ import annotations

import pytest

from aggregator.admin import RETIRED_DIR, rotate_bfv
from aggregator.service import start_aggregator
from blindsum.errors import FailedPrecondition
from blindsum.model import Mode, OpenRoundSpec, RoundState
from tests.conftest import PARTIES, Deployment
from tests.integration.test_rounds_grpc import (
    assert_report_matches,
    party_vector,
    plain_sum,
    run_parties,
)


async def test_a_round_across_a_key_rotation(deployment: Deployment) -> None:
    retired_dir = deployment.agg_dir / "custodian" / RETIRED_DIR
    first = await start_aggregator(deployment.agg_dir, listen="127.0.0.1:0")
    try:
        before = await first.manager.open_round(OpenRoundSpec(mode=Mode.HE, parties=PARTIES))
        old_key = await first.manager.current_context_hash()
    finally:
        await first.stop(grace=None)
    rotation = rotate_bfv(deployment.agg_dir)
    assert rotation.retired == old_key and rotation.new_context != old_key
    assert rotation.kept == (old_key,)
    assert (retired_dir / f"{old_key}.bin").stat().st_mode & 0o077 == 0
    second = await start_aggregator(deployment.agg_dir, listen="127.0.0.1:0")
    try:
        assert await second.manager.current_context_hash() == rotation.new_context
        after = await second.manager.open_round(OpenRoundSpec(mode=Mode.HE, parties=PARTIES))
        rounds = {"before": before.round_id, "after": after.round_id}
        for i, (label, rid) in enumerate(rounds.items()):
            vectors = {n: party_vector(10 * i + j) for j, n in enumerate(PARTIES)}
            await run_parties(deployment, second.port, rid, vectors, expire_gone=False)
            assert second.manager.view(rid).state is RoundState.COMPLETE, label
            assert_report_matches(second.manager.report(rid), plain_sum(list(vectors.values())))
        stored = {label: second.store.round(rid).he_context for label, rid in rounds.items()}
        assert stored == {"before": old_key, "after": rotation.new_context}
        # Both rounds are done: the retired key goes; the current one is never pruned.
        pruned = rotate_bfv(deployment.agg_dir, prune_only=True)
        assert pruned.pruned == (old_key,) and pruned.kept == ()
        assert not any(retired_dir.glob("*.bin"))
    finally:
        await second.stop(grace=None)


async def test_rotation_keeps_a_key_an_open_round_uses_and_refuses_unnamed_ones(
    deployment: Deployment,
) -> None:
    running = await start_aggregator(deployment.agg_dir, listen="127.0.0.1:0")
    try:
        view = await running.manager.open_round(OpenRoundSpec(mode=Mode.HE, parties=PARTIES))
    finally:
        await running.stop(grace=None)
    first = rotate_bfv(deployment.agg_dir)
    second = rotate_bfv(deployment.agg_dir)  # the first retired key is still in use
    assert first.retired in second.kept and second.pruned == ()
    # A round from before rotation existed names no key: rotating would strand it.
    from aggregator.store import open_store

    store = open_store("sqlite:///aggregator.sqlite", base_dir=deployment.agg_dir)
    try:
        store._exec("UPDATE rounds SET he_context = '' WHERE round_id = ?", (view.round_id,))
    finally:
        store.close()
    with pytest.raises(FailedPrecondition, match="does not name its key"):
        rotate_bfv(deployment.agg_dir)
