"""party.anonymize: party secret, operators, scrubbing, pseudonyms, lineage, no network."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import re
import socket
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
import tldextract
from faker import Faker

from blindsum.errors import ConfigError, Internal, InvalidArgument
from party import anonymize as anon
from party import pseudonym
from party.anonymize import (
    RULES_VERSION,
    Anonymizer,
    LineageSummary,
    age_band,
    write_export,
    write_lineage,
)
from party.mapping import Mapping, load_mapping, mapping_from_toml
from party.pseudonym import PartySecret
from party.tickets import CANONICAL_FIELDS, IDENTITY_FIELDS, Status, Ticket

SECRET = PartySecret(bytes(range(32)))
OTHER_SECRET = PartySecret(bytes(range(1, 33)))

PSEUDO_NAME = re.compile(r"^User[a-z2-7]{12}$")
PSEUDO_EMAIL = re.compile(r"^user[a-z2-7]{12}@anonymized\.com$")
PSEUDO_USERNAME = re.compile(r"^user_[a-z2-7]{12}$")
TOKEN = re.compile(r"^tok_[0-9a-f]{16}$")


def make_mapping(
    anonymize: dict[str, str] | None = None,
    *,
    extras: dict[str, str] | None = None,
    formats: tuple[str, ...] = ("iso",),
) -> Mapping:
    """A small mapping through the real parser (so it is validated like a file)."""
    lines = [
        "[mapping]",
        'name = "test"',
        "[dates]",
        "formats = [" + ", ".join(json.dumps(f) for f in formats) + "]",
        "[columns]",
        'ticket_id = "id"',
        'region = "region"',
        'status = "status"',
        "[status]",
        'open = ["Open"]',
        "[extras]",
        *(f"{k} = {json.dumps(v)}" for k, v in (extras or {}).items()),
        "[anonymize]",
        *(f"{k} = {json.dumps(v)}" for k, v in (anonymize or {}).items()),
    ]
    return mapping_from_toml("\n".join(lines) + "\n", origin="test mapping")


def ticket(**kw: object) -> Ticket:
    base: dict[str, object] = {
        "line": 2,
        "ticket_id": "TKT-1",
        "region": "EMEA",
        "status": Status.OPEN,
    }
    base.update(kw)
    return Ticket(**base)  # type: ignore[arg-type]  # test helper: fields passed through


@pytest.fixture(scope="module")
def generic() -> Mapping:
    return load_mapping("generic")


@pytest.fixture(scope="module")
def anonymizer(generic: Mapping) -> Anonymizer:
    return Anonymizer(SECRET, generic)


# --------------------------------------------------------------------------- party secret


def test_secret_created_0600_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "state" / "party.secret"
    first = PartySecret.load_or_create(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.read_bytes() == first.key
    assert len(first.key) == 32
    second = PartySecret.load_or_create(path)
    assert second.key == first.key
    other = PartySecret.load_or_create(tmp_path / "other.secret")
    assert other.key != first.key


def test_secret_refuses_group_or_other_access(tmp_path: Path) -> None:
    path = tmp_path / "party.secret"
    PartySecret.load_or_create(path)
    for mode in (0o640, 0o604, 0o660):
        os.chmod(path, mode)
        with pytest.raises(ConfigError, match=r"chmod 600") as err:
            PartySecret.load_or_create(path)
        assert err.value.field == "party_secret"
    os.chmod(path, 0o400)  # stricter than 0600 is fine
    assert len(PartySecret.load_or_create(path).key) == 32


@pytest.mark.parametrize("size", [0, 16, 31, 33, 64])
def test_secret_refuses_wrong_length(tmp_path: Path, size: int) -> None:
    path = tmp_path / "party.secret"
    path.write_bytes(b"\x01" * size)
    os.chmod(path, 0o600)
    with pytest.raises(ConfigError, match="exactly 32 bytes"):
        PartySecret.load_or_create(path)
    assert path.read_bytes() == b"\x01" * size  # never overwritten


def test_secret_refuses_symlink_and_directory(tmp_path: Path) -> None:
    real = tmp_path / "real.secret"
    PartySecret.load_or_create(real)
    link = tmp_path / "link.secret"
    link.symlink_to(real)
    with pytest.raises(ConfigError, match="regular file"):
        PartySecret.load_or_create(link)
    folder = tmp_path / "dir.secret"
    folder.mkdir(mode=0o700)
    with pytest.raises(ConfigError):
        PartySecret.load_or_create(folder)


def test_secret_is_hidden_from_repr(anonymizer: Anonymizer) -> None:
    key = bytes(range(32))
    for text in (repr(SECRET), str(SECRET), repr(anonymizer)):
        assert key.hex() not in text
        assert repr(key) not in text
        assert "\\x00\\x01" not in text
    with pytest.raises(InvalidArgument, match="32 bytes"):
        PartySecret(b"short")


@pytest.mark.parametrize("umask", [0o022, 0o277], ids=["umask022", "umask277"])
def test_secret_creates_every_missing_directory_0700(tmp_path: Path, umask: int) -> None:
    """Every level created for the secret is 0700, whatever the umask (existing ones
    are left alone)."""
    os.chmod(tmp_path, 0o755)
    path = tmp_path / "a" / "b" / "c" / "party.secret"
    old = os.umask(umask)
    try:
        PartySecret.load_or_create(path)
    finally:
        os.umask(old)
    for level in (tmp_path / "a", tmp_path / "a" / "b", tmp_path / "a" / "b" / "c"):
        assert level.stat().st_mode & 0o777 == 0o700, level
    assert tmp_path.stat().st_mode & 0o777 == 0o755
    assert path.stat().st_mode & 0o777 == 0o600


# --------------------------------------------------------------------------- the no-leak check


AFFIXES = {
    "mr",
    "mrs",
    "ms",
    "miss",
    "dr",
    "jr",
    "sr",
    "ii",
    "iii",
    "iv",
    "md",
    "phd",
    "dds",
    "dvm",
}


def _phone_core(phone: str) -> str:
    main = re.split(r"(?i)x|ext", phone)[0]
    return re.sub(r"\D", "", main)[-10:]


def _pii_tickets(count: int, seed: int) -> list[Ticket]:
    """Tickets whose subject/description repeat the requester's PII in varied forms."""
    fake = Faker("en_US")
    fake.seed_instance(seed)
    tickets: list[Ticket] = []
    customers = []
    for _ in range(count):
        customers.append(
            {
                "name": fake.name(),
                "email": fake.email(),
                "phone": fake.phone_number(),
                "username": fake.user_name(),
                "order": f"ORD-{fake.unique.random_int(100000, 999999)}",
                "address": fake.address(),
            }
        )
    for i in range(count * 2):
        c = customers[i % count] if i < count else customers[(i * 7) % count]  # repeat customers
        name_parts = [p for p in re.findall(r"[^\W_]+", c["name"]) if p.lower() not in AFFIXES]
        first, last = name_parts[0], name_parts[-1]
        core = _phone_core(c["phone"])
        spaced_phone = f"{core[-10:-7]} {core[-7:-4]} {core[-4:]}" if len(core) >= 10 else core
        order_digits = c["order"].split("-")[1]
        forms = [
            f"Hello, this is {c['name']}.",
            f"Reach me at {c['email'].upper()} or call {spaced_phone}.",
            f"My login is @{c['username']} and the order is {c['order'].lower().replace('-', ' ')}",
            f"(see #{order_digits}).",
            f"Ship to {c['address'].replace(chr(10), ', ')}.",
            f"Phone again: {c['phone']}; mail: <{c['email']}>.",
            f"Regards,\n{last.upper()}, {first.lower()}",
        ]
        tickets.append(
            Ticket(
                line=i + 2,
                ticket_id=f"TKT-{i:05d}",
                region=("APAC", "EMEA", "Americas")[i % 3],
                status=(Status.OPEN, Status.RESOLVED, Status.ESCALATED)[i % 3],
                created=datetime(2024, 10, 1 + i % 28, 9, 30, tzinfo=UTC),
                csat=1 + i % 5,
                category="Billing",
                channel="Email",
                requester_name=c["name"],
                requester_email=c["email"],
                requester_phone=c["phone"],
                requester_username=c["username"],
                order_id=c["order"],
                address=c["address"],
                subject=f"{first.upper()} {last.lower()}: order {c['order']} not delivered",
                description=" ".join(forms),
                extras=(("team", "Team_Alpha"),),
            )
        )
    return tickets


