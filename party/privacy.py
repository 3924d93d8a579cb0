"""The party's side of differential privacy: its own policy check, and its noise.

A party does not take the aggregator's word for the privacy of a round. Before it
computes anything it checks the round's declared DP parameters against its own
policy (``[privacy]``-like keys in the bundle's party.toml):

- ``min_dp``: the weakest DP mode it accepts. ``distributed`` is the only mode that
  protects customers against the aggregator itself; ``central`` protects them only
  against report readers.
- ``max_rho``: the largest zCDP rho per release it accepts (0: no cap).
- ``expected_parties`` may not exceed the round's threshold (t in secagg, the receipt
  minimum in he): per-party noise shrinks as 1/sqrt(expected), and a round can complete
  with only t parties' noise in the sum, so an aggregator that inflated it, or dropped
  parties down to t, could otherwise see less noise than the declared rho implies.

In DISTRIBUTED rounds the party then adds its share of the discrete Gaussian to every
data slot (never the contributor indicators) before masking or encrypting, drawn from
a CSPRNG-keyed sampler (:class:`~blindsum.dp.sampler.CsprngSource`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from blindsum.dp.plan import party_noise, plan_noise
from blindsum.dp.sampler import CsprngSource, RandomSource
from blindsum.errors import ConfigError, FailedPrecondition, InvalidArgument, UnsafeRequest
from blindsum.model import DpMode, DpSpec
from blindsum.protocol.params import Adversary, ThreatModel
from blindsum.schema import MetricKind, Schema
from blindsum.transport.pki import write_private
from blindsum.types import U64Vector

_STRENGTH = {DpMode.OFF: 0, DpMode.CENTRAL: 1, DpMode.DISTRIBUTED: 2}


def parse_min_dp(value: str) -> DpMode:
    try:
        return DpMode(value)
    except ValueError:
        raise InvalidArgument("must be off, central or distributed", field="min_dp") from None


def check_round_privacy(
    dp: DpSpec,
    *,
    min_dp: DpMode,
    max_rho: float,
    threshold: int,
    allow_dp_off: bool = False,
) -> None:
    """Raise FailedPrecondition (naming ``dp``) if the round breaks this party's policy.

    ``threshold`` is the round's t (secagg) or receipt minimum (he): the fewest parties
    whose noise can end up in the sum the aggregator sees. A round without DP needs
    ``allow_dp_off``: its totals are released exact, and no budget is charged for it.
    """
    if dp.mode is DpMode.OFF and not allow_dp_off:
        raise FailedPrecondition(
            "round has no differential privacy, and this party has not consented to "
            "DP-off rounds (allow_dp_off in party.toml)",
            field="dp.mode",
        )
    if _STRENGTH[dp.mode] < _STRENGTH[min_dp]:
        raise FailedPrecondition(
            f"round uses DP mode {dp.mode.value}, this party requires at least {min_dp.value}",
            field="dp.mode",
        )
    if dp.mode is not DpMode.OFF and not (math.isfinite(dp.rho) and dp.rho > 0):
        raise FailedPrecondition(f"round's rho {dp.rho!r} is not a positive number", field="dp.rho")
    if dp.mode is not DpMode.OFF and max_rho > 0 and dp.rho > max_rho:
        raise FailedPrecondition(
            f"round's rho {dp.rho:g} exceeds this party's max_rho {max_rho:g}", field="dp.rho"
        )
    if dp.mode is DpMode.DISTRIBUTED and not 1 <= dp.expected_parties <= threshold:
        raise FailedPrecondition(
            f"expected_parties {dp.expected_parties} must be between 1 and the round's "
            f"threshold {threshold}: the round can complete with only that many parties' noise",
            field="dp.expected_parties",
        )


def set_contributors(
    schema: Schema, dp: DpSpec, vector: U64Vector, regions: tuple[str, ...]
) -> U64Vector:
    """With DP on, set each contributor indicator from the regions this party serves.

    Contributor counts are released exactly and decide k-suppression, so they must not
    depend on any one customer: a party whose only ticket in a region came from one
    customer would otherwise flip its indicator with that customer. ``regions`` empty
    means every region of the schema. A served region without tickets contributes zeros;
    data in a region the party does not serve is refused (FailedPrecondition); the ticket
    pipeline quarantines such tickets before (``unserved_region``), so only a metrics
    file can carry it.
    Without DP the indicators stay as the tickets set them.
    """
    if dp.mode is DpMode.OFF:
        return vector
    served = set(regions) if regions else set(schema.regions)
    unserved = unserved_regions_with_data(schema, vector, regions)
    if unserved:
        raise FailedPrecondition(
            f"tickets in region {unserved[0]}, which this party does not serve "
            "(party.toml regions)",
            field="regions",
        )
    out = vector.copy()
    for region in schema.regions:
        out[schema.contributor_index(region)] = np.uint64(1 if region in served else 0)
    return out


def unserved_regions_with_data(
    schema: Schema, vector: U64Vector, regions: tuple[str, ...]
) -> list[str]:
    """The schema regions outside ``regions`` (the regions this party declares it
    serves; empty means all) in which ``vector`` has any non-zero data slot."""
    if not regions:
        return []
    out = []
    for region in schema.regions:
        if region in regions:
            continue
        data = [
            schema.slot_index(region, m.name, b if m.kind is MetricKind.HISTOGRAM else None)
            for m in schema.metrics
            for b in range(m.slots)
        ]
        if any(int(vector[i]) for i in data):
            out.append(region)
    return out


def check_served_offline(schema: Schema, vector: U64Vector, regions: tuple[str, ...]) -> None:
    """Before any network call: refuse (InvalidArgument, exit 2) an input with data in a
    region this party does not declare, which a round with DP would refuse anyway."""
    unserved = unserved_regions_with_data(schema, vector, regions)
    if unserved:
        raise InvalidArgument(
            f"data in {', '.join(unserved)}, which this party does not serve "
            f"(party.toml regions: {', '.join(regions)}); nothing was sent",
            field="regions",
        )


def add_party_noise(
    schema: Schema, dp: DpSpec, vector: U64Vector, rng: RandomSource | None = None
) -> U64Vector:
    """The vector plus this party's noise share (mod 2^64); unchanged unless DISTRIBUTED."""
    if dp.mode is not DpMode.DISTRIBUTED:
        return vector
    plan = plan_noise(schema, dp.mode, dp.rho, dp.expected_parties)
    noise = party_noise(plan, rng or CsprngSource())
    # Two's complement: a negative noise value wraps, and the sum decodes signed.
    wrapped = np.array([n % (1 << 64) for n in noise], dtype=np.uint64)
    with np.errstate(over="ignore"):
        return (vector + wrapped).astype(np.uint64)


