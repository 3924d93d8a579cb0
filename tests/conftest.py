"""Shared fixtures: a real aggregator directory (dev CA generated at test time)."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio

from aggregator import config as cfgmod
from aggregator.admin import enroll, init
from aggregator.service import RunningAggregator, start_aggregator
from blindsum.config import dump_config
from blindsum.transport.pki import Role

PARTIES = ("team-a", "team-b", "team-c", "team-d", "team-e")


@dataclass
class Deployment:
    root: Path
    agg_dir: Path

    def bundle(self, name: str) -> Path:
        return self.root / "bundles" / name

    @property
    def reader(self) -> Path:
        return self.root / "bundles" / "reader-1"


@pytest.fixture(scope="session")
def deployment_template(tmp_path_factory: pytest.TempPathFactory) -> Deployment:
    root = tmp_path_factory.mktemp("deployment")
    agg_dir = root / "aggregator"
    init(agg_dir, listen="127.0.0.1:0")
    # Short phases and a fast tick keep dropout tests quick.
    cfg = cfgmod.load(agg_dir)
    from dataclasses import replace

    cfg = replace(
        cfg,
        server=replace(cfg.server, tick_interval_s=0.05),
        rounds=replace(cfg.rounds, default_phase_timeout_s=3, sparse_above=8),
        # Exact totals by default, so protocol tests can compare with plaintext sums;
        # the DP tests open their rounds with explicit DP parameters.
        release=replace(cfg.release, dp="off", allow_window_override=True),
    )
    (agg_dir / cfgmod.CONFIG_NAME).write_text(dump_config(cfg))
    for name in PARTIES:
        enroll(agg_dir, name, root / "bundles" / name)
    enroll(agg_dir, "reader-1", root / "bundles" / "reader-1", role=Role.READER)
    return Deployment(root=root, agg_dir=agg_dir)


@pytest.fixture
def deployment(deployment_template: Deployment, tmp_path: Path) -> Deployment:
    """A private copy of the template, so each test has its own store and state dirs."""
    root = tmp_path / "deployment"
    shutil.copytree(deployment_template.root, root)
    return Deployment(root=root, agg_dir=root / "aggregator")


@pytest_asyncio.fixture
async def aggregator(deployment: Deployment) -> AsyncIterator[RunningAggregator]:
    running = await start_aggregator(deployment.agg_dir, listen="127.0.0.1:0")
    try:
        yield running
    finally:
        await running.stop(grace=None)