def _digit_runs(text: str) -> list[str]:
    return [re.sub(r"\D", "", run) for run in re.findall(r"\d[\d\s\-.()/+]*\d", text)]


def _assert_no_pii(text: str, tickets: list[Ticket], *, parts: bool = False) -> None:
    """No identity value of ``tickets`` in ``text``. With ``parts``, not even a name part
    or an email's local part (only meaningful on the ticket's own row: a surname such
    as "Best" is also an ordinary word in other tickets)."""
    folded = text.casefold()
    runs = _digit_runs(text)

    def absent(value: str, what: str) -> None:
        pattern = r"(?<!\w)" + re.escape(value.casefold()) + r"(?!\w)"
        assert not re.search(pattern, folded), f"{what} of ticket leaked"

    for t in tickets:
        if t.requester_name:
            names = [
                p for p in re.findall(r"[^\W_]+", t.requester_name) if p.lower() not in AFFIXES
            ]
            absent(t.requester_name, "name")
            absent(" ".join(names), "name")
            for part in names if parts else ():
                if len(part) >= 3:
                    absent(part, "name part")
        if t.requester_email:
            absent(t.requester_email, "email")
            if parts:
                absent(t.requester_email.split("@")[0], "email local part")
        if t.requester_username:
            absent(t.requester_username, "username")
        if t.requester_phone:
            absent(t.requester_phone, "phone")
            core = _phone_core(t.requester_phone)
            assert all(core not in run for run in runs), "phone digits leaked"
        if t.order_id:
            absent(t.order_id, "order id")
            for digits in re.findall(r"\d{4,}", t.order_id):
                assert all(digits not in run for run in runs), "order digits leaked"
        for line in (t.address or "").splitlines():
            absent(line, "address line")