LEDGER_FORMAT = "blindsum/party-ledger/v1"


class PartyLedger:
    """The party's own record of the zCDP rho it has spent, per ISO week (UTC), in a
    0600 file next to its round state.

    The aggregator keeps a ledger per campaign and window too, but an operator names
    both: a renamed campaign or window starts a fresh budget there. This one counts
    every round the party joins, whatever it is called, in every ISO week that the
    round's ticket window overlaps (a round without a window, from an older aggregator:
    the week of the party's own clock). So a window shifted by a day still charges the
    weeks whose tickets it holds, and a round that would take any of them over
    ``max_rho_per_window`` is refused before anything is sent. A round is charged once,
    when the party joins it (retries and restarts do not charge again), and it stays
    charged even if it later aborts: the safe side.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def _entries(self) -> list[dict[str, object]]:
        if not self.path.exists():
            return []
        try:
            doc = json.loads(self.path.read_text())
            if doc.get("format") != LEDGER_FORMAT or not isinstance(doc["entries"], list):
                raise ValueError
            return [dict(e) for e in doc["entries"]]
        except (ValueError, KeyError, TypeError, AttributeError):
            raise InvalidArgument(f"{self.path.name} is corrupt", field="ledger") from None

    def spent(self, window: str) -> float:
        return _spent(self._entries(), window)

    def charge(self, *, round_id: str, weeks: Sequence[str], rho: float, limit: float) -> None:
        """Record ``rho`` for ``round_id`` in each of ``weeks`` (the ISO weeks its ticket
        window overlaps); FailedPrecondition, and nothing recorded, if it would take any
        of them over ``limit`` (0: no limit). Charging a round again is a no-op."""
        if not weeks:
            raise InvalidArgument("a round is charged to at least one week", field="weeks")
        entries = self._entries()
        if any(e.get("round_id") == round_id for e in entries):
            return
        for week in dict.fromkeys(weeks):
            spent = _spent(entries, week)
            if limit > 0 and spent + rho > limit * (1 + 1e-9):
                span = (
                    f"; its tickets span {', '.join(weeks)}, and each of those weeks is charged"
                    if len(weeks) > 1
                    else ""
                )
                raise FailedPrecondition(
                    f"round's rho {rho:g} would bring this party's spend in {week} to "
                    f"{spent + rho:g}, over its max_rho_per_window {limit:g} (party.toml)"
                    f"{span}",
                    field="dp.rho",
                )
        entries += [{"round_id": round_id, "window": w, "rho": rho} for w in dict.fromkeys(weeks)]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        doc = {"format": LEDGER_FORMAT, "entries": entries}
        write_private(self.path, json.dumps(doc, sort_keys=True).encode(), overwrite=True)


def _spent(entries: list[dict[str, object]], window: str) -> float:
    return math.fsum(float(str(e["rho"])) for e in entries if e.get("window") == window)


def check_round_threat(
    threat: ThreatModel | None,
    *,
    min_corrupt_fraction: float,
    min_adversary: str,
    min_privacy_bits: int,
) -> None:
    """Refuse a secagg round whose threat model is weaker than this party's floor.

    UnsafeRequest naming the party.toml key. The round's degree and threshold are
    then checked against the model by SecAggConfig (blindsum.protocol.params).
    """
    if threat is None:
        raise UnsafeRequest(
            "the round states no threat model, so its parameters cannot be checked",
            field="threat",
        )
    try:
        floor = Adversary(min_adversary)
    except ValueError:
        raise ConfigError(
            f"must be one of {', '.join(a.value for a in Adversary)}", field="min_adversary"
        ) from None
    if floor is Adversary.DEVIATING and threat.adversary is not Adversary.DEVIATING:
        raise UnsafeRequest(
            f"the round only defends against a {threat.adversary.value} aggregator; "
            f"party.toml min_adversary is {floor.value}",
            field="threat.adversary",
        )
    if threat.corrupt_fraction < min_corrupt_fraction:
        raise UnsafeRequest(
            f"the round tolerates a corrupt fraction of {threat.corrupt_fraction:g}, below "
            f"party.toml min_corrupt_fraction {min_corrupt_fraction:g}",
            field="threat.corrupt_fraction",
        )
    if threat.privacy_bits < min_privacy_bits:
        raise UnsafeRequest(
            f"the round aims at 2^-{threat.privacy_bits} privacy, weaker than party.toml "
            f"min_privacy_bits {min_privacy_bits}",
            field="threat.privacy_bits",
        )
