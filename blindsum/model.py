"""Domain types shared by the party node, the aggregator and the codec.

These are plain frozen dataclasses and enums; ``blindsum.codec`` is the only
place that converts them to and from protobuf.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class Mode(enum.Enum):
    SECAGG = "secagg"
    HE = "he"


class RoundState(enum.Enum):
    OPEN = "open"
    COMPLETE = "complete"
    ABORTED = "aborted"


class Phase(enum.Enum):
    ADVERTISE = "advertise"
    SHARE = "share"
    MASK = "mask"
    CONSISTENCY = "consistency"
    UNMASK = "unmask"
    COLLECT = "collect"
    DONE = "done"


#: The phases each mode walks through, in order, before DONE.
PHASES: dict[Mode, tuple[Phase, ...]] = {
    Mode.SECAGG: (Phase.ADVERTISE, Phase.SHARE, Phase.MASK, Phase.CONSISTENCY, Phase.UNMASK),
    Mode.HE: (Phase.COLLECT,),
}


@dataclass(frozen=True)
class RoundView:
    """What invited parties and operators may see about a round."""

    round_id: str
    mode: Mode
    state: RoundState
    phase: Phase
    schema_id: str
    schema_toml: str
    parties: tuple[str, ...]
    threshold: int
    min_contributors: int
    phase_deadline_ms: int
    submitted: tuple[str, ...]
    abort_reason: str
    vector_length: int
    created_ms: int
    graph_degree: int
    advertised: tuple[str, ...] = ()
    shared: tuple[str, ...] = ()
    masked: tuple[str, ...] = ()
    unmasked: tuple[str, ...] = ()
    consistent: tuple[str, ...] = ()

    @property
    def waiting_for(self) -> tuple[str, ...]:
        """Parties expected in the current phase that have not submitted yet."""
        expected: tuple[str, ...]
        if self.state is not RoundState.OPEN:
            return ()
        if self.phase in (Phase.ADVERTISE, Phase.COLLECT):
            expected = self.parties
        elif self.phase is Phase.SHARE:
            expected = self.advertised
        elif self.phase is Phase.MASK:
            expected = self.shared
        elif self.phase is Phase.CONSISTENCY:
            expected = self.masked
        elif self.phase is Phase.UNMASK:
            expected = self.consistent
        else:
            expected = ()
        done = set(self.submitted)
        return tuple(p for p in expected if p not in done)


@dataclass(frozen=True)
class OpenRoundSpec:
    mode: Mode
    parties: tuple[str, ...]
    min_contributors: int = 3
    threshold: int = 0
    phase_timeout_s: int = 0
    schema_toml: str = ""
    round_id: str = ""


@dataclass(frozen=True)
class Cell:
    """One released total. ``value`` is exact; sums are fixed point (``value / scale``)."""

    slot: str
    value: int
    scale: int = 1

    @property
    def display(self) -> float | int:
        return self.value if self.scale == 1 else self.value / self.scale


@dataclass(frozen=True)
class RegionResult:
    region: str
    suppressed: bool
    contributors: int
    cells: tuple[Cell, ...] = field(default=())


@dataclass(frozen=True)
class Report:
    round_id: str
    schema_id: str
    mode: Mode
    regions: tuple[RegionResult, ...]
    min_contributors: int
    included_parties: tuple[str, ...]
    released_ms: int