def _check_ticket_forms_present(tickets: list[Ticket]) -> None:
    """Guard the guard: the raw input really does contain the PII the check looks for."""
    raw = " ".join((t.subject or "") + " " + (t.description or "") for t in tickets)
    with pytest.raises(AssertionError):
        _assert_no_pii(raw, tickets[:1])
    with pytest.raises(AssertionError):
        _assert_no_pii(tickets[0].description or "", tickets[:1], parts=True)


@pytest.mark.parametrize("preset", ["generic", "defaults"])
def test_no_identity_value_leaks_anywhere(tmp_path: Path, preset: str) -> None:
    tickets = _pii_tickets(20, seed=31)
    _check_ticket_forms_present(tickets)
    mapping = load_mapping("generic") if preset == "generic" else make_mapping()
    rows, summary = Anonymizer(SECRET, mapping).anonymize(tickets)
    assert len(rows) == len(tickets) == summary.rows_out == summary.rows_in
    write_export(rows, tmp_path / "out.csv")
    write_export(rows, tmp_path / "out.jsonl")
    write_lineage(summary, tmp_path / "lineage.json")
    for name in ("out.csv", "out.jsonl", "lineage.json"):
        _assert_no_pii((tmp_path / name).read_text(encoding="utf-8"), tickets)
    for t, row in zip(tickets, rows, strict=True):
        _assert_no_pii(" | ".join(row.values()), [t], parts=True)
    # the free text survives apart from the tags
    assert all("[" in row["description"] for row in rows)
    assert all("Ship to [ADDRESS]." in row["description"] for row in rows)
    assert all("Phone again: [PHONE]; mail: <[EMAIL]>." in row["description"] for row in rows)
    assert rows[0]["subject"].endswith("not delivered")
    assert summary.entities["CUSTOMER_NAME"] >= 3 * len(tickets)


def test_pipeline_synthetic_export_has_no_pii(tmp_path: Path, generic: Mapping) -> None:
    """Synthetic export -> ingest (generic preset) -> anonymize: nothing identifying left."""
    from party.ingest import ingest_file
    from party.synthetic import TeamProfile, generate_rows, write_rows

    rows = generate_rows(
        TeamProfile("Team_A", tickets_per_region=15), seed=11, start=date(2024, 10, 28)
    )
    write_rows(rows, tmp_path / "export.csv")
    result = ingest_file(tmp_path / "export.csv", generic)
    assert result.summary.accepted == len(rows) == len(result.tickets)
    assert sum(bool(t.description) for t in result.tickets) == len(rows)
    out, summary = Anonymizer(SECRET, generic).anonymize(result.tickets)
    write_export(out, tmp_path / "anon.jsonl")
    write_lineage(summary, tmp_path / "lineage.json")
    _check_ticket_forms_present(result.tickets)
    for name in ("anon.jsonl", "lineage.json"):
        _assert_no_pii((tmp_path / name).read_text(encoding="utf-8"), result.tickets)
    for t, row in zip(result.tickets, out, strict=True):
        _assert_no_pii(" | ".join(row.values()), [t], parts=True)
    assert summary.rows_out == len(rows)
    assert summary.entities["EMAIL"] >= len(rows)


def test_scrub_replaces_by_tags(anonymizer: Anonymizer) -> None:
    t = ticket(
        requester_name="Dr. Jane Q. Doe",
        requester_email="Jane.Doe@Mail.Example.org",
        requester_phone="+1 (415) 555-0132",
        requester_username="jdoe_42",
        order_id="A-77812",
        address="42 Elm Street, Springfield",
    )
    text = (
        "JANE DOE wrote from jane.doe@mail.example.org (user JDOE_42), phone 415.555.0132, "
        "order a77812, card 4111 1111 1111 1111, from 192.168.10.7, "
        "via https://portal.example.com/x, lives at 42 elm street."
    )
    out, counts = anonymizer.scrub(text, t)
    assert out == (
        "[CUSTOMER_NAME] wrote from [EMAIL] (user [USERNAME]), phone [PHONE], "
        "order [ORDER_ID], card [CREDIT_CARD], from [IP_ADDRESS], "
        "via [URL] lives at [ADDRESS]."
    )
    assert counts == {
        "CUSTOMER_NAME": 1,
        "EMAIL": 1,
        "USERNAME": 1,
        "PHONE": 1,
        "ORDER_ID": 1,
        "CREDIT_CARD": 1,
        "IP_ADDRESS": 1,
        "URL": 1,
        "ADDRESS": 1,
    }


def test_scrub_without_ticket_uses_pattern_recognizers(anonymizer: Anonymizer) -> None:
    out, counts = anonymizer.scrub("Write to someone@example.co.uk or 212-555-0187 please")
    assert out == "Write to [EMAIL] or [PHONE] please"
    assert counts == {"EMAIL": 1, "PHONE": 1}
    plain = "Nothing personal here, just a slow refund."
    assert anonymizer.scrub(plain) == (plain, {})


def test_email_containing_name_is_tagged_email(anonymizer: Anonymizer) -> None:
    t = ticket(requester_name="Ann Lee", requester_email="ann.lee@example.com")
    out, counts = anonymizer.scrub("From ann.lee@example.com, Ann Lee", t)
    assert out == "From [EMAIL], [CUSTOMER_NAME]"
    assert counts == {"EMAIL": 1, "CUSTOMER_NAME": 1}
    # "Lee, Ann" is a name form, but a match must not run on into the email
    out, _ = anonymizer.scrub("Best, Ann Lee (ann.lee@example.com); Lee, Ann", t)
    assert out == "Best, [CUSTOMER_NAME] ([EMAIL]); [CUSTOMER_NAME]"


