"""Seeded synthetic ticket exports for demos and tests (not secret, not for production).

:func:`generate_rows` produces one team's helpdesk export in the column names of the
*generic* mapping preset (``party/mappings/generic.toml``), so the rows go through the
same ingest -> anonymize -> metrics pipeline as a real export:

- CSAT skewed towards 4-5 and given only by some resolved tickets;
- long-tailed (lognormal) first-response and resolution times;
- few escalations (about 5 %);
- repeat customers (some customers file several tickets in the period);
- the requester's name, email, phone, username and order id embedded in the free text;
- optionally a *service failure* in one region: escalations times
  ``escalation_multiplier``, worse CSAT and longer resolution times there.

Everything is drawn from ``numpy.random.default_rng`` and a Faker instance seeded from
``seed`` and the team name: the output is deterministic per (profile, seed, start, days).
These generators are *not* cryptographic and must never be used for anything secret.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np
from faker import Faker

from blindsum.errors import InvalidArgument

__all__ = [
    "COLUMNS",
    "NPS_COLUMN",
    "TeamProfile",
    "generate_rows",
    "write_rows",
]

#: Columns of every generated row, in export order (generic preset names).
COLUMNS: tuple[str, ...] = (
    "ticket_id",
    "created_date",
    "channel",
    "category",
    "priority",
    "team",
    "first_response_minutes",
    "resolution_hours",
    "status",
    "resolved_date",
    "csat_score",
    "nps_score",
    "region",
    "country",
    "requester_name",
    "requester_email",
    "requester_phone",
    "requester_username",
    "order_id",
    "subject",
    "description",
)
#: The optional NPS column, left out when ``TeamProfile.nps_rate`` is 0.
NPS_COLUMN = "nps_score"

_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"

_BASE_ESCALATION = 0.05
_RESOLVED_SHARE = 0.78  # of the non-escalated tickets; the rest are still open
_CSAT_RESPONSE_RATE = 0.7  # resolved tickets whose requester answered the survey
_CSAT_NORMAL = (0.04, 0.05, 0.11, 0.30, 0.50)  # P(score = 1..5)
_CSAT_FAILURE = (0.18, 0.17, 0.25, 0.24, 0.16)
_REPEAT_CUSTOMER = 0.3  # chance a ticket comes from an earlier customer of the region

# Known regions get plausible countries and Faker locales; others get a generic mix.
_REGION_COUNTRIES: dict[str, tuple[tuple[str, str], ...]] = {
    "APAC": (
        ("Australia", "en_AU"),
        ("India", "en_IN"),
        ("New Zealand", "en_NZ"),
        ("Singapore", "en_US"),
    ),
    "EMEA": (
        ("United Kingdom", "en_GB"),
        ("Ireland", "en_IE"),
        ("Germany", "en_GB"),
        ("South Africa", "en_GB"),
        ("Netherlands", "en_GB"),
    ),
    "Americas": (
        ("United States", "en_US"),
        ("Canada", "en_CA"),
        ("Brazil", "en_US"),
        ("Mexico", "en_US"),
    ),
}
_DEFAULT_COUNTRIES: tuple[tuple[str, str], ...] = (("Elsewhere", "en_US"),)

_CHANNELS = ("Email", "Chat", "Phone", "Social Media", "Self-Service")
_CHANNEL_P = (0.32, 0.36, 0.18, 0.10, 0.04)
_PRIORITIES = ("Low", "Medium", "High", "Critical")
_PRIORITY_P = (0.38, 0.36, 0.20, 0.06)
_CATEGORIES = (
    "Account Access",
    "Billing",
    "Refund Request",
    "Delivery Delay",
    "Order Change",
    "Technical Issue",
    "Cancellation Request",
)

# Subject and description templates. Fields: {name} {email} {phone} {username} {order}.
_SUBJECTS: dict[str, tuple[str, ...]] = {
    "Account Access": (
        "Cannot log in as {username}",
        "Locked out of account {email}",
        "Password reset for {name}",
    ),
    "Billing": (
        "Double charge on order {order}",
        "Invoice question from {name}",
        "Billing error, please call {phone}",
    ),
    "Refund Request": (
        "Refund for order {order}",
        "{name} asks for a refund",
        "Refund not received ({email})",
    ),
    "Delivery Delay": (
        "Where is my order {order}?",
        "Late delivery for {name}",
        "Order {order} still not here",
    ),
    "Order Change": (
        "Change address on order {order}",
        "Please update order {order} for {name}",
        "Wrong size ordered - {username}",
    ),
    "Technical Issue": (
        "App crashes for user {username}",
        "Error when paying order {order}",
        "Website broken, contact {email}",
    ),
    "Cancellation Request": (
        "Cancel order {order}",
        "Cancellation request from {name}",
        "Please cancel my subscription ({email})",
    ),
}
_OPENINGS = (
    "Hi, this is {name}.",
    "Hello team, {name} here.",
    "Dear support,",
    "Hi there,",
    "Good morning, my name is {name}.",
)
_BODIES = (
    "My order {order} has a problem and I need help with it.",
    "I already wrote about order {order} last week but nobody answered.",
    "Something went wrong with my account {username} after the last update.",
    "The charge for order {order} looks wrong on my statement.",
    "I am still waiting for an answer about {order}.",
)
_CONTACTS = (
    "You can reach me at {phone} or by email at {email}.",
    "Please call me back on {phone}.",
    "Reply to {email} please, I check it daily.",
    "My username is {username} and my email is {email}.",
    "Call {phone} any time after 9am.",
)
_CLOSINGS = (
    "Thanks, {name}",
    "Regards, {name}",
    "Best, {name} ({email})",
    "Thank you!",
    "Cheers - {name}, {phone}",
)


@dataclass(frozen=True)
class TeamProfile:
    """One team's synthetic export.

    ``failure_region`` (one of ``regions``) simulates a service failure there:
    escalations times ``escalation_multiplier``, worse CSAT, longer resolutions.
    ``nps_rate`` is the share of resolved tickets with an NPS answer (0 omits the
    ``nps_score`` column).
    """

    name: str
    regions: tuple[str, ...] = ("APAC", "EMEA", "Americas")
    tickets_per_region: int = 200
    failure_region: str | None = None
    escalation_multiplier: float = 3.0
    nps_rate: float = 0.25

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise InvalidArgument("team name must be a non-empty string", field="profile.name")
        if (
            not isinstance(self.regions, tuple)
            or not self.regions
            or not all(isinstance(r, str) and r for r in self.regions)
            or len(set(self.regions)) != len(self.regions)
        ):
            raise InvalidArgument(
                "regions must be a non-empty tuple of distinct names", field="profile.regions"
            )
        if (
            isinstance(self.tickets_per_region, bool)
            or not isinstance(self.tickets_per_region, int)
            or not 0 <= self.tickets_per_region <= 1_000_000
        ):
            raise InvalidArgument(
                "tickets_per_region must be an integer in [0, 1000000]",
                field="profile.tickets_per_region",
            )
        if self.failure_region is not None and self.failure_region not in self.regions:
            raise InvalidArgument(
                "failure_region must be one of the profile's regions",
                field="profile.failure_region",
            )
        if not 0 < self.escalation_multiplier <= 1 / _BASE_ESCALATION:
            raise InvalidArgument(
                f"escalation_multiplier must be in (0, {1 / _BASE_ESCALATION:g}]",
                field="profile.escalation_multiplier",
            )
        if not 0 <= self.nps_rate <= 1:
            raise InvalidArgument("nps_rate must be in [0, 1]", field="profile.nps_rate")


@dataclass(frozen=True)
class _Customer:
    name: str
    email: str
    phone: str
    username: str
    country: str


def _seed_words(seed: int, team: str) -> list[int]:
    """Seed material for numpy's SeedSequence: the seed and a hash of the team name."""
    digest = hashlib.sha256(team.encode("utf-8")).digest()
    return [seed & 0xFFFFFFFFFFFFFFFF, int.from_bytes(digest[:8], "big")]


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "", text.lower())


