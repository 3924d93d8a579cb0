"""The canonical ticket: what ingest produces and anonymize and metrics consume.

Every source (CSV, JSONL, SQL) is mapped onto these fields by a column-mapping
file. Timestamps are timezone-aware UTC datetimes. Durations in hours are
either given by the source or derived from the timestamps by ingest.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, fields
from datetime import datetime


class Status(enum.Enum):
    OPEN = "open"
    ESCALATED = "escalated"
    RESOLVED = "resolved"


#: Fields that identify a customer. They never leave the node in clear.
IDENTITY_FIELDS = (
    "requester_name",
    "requester_email",
    "requester_phone",
    "requester_username",
    "order_id",
    "address",
)
TIMESTAMP_FIELDS = ("created", "first_response_at", "escalated_at", "resolved_at")
DURATION_FIELDS = ("first_response_hours", "resolution_hours")
STATE_FIELDS = ("status", "region", "country", "channel", "category", "priority")
FEEDBACK_FIELDS = ("csat", "nps", "subject", "description")
FREE_TEXT_FIELDS = ("subject", "description")


@dataclass(frozen=True)
class Ticket:
    """One support ticket in canonical form.

    ``line`` is where the row came from (1-based line of a CSV/JSONL file, or
    1-based row number of a SQL result), so every later error can name it.
    Identity fields are hidden from ``repr`` so a ticket never leaks PII into a
    log line or a traceback.
    """

    line: int
    ticket_id: str
    region: str
    status: Status
    created: datetime | None = None
    first_response_at: datetime | None = None
    escalated_at: datetime | None = None
    resolved_at: datetime | None = None
    first_response_hours: float | None = None
    resolution_hours: float | None = None
    country: str | None = None
    channel: str | None = None
    category: str | None = None
    priority: str | None = None
    csat: int | None = None
    nps: int | None = None
    requester_name: str | None = field(default=None, repr=False)
    requester_email: str | None = field(default=None, repr=False)
    requester_phone: str | None = field(default=None, repr=False)
    requester_username: str | None = field(default=None, repr=False)
    order_id: str | None = field(default=None, repr=False)
    address: str | None = field(default=None, repr=False)
    subject: str | None = field(default=None, repr=False)
    description: str | None = field(default=None, repr=False)
    #: Extra source columns the mapping carries through for the anonymized export
    #: (for example a customer age or birth date), as (name, raw value) pairs.
    extras: tuple[tuple[str, str], ...] = field(default=(), repr=False)

    @property
    def escalated(self) -> bool:
        return self.status is Status.ESCALATED or self.escalated_at is not None

    @property
    def resolved(self) -> bool:
        return self.status is Status.RESOLVED

    @property
    def replied(self) -> bool:
        """The ticket had a first reply (the ``replied`` metric)."""
        return self.first_response_at is not None or self.first_response_hours is not None


CANONICAL_FIELDS: tuple[str, ...] = tuple(
    f.name for f in fields(Ticket) if f.name not in ("line", "extras")
)