# --------------------------------------------------------------------------- other tickets' values

JOHN = {
    "requester_name": "John Smith",
    "requester_email": "john.smith@example.com",
    "requester_phone": "+1 (555) 123-4567",
    "requester_username": "jsmith_88",
    "order_id": "ORD-12345678",
    "address": "12 Baker Street, London NW1 6XE",
}


def test_other_tickets_values_are_scrubbed_in_the_export(anonymizer: Anonymizer) -> None:
    john = ticket(ticket_id="T1", description="Where is my parcel?", **JOHN)
    alice = ticket(
        ticket_id="T2",
        requester_name="Alice Jones",
        requester_email="alice@jones.org",
        order_id="ORD-99990000",
        description=(
            "My husband John Smith (order ORD-12345678, user jsmith_88) had the same "
            "problem; write to JOHN.SMITH@example.com, call 555 123 4567, "
            "he lives at 12 Baker Street."
        ),
    )
    rows, summary = anonymizer.anonymize([john, alice])
    assert rows[1]["description"] == (
        "My husband [CUSTOMER_NAME] (order [ORDER_ID], user [USERNAME]) had the same "
        "problem; write to [EMAIL], call [PHONE], he lives at [ADDRESS]."
    )
    assert rows[0]["description"] == "Where is my parcel?"
    assert summary.entities["ADDRESS"] == 2  # John's field + Alice's text
    _assert_no_pii(" | ".join(rows[1].values()), [john])
    # scrub() alone knows only the ticket it is given
    alone, _ = anonymizer.scrub(alice.description or "", alice)
    assert "John Smith" in alone and "jsmith_88" in alone


def test_other_tickets_common_words_are_left_alone(anonymizer: Anonymizer) -> None:
    """Another customer's single-word values that are ordinary words, or short numbers,
    do not turn ordinary text into tags; their full values still do."""
    will = ticket(
        ticket_id="T1",
        requester_name="Will King",
        requester_email="info@kingsmail.com",
        requester_username="admin",
        requester_phone="555-0100",
        order_id="A-2024",
    )
    text = (
        "I will be asking the king for info, admin rights, a 2024 budget and a marketing "
        "plan; call 555-0100. Will King wrote from info@kingsmail.com."
    )
    bob = ticket(ticket_id="T2", requester_name="Bob Stone", description=text)
    rows, _ = anonymizer.anonymize([will, bob])
    assert rows[1]["description"] == (
        "I will be asking the king for info, admin rights, a 2024 budget and a marketing "
        "plan; call [PHONE]. [CUSTOMER_NAME] wrote from [EMAIL]."
    )


def test_export_matcher_does_not_grow_with_the_export() -> None:
    """One combined matcher per export: the number of regexes it runs over each cell
    is fixed by the kinds of values, not by the number of tickets."""
    fake = Faker("en_US")
    fake.seed_instance(5)

    def customers(count: int) -> list[Ticket]:
        return [
            ticket(
                ticket_id=f"T{i}",
                requester_name=fake.name(),
                requester_email=fake.email(),
                requester_phone=fake.phone_number(),
                requester_username=fake.user_name(),
                order_id=f"ORD-{fake.random_int(10**7, 10**8 - 1)}",
                address=fake.address(),
            )
            for i in range(count)
        ]

    small = anon._IdentityMatcher.for_export(customers(5))
    large = anon._IdentityMatcher.for_export(customers(300))
    assert 0 < len(large._patterns) == len(small._patterns) <= 12


# --------------------------------------------------------------------------- ticket ids


def test_own_ticket_id_is_scrubbed_when_not_kept(generic: Mapping) -> None:
    t = ticket(ticket_id="TKT-004711", description="Re ticket TKT-004711 (tkt 004711, #004711)")
    assert generic.operators.get("ticket_id") in ("token", "redact")
    rows, summary = Anonymizer(SECRET, generic).anonymize([t])
    assert TOKEN.match(rows[0]["ticket_id"])
    assert rows[0]["description"] == "Re ticket [TICKET_ID] ([TICKET_ID], #[TICKET_ID])"
    assert summary.entities["TICKET_ID"] == 4
    out, counts = Anonymizer(SECRET, make_mapping({"ticket_id": "redact"})).scrub(
        "see TKT-004711", t
    )
    assert (out, counts) == ("see [TICKET_ID]", {"TICKET_ID": 1})
    kept = Anonymizer(SECRET, make_mapping())  # ticket_id defaults to keep
    assert kept.anonymize([t])[0][0]["description"] == t.description


# --------------------------------------------------------------------------- written differently


def _fullwidth(text: str) -> str:
    """ASCII letters, digits and punctuation as their fullwidth forms (U+FF01..)."""
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)