def _new_customer(fake: Faker, rng: np.random.Generator, country: str) -> _Customer:
    first, last = fake.first_name(), fake.last_name()
    local = f"{_slug(first) or 'user'}.{_slug(last) or 'x'}"
    if rng.random() < 0.5:
        local += str(int(rng.integers(1, 100)))
    email = f"{local}@{fake.free_email_domain()}"
    username = f"{_slug(first)[:1]}{_slug(last)}{int(rng.integers(10, 1000))}"
    return _Customer(
        name=f"{first} {last}",
        email=email,
        phone=fake.phone_number(),
        username=username,
        country=country,
    )


def _pick(
    rng: np.random.Generator, options: Sequence[str], p: Sequence[float] | None = None
) -> str:
    index = int(rng.choice(len(options), p=None if p is None else np.asarray(p)))
    return options[index]


def _free_text(rng: np.random.Generator, category: str, fields: dict[str, str]) -> tuple[str, str]:
    subject = _pick(rng, _SUBJECTS[category]).format(**fields)
    parts = [
        _pick(rng, _OPENINGS),
        _pick(rng, _BODIES),
        _pick(rng, _CONTACTS),
        _pick(rng, _CLOSINGS),
    ]
    description = " ".join(parts).format(**fields)
    if rng.random() < 0.15:
        # Real requesters do not care about case; anonymization must not either.
        description = description.replace(fields["email"], fields["email"].upper())
    return subject, description


