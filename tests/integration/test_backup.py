"""Issue 13, item 6: a backup taken while a round is open, restored into a new
directory, finishes that round there, with the DP ledger intact."""

from __future__ import annotations

import io
import stat
import tarfile
from pathlib import Path

import pytest

from aggregator.backup import MANIFEST, backup, restore
from aggregator.check import check_directory
from aggregator.service import start_aggregator
from aggregator.store import open_store
from blindsum.errors import AlreadyExists, InvalidArgument
from blindsum.model import DpMode, DpSpec, Mode, OpenRoundSpec, RoundState
from tests.conftest import PARTIES, Deployment
from tests.integration.test_rounds_grpc import party_vector, run_parties

CAMPAIGN = "backup-test"


def spec() -> OpenRoundSpec:
    return OpenRoundSpec(
        mode=Mode.SECAGG,
        parties=PARTIES,
        dp=DpSpec(mode=DpMode.CENTRAL, rho=0.2, campaign=CAMPAIGN),
    )


async def test_a_backup_taken_mid_round_finishes_the_round_elsewhere(
    deployment: Deployment, tmp_path: Path
) -> None:
    vectors = {n: party_vector(i) for i, n in enumerate(PARTIES)}
    archive = tmp_path / "agg.tar.gz"
    first = await start_aggregator(deployment.agg_dir, listen="127.0.0.1:0")
    try:
        done = await first.manager.open_round(spec())
        await run_parties(deployment, first.port, done.round_id, vectors, expire_gone=False)
        assert first.manager.view(done.round_id).state is RoundState.COMPLETE
        pending = await first.manager.open_round(spec())  # open, nobody has joined
        result = backup(deployment.agg_dir, archive)  # while it serves
    finally:
        await first.stop(grace=None)
    assert stat.S_IMODE(archive.stat().st_mode) == 0o600
    secret = {str(f["path"]) for f in result.files if f["secret"]}
    assert {"ca/ca.key", "store.key", "custodian/bfv-secret.bin", "aggregator.sqlite"} <= secret
    assert "ca/ca.crt" not in secret and result.elsewhere == []
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    assert names[0] == MANIFEST and "aggregator.addr" not in names
    assert not any(n.endswith(("-wal", "-shm")) for n in names)

    restored = tmp_path / "restored"
    manifest = restore(archive, restored)
    assert len(manifest["files"]) == len(result.files)
    # Every restored file is 0600, whatever the archive's manifest says.
    assert {stat.S_IMODE(p.stat().st_mode) for p in restored.rglob("*") if p.is_file()} == {0o600}
    assert check_directory(restored).ok
    second = await start_aggregator(restored, listen="127.0.0.1:0")
    try:
        assert second.manager.view(pending.round_id).state is RoundState.OPEN
        await run_parties(deployment, second.port, pending.round_id, vectors, expire_gone=False)
        assert second.manager.view(pending.round_id).state is RoundState.COMPLETE
        charged = [e.round_id for e in second.store.ledger(CAMPAIGN)]
        assert charged == [done.round_id, pending.round_id]  # the ledger survived
    finally:
        await second.stop(grace=None)
    # The original directory is untouched by all of this.
    original = open_store("sqlite:///aggregator.sqlite", base_dir=deployment.agg_dir, readonly=True)
    try:
        assert [e.round_id for e in original.ledger(CAMPAIGN)] == [done.round_id]
    finally:
        original.close()


def test_restore_refuses_what_it_cannot_trust(deployment: Deployment, tmp_path: Path) -> None:
    archive = tmp_path / "agg.tar.gz"
    backup(deployment.agg_dir, archive)
    with pytest.raises(AlreadyExists):
        backup(deployment.agg_dir, archive)
    with pytest.raises(AlreadyExists, match="not empty"):
        restore(archive, deployment.agg_dir)
    # A member that escapes the directory, or one the manifest does not list.
    evil = tmp_path / "evil.tar.gz"
    with tarfile.open(archive) as src, tarfile.open(evil, "w:gz") as dst:
        for member in src.getmembers():
            handle = src.extractfile(member)
            dst.addfile(member, handle)
        extra = tarfile.TarInfo("../escape.txt")
        dst.addfile(extra)
    with pytest.raises(InvalidArgument, match="outside the directory"):
        restore(evil, tmp_path / "x")
    # A damaged file: its hash no longer matches.
    damaged = tmp_path / "damaged.tar.gz"
    with tarfile.open(archive) as src, tarfile.open(damaged, "w:gz") as dst:
        for member in src.getmembers():
            data = src.extractfile(member).read()  # type: ignore[union-attr]
            if member.name == "store.key":
                data = b"0" * len(data)
            member.size = len(data)
            dst.addfile(member, io.BytesIO(data))
    with pytest.raises(InvalidArgument, match=r"store\.key is missing or damaged"):
        restore(damaged, tmp_path / "y")
    assert not (tmp_path / "y").exists()  # nothing half-written
    with pytest.raises(InvalidArgument, match="not a blindsum backup"):
        (tmp_path / "junk.tar.gz").write_bytes(b"junk")
        restore(tmp_path / "junk.tar.gz", tmp_path / "z")


def test_backup_refuses_a_directory_whose_files_live_elsewhere(
    deployment: Deployment, tmp_path: Path
) -> None:
    """Found in review: a store or key outside the directory was silently left out."""
    from dataclasses import replace

    from aggregator import config as cfgmod
    from blindsum.config import dump_config
    from blindsum.errors import ConfigError

    cfg = cfgmod.load(deployment.agg_dir)
    outside = tmp_path / "elsewhere.key"
    moved = replace(cfg, store=replace(cfg.store, mac_key=str(outside)))
    (deployment.agg_dir / cfgmod.CONFIG_NAME).write_text(dump_config(moved))
    with pytest.raises(ConfigError, match="outside the aggregator directory") as err:
        backup(deployment.agg_dir, tmp_path / "x.tar.gz")
    assert err.value.field == "store.mac_key"
    assert not (tmp_path / "x.tar.gz").exists()