@pytest.mark.parametrize(
    ("identity", "text", "expected"),
    [
        (
            {"requester_name": "Zoë Łukasz-Müller"},
            "Zoe Lukasz-Muller here; ZOË ŁUKASZ-MÜLLER; lukasz muller",
            "[CUSTOMER_NAME] here; [CUSTOMER_NAME]; [CUSTOMER_NAME] [CUSTOMER_NAME]",
        ),
        (JOHN, "I am Jo\u200bhn Sm\u2060ith, Sm\u00adith", "I am [CUSTOMER_NAME], [CUSTOMER_NAME]"),
        (JOHN, _fullwidth("JOHN SMITH jsmith_88"), "[CUSTOMER_NAME] [USERNAME]"),
        (
            JOHN,
            "user JohnSmith1990 here, SmithJ too",
            "user [CUSTOMER_NAME]1990 here, [CUSTOMER_NAME]J too",
        ),
        (JOHN, "JOHNSMITH1990 and xxJohn", "[CUSTOMER_NAME]1990 and xx[CUSTOMER_NAME]"),
        (JOHN, "order ORD 1234 5678", "order [ORDER_ID]"),
        (JOHN, "order ORD-1234-5678 or 1234 5678", "order [ORDER_ID] or [ORDER_ID]"),
        (JOHN, "login jsmith, or jsmith1990", "login [USERNAME], or [USERNAME]1990"),
        (JOHN, "email " + _fullwidth("john.smith@example") + ".com", "email [EMAIL]"),
    ],
)
def test_variants_of_own_values_are_scrubbed(
    anonymizer: Anonymizer, identity: dict[str, str], text: str, expected: str
) -> None:
    out, _ = anonymizer.scrub(text, ticket(**identity))
    assert out == expected
    # and the same when the value belongs to another ticket of the export
    other = ticket(ticket_id="T9", requester_name="Ann Other", description=text)
    rows, _ = anonymizer.anonymize([ticket(**identity), other])
    assert rows[1]["description"] == expected


def test_glued_names_need_a_seam(anonymizer: Anonymizer) -> None:
    """A name part inside a longer word is only found where the word splits there."""
    t = ticket(requester_name="Mark Kingston", requester_username="mkingston")
    text = "asking about marketing at Kingstonia; MarkKingston99 and kingstonmark"
    out, _ = anonymizer.scrub(text, t)
    assert out == ("asking about marketing at Kingstonia; [CUSTOMER_NAME]99 and [CUSTOMER_NAME]")


def test_glued_pieces_must_belong_to_one_customer(anonymizer: Anonymizer) -> None:
    """Without a seam, a glued word is a name only when all its pieces are one
    customer's ("annaberg"), not a mix of two customers' ("annamitchell")."""
    anna = ticket(ticket_id="T1", requester_name="Anna Berg")
    lena = ticket(ticket_id="T2", requester_name="Lena Mitchell")
    text = ticket(ticket_id="T3", description="annamitchell, annaberg, lenamitchell")
    rows, _ = anonymizer.anonymize([anna, lena, text])
    assert rows[2]["description"] == "annamitchell, [CUSTOMER_NAME], [CUSTOMER_NAME]"


def test_tags_replace_whole_original_characters(anonymizer: Anonymizer) -> None:
    """Offsets found on the folded text land on the original: decomposed accents and
    zero-width characters inside or right after a name go with it."""
    t = ticket(requester_name="Zoë Łukasz-Müller")
    text = "« Déjà vu » — Zoe\u0308\u200b L\u0301ukasz-Mu\u0308ller\u200d! ﬁn"
    out, counts = anonymizer.scrub(text, t)
    assert out == "« Déjà vu » — [CUSTOMER_NAME]! ﬁn"
    assert counts == {"CUSTOMER_NAME": 1}


# --------------------------------------------------------------------------- operators


def test_default_operators() -> None:
    a = Anonymizer(SECRET, make_mapping())
    t = ticket(
        requester_name="Bo Ek",
        requester_email="bo@ek.se",
        requester_phone="0701234567",
        requester_username="boek",
        order_id="O-1",
        address="Gatan 1",
        subject="Hi, Bo Ek here",
        csat=4,
        first_response_hours=1.5,
        created=datetime(2024, 10, 29, 22, 0, tzinfo=UTC),
    )
    rows, summary = a.anonymize([t])
    row = rows[0]
    assert list(row) == list(CANONICAL_FIELDS)
    for name in IDENTITY_FIELDS:
        assert summary.operators[name] == "redact"
    assert row["requester_name"] == "[CUSTOMER_NAME]"
    assert row["requester_email"] == "[EMAIL]"
    assert row["requester_phone"] == "[PHONE]"
    assert row["requester_username"] == "[USERNAME]"
    assert row["order_id"] == "[ORDER_ID]"
    assert row["address"] == "[ADDRESS]"
    assert summary.operators["subject"] == "scrub"
    assert row["subject"] == "Hi, [CUSTOMER_NAME] here"
    assert row["description"] == ""
    assert summary.operators["region"] == "keep"
    assert (row["ticket_id"], row["region"], row["status"]) == ("TKT-1", "EMEA", "open")
    assert (row["csat"], row["first_response_hours"], row["nps"]) == ("4", "1.5", "")
    assert row["created"] == "2024-10-29T22:00:00+00:00"