def generate_rows(
    profile: TeamProfile, *, seed: int, start: date, days: int = 7
) -> list[dict[str, str]]:
    """Generate ``profile.tickets_per_region`` tickets per region created in
    ``[start, start + days)``; every value is a string ("" when empty).

    Deterministic per (profile, seed, start, days). ``days`` must be >= 1.
    """
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise InvalidArgument("seed must be an integer", field="seed")
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= 3660:
        raise InvalidArgument("days must be an integer in [1, 3660]", field="days")
    if not isinstance(start, date):
        raise InvalidArgument("start must be a date", field="start")
    rng = np.random.default_rng(_seed_words(seed, profile.name))
    fakers: dict[str, Faker] = {}

    def faker_for(locale: str) -> Faker:
        if locale not in fakers:
            fake = Faker(locale)
            fake.seed_instance(int(rng.integers(0, 2**63 - 1)))
            fakers[locale] = fake
        return fakers[locale]

    base = datetime(start.year, start.month, start.day)
    span_seconds = days * 86400
    with_nps = profile.nps_rate > 0
    rows: list[dict[str, str]] = []
    for region in profile.regions:
        failing = region == profile.failure_region
        escalation_p = _BASE_ESCALATION * (profile.escalation_multiplier if failing else 1.0)
        countries = _REGION_COUNTRIES.get(region, _DEFAULT_COUNTRIES)
        customers: list[_Customer] = []
        for _ in range(profile.tickets_per_region):
            if customers and rng.random() < _REPEAT_CUSTOMER:
                customer = customers[int(rng.integers(0, len(customers)))]
            else:
                country, locale = countries[int(rng.integers(0, len(countries)))]
                customer = _new_customer(faker_for(locale), rng, country)
                customers.append(customer)
            created = base + timedelta(seconds=int(rng.integers(0, span_seconds)))
            category = _pick(rng, _CATEGORIES)
            priority = _pick(rng, _PRIORITIES, _PRIORITY_P)
            first_response_minutes = float(rng.lognormal(mean=np.log(35.0), sigma=1.0))
            roll = rng.random()
            if roll < escalation_p:
                status = "Escalated"
            elif rng.random() < _RESOLVED_SHARE:
                status = "Resolved"
            else:
                status = _pick(rng, ("Open", "In Progress", "Pending"))
            resolution = ""
            resolved_date = ""
            csat = ""
            nps = ""
            if status == "Resolved":
                # A healthy queue's p90 (about 41 h) sits well inside the default 72 h SLO,
                # so DP noise on the tail bins does not raise a false breach in the demo;
                # a failing one's (about 164 h) is far beyond it.
                median_hours = 40.0 if failing else 10.0
                hours = float(rng.lognormal(mean=np.log(median_hours), sigma=1.1))
                resolution = f"{hours:.3f}"
                resolved_date = (created + timedelta(hours=hours)).strftime(_TIME_FORMAT)
                if rng.random() < _CSAT_RESPONSE_RATE:
                    probs = _CSAT_FAILURE if failing else _CSAT_NORMAL
                    csat = str(1 + int(rng.choice(5, p=np.asarray(probs))))
                if with_nps and rng.random() < profile.nps_rate:
                    center = 5.5 if failing else 8.0
                    nps = str(int(np.clip(round(rng.normal(center, 2.0)), 0, 10)))
            order = f"ORD-{int(rng.integers(10_000_000, 100_000_000))}"
            fields = {
                "name": customer.name,
                "email": customer.email,
                "phone": customer.phone,
                "username": customer.username,
                "order": order,
            }
            subject, description = _free_text(rng, category, fields)
            row = {
                "ticket_id": "",
                "created_date": created.strftime(_TIME_FORMAT),
                "channel": _pick(rng, _CHANNELS, _CHANNEL_P),
                "category": category,
                "priority": priority,
                "team": profile.name,
                "first_response_minutes": f"{first_response_minutes:.3f}",
                "resolution_hours": resolution,
                "status": status,
                "resolved_date": resolved_date,
                "csat_score": csat,
                "nps_score": nps,
                "region": region,
                "country": customer.country,
                "requester_name": customer.name,
                "requester_email": customer.email,
                "requester_phone": customer.phone,
                "requester_username": customer.username,
                "order_id": order,
                "subject": subject,
                "description": description,
            }
            if not with_nps:
                del row[NPS_COLUMN]
            rows.append(row)
    # An export is ordered by creation time; ids follow that order.
    rows.sort(key=lambda r: r["created_date"])
    for number, row in enumerate(rows, start=1):
        row["ticket_id"] = f"TKT-{number:06d}"
    return rows


def write_rows(rows: Sequence[dict[str, str]], path: Path) -> None:
    """Write ``rows`` as CSV (``.csv``) or JSON Lines (``.jsonl``) by the file extension.

    Preconditions: every row has the same keys (the first row gives the column order).
    """
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in (".csv", ".jsonl"):
        raise InvalidArgument("output must end in .csv or .jsonl", field=str(p))
    columns = list(rows[0]) if rows else list(COLUMNS)
    for index, row in enumerate(rows):
        if list(row) != columns:
            raise InvalidArgument(
                "every row must have the same columns in the same order",
                field=f"rows[{index}]",
            )
    try:
        with p.open("w", encoding="utf-8", newline="") as out:
            if suffix == ".csv":
                writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
                writer.writeheader()
                writer.writerows(rows)
            else:
                for row in rows:
                    out.write(json.dumps(row, ensure_ascii=False) + "\n")
    except OSError as exc:
        raise InvalidArgument(f"cannot write rows: {exc.strerror}", field=str(p)) from None
