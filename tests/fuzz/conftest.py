"""Fuzz targets (issue 12, item 6): every parser of bytes from someone else either
accepts them or raises a BlindsumError naming the problem; anything else is a crash.

``make test`` runs each target for a few dozen examples. ``make fuzz`` runs them with
the ``fuzz`` profile: many more examples per target (``BLINDSUM_FUZZ_EXAMPLES``,
default 2,000), still bounded. A crash found becomes an ``@example`` on its target.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "fuzz-quick",
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "fuzz",
    max_examples=int(os.environ.get("BLINDSUM_FUZZ_EXAMPLES", "2000")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
FUZZ_PROFILE = "fuzz" if os.environ.get("BLINDSUM_FUZZ") else "fuzz-quick"