def test_explicit_operators_and_extras() -> None:
    mapping = make_mapping(
        {
            "requester_name": "pseudonym",
            "requester_email": "pseudonym",
            "requester_username": "pseudonym",
            "order_id": "token",
            "requester_phone": "drop",
            "address": "keep",
            "description": "redact",
            "created": "generalize:day",
            "first_response_at": "generalize:week",
            "resolved_at": "generalize:month",
            "escalated_at": "year",
            "birth_date": "year",
            "age": "age_band",
            "joined": "generalize:month",
        },
        extras={"birth_date": "dob", "age": "age", "joined": "joined", "note": "note"},
        formats=("%d/%m/%Y",),
    )
    a = Anonymizer(SECRET, mapping)
    t = ticket(
        requester_name="Ann Lee",
        requester_email="ann@example.com",
        requester_phone="555-0100",
        requester_username="annl",
        order_id="O-9",
        address="1 Road",
        description="free text",
        created=datetime(2024, 10, 29, 23, 59, tzinfo=UTC),
        first_response_at=datetime(2024, 12, 30, 1, 0, tzinfo=UTC),  # ISO week 1 of 2025
        resolved_at=datetime(2024, 2, 29, 12, 0, tzinfo=UTC),
        escalated_at=datetime(2023, 1, 1, 0, 0, tzinfo=UTC),
        extras=(
            ("birth_date", "02/03/1987"),
            ("age", "34"),
            ("joined", "2021-06-15"),
            ("note", "call ann@example.com"),
        ),
    )
    rows, summary = a.anonymize([t])
    row = rows[0]
    assert "requester_phone" not in row
    assert summary.operators["requester_phone"] == "drop"
    assert PSEUDO_NAME.match(row["requester_name"])
    assert PSEUDO_EMAIL.match(row["requester_email"])
    assert PSEUDO_USERNAME.match(row["requester_username"])
    assert TOKEN.match(row["order_id"])
    assert row["address"] == "1 Road"
    assert row["description"] == "[DESCRIPTION]"
    assert row["created"] == "2024-10-29"
    assert row["first_response_at"] == "2025-W01"
    assert row["resolved_at"] == "2024-02"
    assert row["escalated_at"] == "2023"
    assert row["birth_date"] == "1987"
    assert row["age"] == "30-39"
    assert row["joined"] == "2021-06"
    assert row["note"] == "call [EMAIL]"  # extras without an operator are scrubbed
    assert summary.operators["note"] == "scrub"
    assert list(row)[-4:] == ["birth_date", "age", "joined", "note"]
    assert summary.entities == {
        "CUSTOMER_NAME": 1,
        "EMAIL": 2,
        "USERNAME": 1,
        "ORDER_ID": 1,
        "DESCRIPTION": 1,
    }


def test_unparseable_values_are_suppressed_not_kept() -> None:
    mapping = make_mapping({"age": "age_band", "dob": "year"}, extras={"age": "age", "dob": "dob"})
    a = Anonymizer(SECRET, mapping)
    tickets = [
        ticket(extras=(("age", "thirty"), ("dob", "sometime in 1987"))),
        ticket(extras=(("age", "-3"), ("dob", "1987-02-03"))),
        ticket(extras=(("age", ""), ("dob", ""))),
    ]
    rows, summary = a.anonymize(tickets)
    assert [(r["age"], r["dob"]) for r in rows] == [("", ""), ("", "1987"), ("", "")]
    assert summary.suppressed == {"age": 2, "dob": 1}
    assert "thirty" not in summary.to_json() and "sometime" not in summary.to_json()


@pytest.mark.parametrize(
    ("value", "band"),
    [
        ("0", "0-9"),
        ("9", "0-9"),
        ("34", "30-39"),
        ("39.9", "30-39"),
        ("89", "80-89"),
        ("90", "90+"),
        ("104", "90+"),
        (" 42 ", "40-49"),
    ],
)
def test_age_band(value: str, band: str) -> None:
    assert age_band(value) == band


@pytest.mark.parametrize("value", ["", "x", "-1", "150", "nan", "inf"])
def test_age_band_rejects(value: str) -> None:
    assert age_band(value) is None


def test_operator_that_cannot_apply_is_refused(generic: Mapping) -> None:
    for field, op in (
        ("requester_phone", "pseudonym"),
        ("order_id", "pseudonym"),
        ("country", "age_band"),
        ("csat", "generalize:day"),
        ("nonsense", "keep"),
        ("subject", "shuffle"),
    ):
        bad = dataclasses.replace(generic, operators={field: op})
        with pytest.raises(ConfigError) as err:
            Anonymizer(SECRET, bad)
        assert err.value.field == f"anonymize.{field}"


# --------------------------------------------------------------------------- pseudonyms


def test_same_customer_same_pseudonym_across_instances(generic: Mapping) -> None:
    one = Anonymizer(SECRET, generic)
    two = Anonymizer(SECRET, generic)
    assert one.pseudonym_name("email", "Ann@Example.com") == two.pseudonym_name(
        "email", "  ann@example.COM "
    )
    assert one.pseudonym_name("name", "Ann  Lee") == two.pseudonym_name("name", "ann lee")
    assert one.pseudonym_name("username", "AnnL") == two.pseudonym_name("username", "annl")
    assert one.token("O-9") == two.token(" O-9 ")
    week1 = ticket(ticket_id="A", requester_email="ann@example.com", requester_name="Ann Lee")
    week2 = ticket(ticket_id="B", requester_email="ANN@example.com ", requester_name="Ann L.")
    rows1, _ = one.anonymize([week1])
    rows2, _ = two.anonymize([week2])
    assert rows1[0]["requester_email"] == rows2[0]["requester_email"]
    assert one.customer_token(week1) == two.customer_token(week2)


