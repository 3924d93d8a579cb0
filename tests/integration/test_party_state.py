"""The party's round state: durable before a message is sent, and erased of every secret
once the round is over (issue 10, items 6 and 7 of the review)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from aggregator.service import RunningAggregator
from blindsum.bundle import load_bundle
from blindsum.errors import FailedPrecondition
from blindsum.model import RoundState, RoundView
from blindsum.transport import pki
from party.node import CLOSED_KEY, PartyNode
from tests.conftest import PARTIES, Deployment
from tests.integration.test_rounds_grpc import open_round, party_vector, run_parties

SECRET_MARKERS = ("c_private", "s_private", "b_seed", "received", "protocol")


def _state(deployment: Deployment, name: str, round_id: str) -> dict[str, str]:
    path = deployment.bundle(name) / "state" / f"{round_id}.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    data = json.loads(path.read_text())
    assert isinstance(data, dict)
    return data


async def test_a_finished_round_leaves_no_secret_and_cannot_be_joined_again(
    deployment: Deployment, aggregator: RunningAggregator
) -> None:
    view = await open_round(aggregator)
    vectors = {n: party_vector(i) for i, n in enumerate(PARTIES)}
    results = await run_parties(deployment, aggregator.port, view.round_id, vectors)
    assert all(
        isinstance(r, RoundView) and r.state is RoundState.COMPLETE for r in results.values()
    )
    for name in PARTIES:
        data = _state(deployment, name, view.round_id)
        assert set(data) == {CLOSED_KEY}
        text = bytes.fromhex(data[CLOSED_KEY]).decode()
        assert not any(marker in text for marker in SECRET_MARKERS), name
        summary = json.loads(text)
        assert summary["state"] == "complete"
        assert set(summary["sent"]) == {
            "Commit",
            "Advertise",
            "SubmitShares",
            "SubmitMasked",
            "SubmitConsistency",
            "SubmitUnmask",
        }
        assert all(len(digest) == 64 for digest in summary["sent"].values())
        assert summary["revealed"] and summary["consistency"]["survivors"]
    # An aggregator cannot make a party start the same round again with fresh keys.
    node = PartyNode(
        load_bundle(deployment.bundle("team-a")), address=f"127.0.0.1:{aggregator.port}"
    )
    try:
        with pytest.raises(FailedPrecondition, match="secrets for it are erased"):
            await node.run_round(view.round_id, lambda _s, _w: vectors["team-a"])
    finally:
        await node.close()


def test_replacing_a_state_file_syncs_the_directory_after_the_rename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the directory fsync the rename can be lost in a power cut, and the state
    rolls back to before a message that was already sent (a second, different signature
    could then be asked for)."""
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append("fsync-dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync-file")
        real_fsync(fd)

    def replace(src: str, dst: str) -> None:
        events.append("replace")
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    target = tmp_path / "round.json"
    pki.write_private(target, b"one", overwrite=True)
    pki.write_private(target, b"two", overwrite=True)
    assert events == ["fsync-file", "replace", "fsync-dir"] * 2
    assert target.read_bytes() == b"two"
