"""Domain types shared by the party node, the aggregator and the codec.

These are plain frozen dataclasses and enums; ``blindsum.codec`` is the only
place that converts them to and from protobuf.
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
from dataclasses import dataclass, field

from blindsum.crypto.encoding import format_dst
from blindsum.protocol.params import ThreatModel


def iso_week(when: dt.date | int) -> str:
    """The ISO week label of DP windows, e.g. ``2026-W49``: of a date, or of a time in
    milliseconds since the epoch (UTC)."""
    if isinstance(when, int):
        when = dt.datetime.fromtimestamp(when / 1000, tz=dt.UTC)
    year, week, _ = when.isocalendar()
    return f"{year}-W{week:02d}"


class Mode(enum.Enum):
    SECAGG = "secagg"
    HE = "he"


class RoundState(enum.Enum):
    OPEN = "open"
    COMPLETE = "complete"
    ABORTED = "aborted"
    #: Ended without a release because its totals failed the plausibility checks
    #: (aggregator/plausible.py); the reason names the cells.
    REJECTED = "rejected"


class Phase(enum.Enum):
    COMMIT = "commit"
    ADVERTISE = "advertise"
    SHARE = "share"
    MASK = "mask"
    CONSISTENCY = "consistency"
    UNMASK = "unmask"
    COLLECT = "collect"
    DONE = "done"


#: The phases each mode walks through, in order, before DONE.
PHASES: dict[Mode, tuple[Phase, ...]] = {
    Mode.SECAGG: (
        Phase.COMMIT,
        Phase.ADVERTISE,
        Phase.SHARE,
        Phase.MASK,
        Phase.CONSISTENCY,
        Phase.UNMASK,
    ),
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
    committed: tuple[str, ...] = ()
    advertised: tuple[str, ...] = ()
    shared: tuple[str, ...] = ()
    masked: tuple[str, ...] = ()
    unmasked: tuple[str, ...] = ()
    consistent: tuple[str, ...] = ()
    dp: DpSpec = field(default_factory=lambda: DpSpec())  # noqa: PLW0108 - defined below
    #: The tickets the round covers: created in [start, end), UTC ms; (0, 0) = all.
    window_start_ms: int = 0
    window_end_ms: int = 0
    #: The secagg threat model the degree and threshold were derived from (None: he).
    threat: ThreatModel | None = None
    #: Parties caught revealing provably wrong shares: (party, reason).
    misbehaving: tuple[tuple[str, str], ...] = ()
    #: How many parties completed each phase. A party's own view carries these counts
    #: instead of the member lists above (which stay empty), so its size does not grow
    #: with n; the operator's view carries both.
    counts: tuple[tuple[Phase, int], ...] = ()
    #: Whom a party's view is for, and the phases that party has completed.
    caller: str = ""
    caller_done: tuple[Phase, ...] = ()

    def _members(self, phase: Phase) -> tuple[str, ...]:
        members = {
            Phase.COMMIT: self.committed,
            Phase.ADVERTISE: self.advertised,
            Phase.SHARE: self.shared,
            Phase.MASK: self.masked,
            Phase.CONSISTENCY: self.consistent,
            Phase.UNMASK: self.unmasked,
        }.get(phase, ())
        # The current phase's members are also in ``submitted`` (the only list in he).
        return members or (self.submitted if phase is self.phase else ())

    def count(self, phase: Phase) -> int:
        """How many parties completed ``phase``."""
        for known, n in self.counts:
            if known is phase:
                return n
        return len(self._members(phase))

    def did(self, party: str, phase: Phase) -> bool:
        """Whether ``party`` completed ``phase`` (for a party's own view: itself only)."""
        if self.caller and party == self.caller:
            return phase in self.caller_done
        return party in self._members(phase)

    def progress(self) -> tuple[int, int]:
        """(done, expected) in the current phase: the parties that completed the phase
        before it are the ones it waits for."""
        order = PHASES.get(self.mode, ())
        if self.phase not in order:
            return 0, 0
        i = order.index(self.phase)
        expected = len(self.parties) if i == 0 else self.count(order[i - 1])
        return self.count(self.phase), expected

    @property
    def waiting_for(self) -> tuple[str, ...]:
        """Parties expected in the current phase that have not submitted yet. A party's own
        view carries no member lists: use :meth:`progress` there."""
        order = PHASES.get(self.mode, ())
        if self.state is not RoundState.OPEN or self.phase not in order:
            return ()
        i = order.index(self.phase)
        expected = self.parties if i == 0 else self._members(order[i - 1])
        done = set(self.submitted)
        return tuple(p for p in expected if p not in done)


class DpMode(enum.Enum):
    """Who adds the differential-privacy noise.

    ``OFF``: nobody; released totals are exact. ``CENTRAL``: the release step adds a
    discrete Gaussian (OpenDP) to the exact totals, so readers see noise but the
    aggregator (or custodian) sees exact totals. ``DISTRIBUTED``: each party adds its
    share of a discrete Gaussian before masking or encrypting, so the aggregator only
    ever sees noisy sums.
    """

    OFF = "off"
    CENTRAL = "central"
    DISTRIBUTED = "distributed"


@dataclass(frozen=True)
class DpSpec:
    """The DP parameters a round is opened with; parties see them in the round view.

    ``rho`` is the zCDP target of this round's release (0 when ``mode`` is OFF).
    ``expected_parties`` is the number of parties over which distributed noise is split
    (the invited count unless the operator says otherwise). ``campaign`` and ``window``
    name the budget-ledger account charged by the release.
    """

    mode: DpMode = DpMode.OFF
    rho: float = 0.0
    expected_parties: int = 0
    campaign: str = ""
    window: str = ""


@dataclass(frozen=True)
class OpenRoundSpec:
    mode: Mode
    parties: tuple[str, ...]
    min_contributors: int = 3
    threshold: int = 0
    phase_timeout_s: int = 0
    schema_toml: str = ""
    round_id: str = ""
    #: None picks the aggregator's configured default.
    dp: DpSpec | None = None
    #: The ticket window, UTC ms, end exclusive; both 0 picks the default window.
    window_start_ms: int = 0
    window_end_ms: int = 0
    #: The secagg threat model; None takes the aggregator's configured one.
    threat: ThreatModel | None = None
    #: The graph degree; 0 lets the parameter finder choose.
    graph_degree: int = 0


class CellStatus(enum.Enum):
    RELEASED = "released"
    #: A histogram bin merged with neighbours because it was below the cell minimum;
    #: the cell's ``lo``/``hi`` span every bin it absorbed.
    MERGED = "merged"
    #: Withheld (value None); see docs/THREAT_MODEL.md for what a reader can infer.
    SUPPRESSED = "suppressed"


@dataclass(frozen=True)
class Cell:
    """One released total.

    ``value`` is the released integer (noisy when DP is on, None when suppressed); sums
    are fixed point, so the value in the metric's unit is ``value / scale``. ``noise_sd``
    is the standard deviation of the DP noise in ``value`` units (0 without DP).
    Histogram bins carry their bounds ``lo``/``hi`` in the metric's unit.
    """

    slot: str
    value: int | None
    scale: int = 1
    noise_sd: float = 0.0
    status: CellStatus = CellStatus.RELEASED
    metric: str = ""
    lo: float | None = None
    hi: float | None = None

    @property
    def display(self) -> float | int | None:
        if self.value is None:
            return None
        return self.value if self.scale == 1 else self.value / self.scale


@dataclass(frozen=True)
class Statistic:
    """A statistic derived from released cells, with an interval for the DP noise.

    ``low``/``high`` bound a two-sided interval at the report's confidence level that
    accounts for the DP noise only (not for sampling variation between weeks). ``value``
    is None when the statistic cannot be computed (suppressed inputs, no data), and
    ``note`` then says why.
    """

    name: str
    value: float | None
    low: float | None = None
    high: float | None = None
    unit: str = ""
    note: str = ""


class FlagKind(enum.Enum):
    SLO = "slo"
    MOVEMENT = "movement"


class Severity(enum.Enum):
    #: Beyond the threshold by more than the DP noise explains.
    BREACH = "breach"
    #: The point estimate is beyond the threshold, but within the noise.
    WATCH = "watch"


@dataclass(frozen=True)
class Flag:
    """A service-failure flag on one region, with a plain-language reason."""

    kind: FlagKind
    severity: Severity
    statistic: str
    value: float
    threshold: float
    reason: str


@dataclass(frozen=True)
class TrendPoint:
    """One statistic of one earlier (or this) release of the same campaign.

    ``window`` is that release's DP budget window (e.g. its ISO week "2026-W46"), what a
    reader calls the release by; None in trends stored before it was recorded.
    """

    round_id: str
    released_ms: int
    statistic: str
    value: float | None
    low: float | None = None
    high: float | None = None
    window: str | None = None


@dataclass(frozen=True)
class RegionResult:
    region: str
    suppressed: bool
    contributors: int
    cells: tuple[Cell, ...] = field(default=())
    stats: tuple[Statistic, ...] = field(default=())
    flags: tuple[Flag, ...] = field(default=())
    #: This region's statistics over the campaign's recent releases, oldest first,
    #: this release last.
    trend: tuple[TrendPoint, ...] = field(default=())


@dataclass(frozen=True)
class MetricNoise:
    """The noise one metric's slots received, and why."""

    metric: str
    #: L1 and L2 sensitivity of the metric's slots to one customer (schema units).
    l1: int
    l2: int
    #: Standard deviation of the total noise per slot, in slot units.
    sigma: float
    #: This metric's share of the release's zCDP rho.
    rho: float


@dataclass(frozen=True)
class DpRelease:
    """What the release step did for differential privacy, for the lineage section.

    ``rho`` is what readers' view costs and what the ledger charged; ``epsilon`` is its
    (epsilon, delta)-DP conversion. ``rho_vs_aggregator`` is the guarantee against the
    aggregator itself: None in CENTRAL mode (it sees exact totals), the surviving
    parties' noise alone in DISTRIBUTED mode.
    """

    mode: DpMode
    rho: float = 0.0
    epsilon: float = 0.0
    delta: float = 0.0
    rho_vs_aggregator: float | None = None
    campaign: str = ""
    window: str = ""
    budget_rho: float = 0.0
    #: Ledger total of the window after this release.
    spent_rho: float = 0.0
    expected_parties: int = 0
    noisy_parties: int = 0
    noise: tuple[MetricNoise, ...] = field(default=())

    @property
    def remaining_rho(self) -> float:
        return max(0.0, self.budget_rho - self.spent_rho)


class SloKind(enum.Enum):
    #: The statistic must stay at or below the threshold (escalation rate, p90 times).
    MAX = "max"
    #: The statistic must stay at or above the threshold (CSAT mean).
    MIN = "min"


@dataclass(frozen=True)
class Slo:
    """A configured service-level objective on one derived statistic."""

    statistic: str
    kind: SloKind
    threshold: float


@dataclass(frozen=True)
class Lineage:
    software_version: str
    anonymization_rules: str
    schema_name: str
    schema_version: int
    min_cell: int
    confidence: float


@dataclass(frozen=True)
class Report:
    round_id: str
    schema_id: str
    mode: Mode
    regions: tuple[RegionResult, ...]
    min_contributors: int
    included_parties: tuple[str, ...]
    released_ms: int
    dp: DpRelease = field(default_factory=lambda: DpRelease(DpMode.OFF))
    lineage: Lineage | None = None
    slos: tuple[Slo, ...] = field(default=())


def round_context(
    *, window_start_ms: int, window_end_ms: int, dp: DpSpec, min_contributors: int
) -> bytes:
    """SHA-256 over what a round shows its parties besides the secagg parameters: the
    ticket window, the DP parameters and k. SecAggConfig binds it, so an aggregator
    cannot show parties of one round different windows or noise levels."""
    return hashlib.sha256(
        format_dst(
            "round/context/v1",
            max(window_start_ms, 0),
            max(window_end_ms, 0),
            dp.mode.value,
            repr(float(dp.rho)),
            dp.expected_parties,
            dp.campaign,
            dp.window,
            min_contributors,
        )
    ).digest()
