"""Central DP: the release step adds discrete Gaussian noise to exact totals via OpenDP.

Each metric's slots (every region) form one OpenDP measurement,
``make_gaussian(vector_domain(atom_domain(i64)), l2_distance(i64), scale=sigma)`` with
zero-concentrated divergence. Before sampling, the measurement's own privacy map at the
metric's L2 sensitivity must not exceed the rho our plan assigned, so OpenDP's accounting
backs ours; a mismatch is a bug and raises :class:`~blindsum.errors.Internal`.

The element type is i64 rather than Python ``int`` because OpenDP maps ``int`` to i32,
which sum metrics overflow. OpenDP samples from the OS CSPRNG; this module takes no
random source.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import opendp.prelude as dp

from blindsum.dp.plan import NoisePlan, noise_bound
from blindsum.errors import Internal, InvalidArgument
from blindsum.model import DpMode

__all__ = ["central_noise", "opendp_rho"]

dp.enable_features("contrib")

_I64_MAX = (1 << 63) - 1
#: Relative slack between OpenDP's map and our rho: both compute l2^2/(2 sigma^2), in
#: differently rounded floating point.
_RHO_RTOL = 1e-9


def _measurement(sigma: float) -> Any:
    """The OpenDP discrete Gaussian on i64 vectors under L2 distance, as zCDP."""
    return dp.m.make_gaussian(
        dp.vector_domain(dp.atom_domain(T="i64")),
        dp.l2_distance(T="i64"),
        scale=float(sigma),
    )


def opendp_rho(l2: int, sigma: float) -> float:
    """OpenDP's zCDP rho for a query of L2 sensitivity ``l2`` with noise scale ``sigma``."""
    if isinstance(l2, bool) or not isinstance(l2, int) or not 0 <= l2 <= _I64_MAX:
        raise InvalidArgument("must be a non-negative int64", field="l2")
    if isinstance(sigma, bool) or not isinstance(sigma, int | float) or not sigma > 0:
        raise InvalidArgument("must be > 0", field="sigma")
    try:
        return float(_measurement(sigma).map(l2))
    except dp.OpenDPException as exc:
        raise Internal(f"OpenDP rejected the measurement: {exc}", field="sigma") from None


def central_noise(plan: NoisePlan, totals: Sequence[int]) -> list[int]:
    """``totals`` plus central noise: each metric's slots through one OpenDP discrete
    Gaussian of the plan's sigma; contributor slots are returned unchanged.

    Preconditions: ``plan`` is CENTRAL, ``len(totals) == plan.vector_length``, and every
    total is an int with ``|total| + noise_bound(plan) <= 2^63 - 1`` so that the noisy
    value still fits OpenDP's i64 (InvalidArgument otherwise).
    """
    if not isinstance(plan, NoisePlan):
        raise InvalidArgument("must be a NoisePlan", field="plan")
    if plan.mode is not DpMode.CENTRAL:
        raise InvalidArgument(
            f"central noise needs a central plan, not {plan.mode.value}", field="mode"
        )
    if len(totals) != plan.vector_length:
        raise InvalidArgument(
            f"need {plan.vector_length} totals, got {len(totals)}", field="totals"
        )
    limit = _I64_MAX - noise_bound(plan)
    out: list[int] = []
    for i, total in enumerate(totals):
        if isinstance(total, bool) or not isinstance(total, int):
            raise InvalidArgument("must be an integer", field=f"totals[{i}]")
        if abs(total) > limit:
            raise InvalidArgument("outside int64 (with room for the noise)", field=f"totals[{i}]")
        out.append(total)
    for m in plan.metrics:
        meas = _measurement(m.sigma)
        try:
            spent = float(meas.map(m.l2))
        except dp.OpenDPException as exc:
            raise Internal(f"OpenDP privacy map failed: {exc}", field=m.metric) from None
        if not spent <= m.rho * (1 + _RHO_RTOL):
            raise Internal(
                f"OpenDP charges rho {spent!r} but the plan allows {m.rho!r}", field=m.metric
            )
        try:
            noisy = meas([out[i] for i in m.slots])
        except dp.OpenDPException as exc:
            raise Internal(f"OpenDP sampling failed: {exc}", field=m.metric) from None
        for i, value in zip(m.slots, noisy, strict=True):
            out[i] = int(value)
    return out