def test_pseudonym_forms_share_nothing_across_kinds(anonymizer: Anonymizer) -> None:
    name = anonymizer.pseudonym_name("name", "annl")
    username = anonymizer.pseudonym_name("username", "annl")
    assert PSEUDO_NAME.match(name) and PSEUDO_USERNAME.match(username)
    assert name[4:] != username[5:]  # domain-separated by kind


def test_different_secret_different_pseudonyms(generic: Mapping) -> None:
    ours = Anonymizer(SECRET, generic)
    theirs = Anonymizer(OTHER_SECRET, generic)
    t = ticket(requester_email="ann@example.com")
    assert ours.pseudonym_name("email", "ann@example.com") != theirs.pseudonym_name(
        "email", "ann@example.com"
    )
    assert ours.pseudonym_name("name", "Ann Lee") != theirs.pseudonym_name("name", "Ann Lee")
    assert ours.token("O-9") != theirs.token("O-9")
    assert ours.customer_token(t) != theirs.customer_token(t)


def test_pseudonym_of_empty_value_is_refused(anonymizer: Anonymizer) -> None:
    with pytest.raises(InvalidArgument):
        anonymizer.pseudonym_name("email", "   ")
    with pytest.raises(InvalidArgument):
        anonymizer.token("")


def test_customer_token_preference_order(anonymizer: Anonymizer) -> None:
    full = ticket(
        requester_email="a@x.io",
        requester_username="u1",
        requester_phone="+1 555 0100",
        requester_name="Al B",
    )
    tok = anonymizer.customer_token
    assert tok(full) == tok(ticket(ticket_id="other", requester_email=" A@X.IO"))
    no_email = dataclasses.replace(full, requester_email=None)
    assert tok(no_email) == tok(ticket(ticket_id="z", requester_username="u1"))
    assert tok(no_email) != tok(full)
    no_user = dataclasses.replace(no_email, requester_username="")
    assert tok(no_user) == tok(ticket(ticket_id="z", requester_phone="15550100"))
    no_phone = dataclasses.replace(no_user, requester_phone="n/a")  # no digits: skipped
    assert tok(no_phone) == tok(ticket(ticket_id="z", requester_name=" al   b "))
    anonymous_1 = ticket(ticket_id="T-1")
    anonymous_2 = ticket(ticket_id="T-2")
    assert tok(anonymous_1) != tok(anonymous_2)
    assert tok(anonymous_1) == tok(dataclasses.replace(anonymous_1, line=99))
    assert re.fullmatch(r"cust_[0-9a-f]{32}", tok(full))


def test_collision_inside_a_run_raises(generic: Mapping, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pseudonym, "_PSEUDONYM_CHARS", 1)  # 32 possible pseudonyms
    a = Anonymizer(SECRET, generic)
    assert a.pseudonym_name("email", "same@x.io") == a.pseudonym_name("email", "SAME@x.io")
    with pytest.raises(Internal, match="same pseudonym") as err:
        for i in range(33):  # pigeonhole: 33 distinct emails cannot fit in 32 pseudonyms
            a.pseudonym_name("email", f"user{i}@x.io")
    assert "@x.io" not in str(err.value)


# --------------------------------------------------------------------------- no network


