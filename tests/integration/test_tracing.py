"""Issue 13, item 4: OpenTelemetry spans per RPC and per phase when the otel extra is
installed (the dev extra installs it); nothing when it is not."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from aggregator.service import RunningAggregator
from blindsum import tracing
from blindsum.model import Mode, OpenRoundSpec, RoundState
from tests.conftest import PARTIES, Deployment
from tests.integration.test_rounds_grpc import party_vector, run_parties

otel = pytest.importorskip("opentelemetry.sdk.trace", reason="the otel extra is not installed")
from opentelemetry import trace  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: E402
    InMemorySpanExporter,
)


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = trace.get_tracer_provider()
    if not isinstance(provider, otel.TracerProvider):
        provider = otel.TracerProvider()
        trace.set_tracer_provider(provider)  # once per process; later tests reuse it
    provider = trace.get_tracer_provider()
    assert isinstance(provider, otel.TracerProvider)
    processor = SimpleSpanProcessor(exporter)
    provider.add_span_processor(processor)
    try:
        yield exporter
    finally:
        processor.shutdown()


async def test_rpcs_and_phases_are_spans(
    deployment: Deployment, aggregator: RunningAggregator, spans: InMemorySpanExporter
) -> None:
    view = await aggregator.manager.open_round(OpenRoundSpec(mode=Mode.SECAGG, parties=PARTIES))
    vectors = {n: party_vector(i) for i, n in enumerate(PARTIES)}
    await run_parties(deployment, aggregator.port, view.round_id, vectors)
    assert aggregator.manager.view(view.round_id).state is RoundState.COMPLETE
    finished = spans.get_finished_spans()
    rpcs = [s for s in finished if s.name == "rpc Commit"]
    assert len(rpcs) == len(PARTIES)
    assert all(s.attributes["rpc.grpc.status_code"] == "OK" for s in rpcs)  # type: ignore[index]
    assert rpcs[0].attributes["rpc.method"] == "/blindsum.rpc.v1.RoundService/Commit"  # type: ignore[index]
    phases = {s.name: s for s in finished if s.name.startswith("phase ")}
    for phase in ("commit", "advertise", "share", "mask", "consistency", "unmask"):
        s = phases[f"phase {phase}"]
        assert s.attributes == {"round_id": view.round_id, "mode": "secagg"}
        assert s.end_time is not None and s.start_time is not None
        assert s.end_time >= s.start_time
    # Nothing in a span is a value of a party's: only names, codes and ids.
    for s in finished:
        for value in (s.attributes or {}).values():
            assert isinstance(value, str | int)


def test_without_the_extra_nothing_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tracing, "_trace", None)
    assert not tracing.enabled()
    with tracing.span("rpc X", rpc="x") as current:
        assert current is None
        tracing.set_attribute(current, "k", "v")
    tracing.record("phase x", 0, 1)
