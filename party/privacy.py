"""The party's side of differential privacy: its own policy check, and its noise.

A party does not take the aggregator's word for the privacy of a round. Before it
computes anything it checks the round's declared DP parameters against its own
policy (``[privacy]``-like keys in the bundle's party.toml):

- ``min_dp``: the weakest DP mode it accepts. ``distributed`` is the only mode that
  protects customers against the aggregator itself; ``central`` protects them only
  against report readers.
- ``max_rho``: the largest zCDP rho per release it accepts (0: no cap).
- ``expected_parties`` may not exceed the invited parties: per-party noise shrinks as
  1/sqrt(expected), so an aggregator that inflated it could make every party add too
  little noise.

In DISTRIBUTED rounds the party then adds its share of the discrete Gaussian to every
data slot (never the contributor indicators) before masking or encrypting, drawn from
a CSPRNG-keyed sampler (:class:`~blindsum.dp.sampler.CsprngSource`).
"""

from __future__ import annotations

import numpy as np

from blindsum.dp.plan import party_noise, plan_noise
from blindsum.dp.sampler import CsprngSource, RandomSource
from blindsum.errors import FailedPrecondition, InvalidArgument
from blindsum.model import DpMode, DpSpec
from blindsum.schema import Schema
from blindsum.types import U64Vector

_STRENGTH = {DpMode.OFF: 0, DpMode.CENTRAL: 1, DpMode.DISTRIBUTED: 2}


def parse_min_dp(value: str) -> DpMode:
    try:
        return DpMode(value)
    except ValueError:
        raise InvalidArgument("must be off, central or distributed", field="min_dp") from None


def check_round_privacy(dp: DpSpec, *, min_dp: DpMode, max_rho: float, invited: int) -> None:
    """Raise FailedPrecondition (naming ``dp``) if the round breaks this party's policy."""
    if _STRENGTH[dp.mode] < _STRENGTH[min_dp]:
        raise FailedPrecondition(
            f"round uses DP mode {dp.mode.value}, this party requires at least {min_dp.value}",
            field="dp.mode",
        )
    if dp.mode is not DpMode.OFF and max_rho > 0 and dp.rho > max_rho:
        raise FailedPrecondition(
            f"round's rho {dp.rho:g} exceeds this party's max_rho {max_rho:g}", field="dp.rho"
        )
    if dp.mode is DpMode.DISTRIBUTED and not 1 <= dp.expected_parties <= invited:
        raise FailedPrecondition(
            f"expected_parties {dp.expected_parties} must be between 1 and the {invited} "
            "invited parties",
            field="dp.expected_parties",
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