@pytest.fixture
def network_attempts(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Record (and refuse) every DNS lookup or socket connect."""
    attempts: list[str] = []

    def refuse_lookup(host: object, *args: object, **kwargs: object) -> object:
        attempts.append(f"getaddrinfo {host}")
        raise OSError("network disabled in this test")

    def refuse_connect(self: socket.socket, address: object) -> None:
        attempts.append(f"connect {address}")
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket, "getaddrinfo", refuse_lookup)
    monkeypatch.setattr(socket.socket, "connect", refuse_connect)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse_connect)
    yield attempts


def test_guard_sees_an_online_suffix_list_fetch(
    network_attempts: list[str], tmp_path: Path
) -> None:
    """Control: tldextract with a URL and an empty cache does try the network
    (and silently falls back), so only recording attempts can prove there were none."""
    online = tldextract.TLDExtract(
        cache_dir=str(tmp_path), suffix_list_urls=("https://publicsuffix.org/list/x.dat",)
    )
    assert online("someone@example.com").fqdn == "example.com"
    assert network_attempts


def test_analyze_never_touches_the_network(
    network_attempts: list[str], generic: Mapping, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Whatever the user's tldextract cache holds, the module-level extractor (the one
    # presidio's stock email recognizer calls) would now have to go online.
    cold = tldextract.TLDExtract(
        cache_dir=str(tmp_path), suffix_list_urls=tldextract.tldextract.PUBLIC_SUFFIX_LIST_URLS
    )
    monkeypatch.setattr(tldextract.tldextract, "TLD_EXTRACTOR", cold)
    a = Anonymizer(SECRET, generic)  # built under the guard too
    text = (
        "Mail ann@example.com, bob@shop.co.uk, c@d.com.au, x@y.museum or "
        "zed@sub.example.technology; phone +44 20 7946 0958."
    )
    out, counts = a.scrub(text, ticket(requester_email="ann@example.com"))
    assert out == "Mail [EMAIL], [EMAIL], [EMAIL], [EMAIL] or [EMAIL]; phone [PHONE]."
    assert counts == {"EMAIL": 5, "PHONE": 1}
    assert network_attempts == []


def test_invalid_email_domain_is_not_an_email(anonymizer: Anonymizer) -> None:
    """The offline suffix list still validates domains (no suffix -> not an email)."""
    out, _ = anonymizer.scrub("ping admin@localhost.invalidtld now")
    assert "[EMAIL]" not in out


# --------------------------------------------------------------------------- lineage and files


def test_lineage_counts_and_no_raw_values(anonymizer: Anonymizer, tmp_path: Path) -> None:
    t = ticket(
        requester_name="Ann Lee",
        requester_email="ann@example.com",
        requester_phone="555-201-0100",
        order_id="Q-55123",
        subject="Ann Lee: order Q-55123",
        description="Call 555 201 0100 or ann@example.com",
        extras=(("team", "Team_Beta"),),
    )
    rows, summary = anonymizer.anonymize([t, dataclasses.replace(t, ticket_id="TKT-2")])
    assert summary.rules_version == RULES_VERSION == "blindsum-anon/1"
    assert (summary.rows_in, summary.rows_out, summary.mapping) == (2, 2, "generic")
    assert summary.entities == {
        "CUSTOMER_NAME": 4,  # 2 fields + 2 in subjects
        "EMAIL": 4,
        "PHONE": 4,
        "ORDER_ID": 4,
        "TICKET_ID": 2,  # the generic preset tokenizes ticket ids
    }
    assert summary.operators["team"] == "keep"
    assert rows[0]["team"] == "Team_Beta"
    path = tmp_path / "lineage.json"
    write_lineage(summary, path)
    loaded = json.loads(path.read_text(encoding="utf-8"))
    assert loaded == json.loads(summary.to_json())
    assert loaded["entities"]["EMAIL"] == 4
    text = path.read_text(encoding="utf-8").casefold()
    for raw in ("ann", "lee", "example.com", "555", "55123", "tkt-2"):
        assert not re.search(r"(?<!\w)" + re.escape(raw) + r"(?!\w)", text), raw


def test_anonymize_empty_input(anonymizer: Anonymizer) -> None:
    rows, summary = anonymizer.anonymize([])
    assert rows == []
    assert (summary.rows_in, summary.rows_out, summary.entities) == (0, 0, {})


def test_write_export_csv_and_jsonl(anonymizer: Anonymizer, tmp_path: Path) -> None:
    rows, _ = anonymizer.anonymize(
        [ticket(subject='quote " and, comma\nnewline', extras=(("team", "T"),))]
    )
    write_export(rows, tmp_path / "x.csv")
    with (tmp_path / "x.csv").open(encoding="utf-8", newline="") as handle:
        assert list(csv.DictReader(handle)) == rows
    write_export(rows, tmp_path / "x.jsonl")
    lines = (tmp_path / "x.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == rows
    write_export([], tmp_path / "empty.csv", columns=["a", "b"])
    assert (tmp_path / "empty.csv").read_text(encoding="utf-8").strip() == "a,b"


def test_write_export_refuses_bad_input(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match=r"\.csv, \.jsonl"):
        write_export([{"a": "1"}], tmp_path / "x.xlsx")
    with pytest.raises(InvalidArgument, match="row 2"):
        write_export([{"a": "1"}, {"b": "2"}], tmp_path / "x.csv")
    assert not (tmp_path / "x.csv").exists()


def test_lineage_summary_json_shape() -> None:
    summary = LineageSummary(
        rules_version=RULES_VERSION,
        rows_in=1,
        rows_out=1,
        entities={"EMAIL": 1},
        operators={"requester_email": "pseudonym"},
        mapping="generic",
    )
    assert json.loads(summary.to_json()) == {
        "rules_version": RULES_VERSION,
        "rows_in": 1,
        "rows_out": 1,
        "entities": {"EMAIL": 1},
        "operators": {"requester_email": "pseudonym"},
        "mapping": "generic",
        "suppressed": {},
    }


def test_csv_export_defuses_spreadsheet_formulas(tmp_path: Path) -> None:
    from party.anonymize import write_export

    rows = [
        {"subject": '=HYPERLINK("http://x")', "note": "@SUM(A1)", "hours": "-1.5", "ok": "fine"}
    ]
    out = tmp_path / "x.csv"
    write_export(rows, out)
    text = out.read_text()
    assert "'=HYPERLINK" in text and "'@SUM" in text
    assert ",-1.5," in text and "fine" in text
    jsonl = tmp_path / "x.jsonl"
    write_export(rows, jsonl)  # JSON lines are data, not a spreadsheet: unchanged
    assert '"=HYPERLINK' in jsonl.read_text()
