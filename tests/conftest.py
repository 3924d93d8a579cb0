"""Shared fixtures: a real aggregator directory (dev CA generated at test time)."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import pytest_asyncio

from aggregator import config as cfgmod
from aggregator.admin import enroll, init
from aggregator.rounds import RoundManager
from aggregator.service import RunningAggregator, start_aggregator
from aggregator.store import now_ms, open_store
from blindsum.bundle import BUNDLE_CONFIG, PartyConfig
from blindsum.config import dump_config, load_config
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
        # Phase deadlines are a safety net here: the tests' SteppedClock expires a phase
        # as soon as only parties that are gone are left in it (run_parties).
        rounds=replace(cfg.rounds, default_phase_timeout_s=120, sparse_above=8),
        # Exact totals by default, so protocol tests can compare with plaintext sums;
        # the DP tests open their rounds with explicit DP parameters.
        release=replace(cfg.release, dp="off", allow_window_override=True),
    )
    (agg_dir / cfgmod.CONFIG_NAME).write_text(dump_config(cfg))
    for name in PARTIES:
        bundle = root / "bundles" / name
        enroll(agg_dir, name, bundle)
        # The protocol tests run DP-off rounds (exact totals), which need each party's
        # consent; the DP tests open their rounds with explicit DP parameters.
        party_toml = bundle / BUNDLE_CONFIG
        party_toml.write_text(
            dump_config(replace(load_config(party_toml, PartyConfig), allow_dp_off=True))
        )
    enroll(agg_dir, "reader-1", root / "bundles" / "reader-1", role=Role.READER)
    return Deployment(root=root, agg_dir=agg_dir)


@pytest.fixture
def deployment(deployment_template: Deployment, tmp_path: Path) -> Deployment:
    """A private copy of the template, so each test has its own store and state dirs."""
    root = tmp_path / "deployment"
    shutil.copytree(deployment_template.root, root)
    return Deployment(root=root, agg_dir=root / "aggregator")


class SteppedClock:
    """The aggregator's clock in tests: the wall clock plus an offset the test moves
    forward, so a phase that waits for parties that are gone (dropped, refused, never
    started) closes at once instead of after a real-time deadline. Nothing then depends
    on how fast a loaded machine runs the parties that are still there."""

    def __init__(self) -> None:
        self.offset_ms = 0

    def __call__(self) -> int:
        return now_ms() + self.offset_ms

    def pass_deadline(self, deadline_ms: int) -> None:
        self.offset_ms += max(0, deadline_ms - self()) + 1


#: Aggregators started by the fixture, by port: run_parties drives their clocks.
STEPPED: dict[int, tuple[RoundManager, SteppedClock]] = {}


@pytest_asyncio.fixture
async def aggregator(deployment: Deployment) -> AsyncIterator[RunningAggregator]:
    clock = SteppedClock()
    running = await start_aggregator(deployment.agg_dir, listen="127.0.0.1:0", clock_ms=clock)
    STEPPED[running.port] = (running.manager, clock)
    try:
        yield running
    finally:
        STEPPED.pop(running.port, None)
        await running.stop(grace=None)


# -- PostgreSQL: one throwaway database per test ------------------------------------

PG_SERVER = "postgresql://postgres@127.0.0.1:5432"


def pg_unavailable() -> str | None:
    """Why PostgreSQL tests cannot run here, or None when the server answers."""
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed"
    try:
        with psycopg.connect(f"{PG_SERVER}/postgres", connect_timeout=3):
            return None
    except Exception as exc:  # any connection failure means: skip
        return f"PostgreSQL at 127.0.0.1:5432 is not reachable ({type(exc).__name__})"


def _pg_admin(sql: str, params: tuple[object, ...] = ()) -> None:
    import psycopg

    with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True, connect_timeout=5) as conn:
        conn.execute(sql.encode(), params)


def pg_terminate(database: str) -> None:
    """Close every server connection to ``database`` (what a failover or restart does)."""
    _pg_admin(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE datname = %s AND pid <> pg_backend_pid()",
        (database,),
    )


def pg_allow_connections(database: str, allow: bool) -> None:
    _pg_admin(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS {"true" if allow else "false"}')


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A URL to a database created for this test alone and dropped after it; skips,
    naming the reason, when no server answers on 127.0.0.1:5432."""
    reason = pg_unavailable()
    if reason:
        pytest.skip(reason)
    name = f"blindsum_test_{uuid.uuid4().hex[:12]}"
    _pg_admin(f'CREATE DATABASE "{name}"')
    try:
        yield f"{PG_SERVER}/{name}"
    finally:
        pg_allow_connections(name, True)
        pg_terminate(name)
        _pg_admin(f'DROP DATABASE IF EXISTS "{name}"')


def on_postgres(deployment: Deployment, pg_url: str) -> cfgmod.AggregatorConfig:
    """The deployment's aggregator config with its store moved to ``pg_url``: the
    parties enrolled in its SQLite store are enrolled there too."""
    cfg = cfgmod.load(deployment.agg_dir)
    source = open_store(cfg.store.url, base_dir=deployment.agg_dir)
    target = open_store(pg_url, create=True)
    try:
        for party in source.parties():
            target.enroll(party.name, party.identity_cert_pem)
    finally:
        source.close()
        target.close()
    return replace(cfg, store=replace(cfg.store, url=pg_url))
