"""Type aliases shared across layers."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt

#: A vector in the ring Z_2^64. numpy's uint64 arithmetic wraps exactly.
U64Vector = npt.NDArray[np.uint64]

#: A source of cryptographically secure random bytes, like ``os.urandom``.
#: Protocol code takes one as a parameter so that tests can be deterministic;
#: production code passes :func:`secrets.token_bytes`.
RandFn = Callable[[int], bytes]
