"""The composition roots: the ``blindsum`` command and the demo.

This layer sits above both roles. It may import ``party``, ``aggregator`` and the
shared core ``blindsum``; none of them imports it, and the shared core imports no
role at all (docs/ARCHITECTURE.md).
"""
