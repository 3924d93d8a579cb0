"""The party's own DP policy check, its contributor indicators, and its noise share."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from blindsum.dp.sampler import CsprngSource
from blindsum.errors import ConfigError, FailedPrecondition, UnsafeRequest
from blindsum.model import DpMode, DpSpec
from blindsum.protocol.params import DEFAULT_THREAT_MODEL, Adversary, ThreatModel
from blindsum.schema import Schema
from party.privacy import (
    add_party_noise,
    check_round_privacy,
    check_round_threat,
    set_contributors,
)

SCHEMA = Schema.default()
CENTRAL = DpSpec(DpMode.CENTRAL, 0.5, 0, "c", "w")
DISTRIBUTED = DpSpec(DpMode.DISTRIBUTED, 0.5, 3, "c", "w")


def _vector(regions: dict[str, int]) -> np.ndarray:
    values = {
        region: {
            m.name: [tickets] + [0] * (m.slots - 1) if m.slots > 1 else tickets
            for m in SCHEMA.metrics
        }
        for region, tickets in regions.items()
    }
    return SCHEMA.encode(values)


def test_policy_refuses_weaker_mode_larger_rho_and_inflated_expected_parties() -> None:
    check_round_privacy(DISTRIBUTED, min_dp=DpMode.DISTRIBUTED, max_rho=0.5, threshold=3)
    with pytest.raises(FailedPrecondition) as err:
        check_round_privacy(CENTRAL, min_dp=DpMode.DISTRIBUTED, max_rho=0.0, threshold=3)
    assert err.value.field == "dp.mode"
    with pytest.raises(FailedPrecondition) as err:
        check_round_privacy(CENTRAL, min_dp=DpMode.OFF, max_rho=0.25, threshold=3)
    assert err.value.field == "dp.rho"
    # Noise sized for more parties than the round needs to complete is too little.
    with pytest.raises(FailedPrecondition) as err:
        check_round_privacy(DISTRIBUTED, min_dp=DpMode.OFF, max_rho=0.0, threshold=2)
    assert err.value.field == "dp.expected_parties"
    for rho in (math.nan, -1.0, 0.0):
        with pytest.raises(FailedPrecondition, match="not a positive number"):
            check_round_privacy(
                DpSpec(DpMode.CENTRAL, rho), min_dp=DpMode.OFF, max_rho=0.0, threshold=3
            )


def test_contributors_come_from_served_regions_under_dp() -> None:
    vector = _vector({"APAC": 4})  # tickets only in APAC
    contributor = [SCHEMA.contributor_index(r) for r in SCHEMA.regions]
    # Without DP the tickets decide.
    off = set_contributors(SCHEMA, DpSpec(), vector, ())
    assert [int(off[i]) for i in contributor] == [1, 0, 0]
    # With DP: every schema region by default, data or not...
    every = set_contributors(SCHEMA, CENTRAL, vector, ())
    assert [int(every[i]) for i in contributor] == [1, 1, 1]
    # ...or exactly the configured ones.
    some = set_contributors(SCHEMA, CENTRAL, vector, ("APAC", "EMEA"))
    assert [int(some[i]) for i in contributor] == [1, 1, 0]
    # One customer less cannot change them: an empty served region stays a contributor.
    empty = set_contributors(SCHEMA, CENTRAL, _vector({}), ("APAC", "EMEA"))
    assert [int(empty[i]) for i in contributor] == [1, 1, 0]
    with pytest.raises(FailedPrecondition, match="does not serve") as err:
        set_contributors(SCHEMA, CENTRAL, _vector({"Americas": 1}), ("APAC",))
    assert err.value.field == "regions"


def test_party_noise_only_in_distributed_rounds_and_never_on_contributors() -> None:
    vector = _vector({"APAC": 40, "EMEA": 40, "Americas": 40})
    assert np.array_equal(add_party_noise(SCHEMA, CENTRAL, vector), vector)
    noisy = add_party_noise(SCHEMA, DISTRIBUTED, vector, CsprngSource.from_seed(b"\x01" * 32))
    diff = (noisy - vector).view(np.int64)
    for region in SCHEMA.regions:
        assert diff[SCHEMA.contributor_index(region)] == 0
    assert np.count_nonzero(diff) > SCHEMA.vector_length // 2
    again = add_party_noise(SCHEMA, DISTRIBUTED, vector, CsprngSource.from_seed(b"\x01" * 32))
    assert np.array_equal(noisy, again)  # the seeded source is deterministic


# -- the party's floor on a secagg round's threat model ---------------------------------


def _check(threat: ThreatModel | None, min_adversary: str = "deviating") -> None:
    check_round_threat(
        threat, min_corrupt_fraction=0.1, min_adversary=min_adversary, min_privacy_bits=40
    )


def test_threat_floor_accepts_the_default_model() -> None:
    _check(DEFAULT_THREAT_MODEL)


@pytest.mark.parametrize(
    ("threat", "field"),
    [
        (None, "threat"),
        (replace(DEFAULT_THREAT_MODEL, adversary=Adversary.CURIOUS), "threat.adversary"),
        (replace(DEFAULT_THREAT_MODEL, corrupt_fraction=0.05), "threat.corrupt_fraction"),
        (replace(DEFAULT_THREAT_MODEL, privacy_bits=30), "threat.privacy_bits"),
    ],
)
def test_threat_floor_refuses_a_weaker_round(threat: ThreatModel | None, field: str) -> None:
    with pytest.raises(UnsafeRequest) as err:
        _check(threat)
    assert err.value.field == field


def test_threat_floor_curious_accepts_either_adversary() -> None:
    _check(replace(DEFAULT_THREAT_MODEL, adversary=Adversary.CURIOUS), "curious")
    with pytest.raises(ConfigError) as err:
        _check(DEFAULT_THREAT_MODEL, "paranoid")
    assert err.value.field == "min_adversary"
