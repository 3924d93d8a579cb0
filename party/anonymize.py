"""Anonymize canonical tickets into a shareable export (DESIGN §2: nothing raw leaves).

Each output field goes through one operator chosen in the mapping's ``[anonymize]``
table (:data:`party.mapping.OPERATORS`):

``keep``
    The value as text.
``drop``
    The column is left out of the export.
``redact``
    A tag such as ``[CUSTOMER_NAME]`` or ``[EMAIL]`` (``[FIELD_NAME]`` for other fields).
``pseudonym``
    A stable keyed pseudonym: ``User<12 chars>``, ``user<12 chars>@anonymized.com`` or
    ``user_<12 chars>`` (name, email and username fields only).
``token``
    An opaque keyed token ``tok_<16 hex>``.
``scrub``
    Free text with personal data replaced by tags. Presidio pattern recognizers find
    emails, phone numbers, card numbers, IP addresses, URLs, IBANs and SSNs; ad-hoc
    recognizers built from the ticket's own requester name, email, phone, username,
    order id and address find those values again in the text (case-insensitively and
    with spacing or punctuation changes).
``generalize:day|week|month``, ``year``
    A timestamp reduced to ``2024-10-29``, ``2024-W44``, ``2024-10`` or ``1987``.
``age_band``
    An age reduced to a ten-year band (``30-39``; ``90+`` for 90 and over).

Fields without an operator default to ``redact`` for identity fields, ``scrub`` for
free text and for extra columns, and ``keep`` for everything else.

Pseudonyms, tokens and customer tokens are HMAC-SHA256 values keyed by a party-local
secret (:class:`PartySecret`) over a domain-separated encoding of the *normalized*
value. They do not depend on the round, so the same customer keeps the same pseudonym
week after week, and a different party secret gives unrelated pseudonyms. Without the
secret they cannot be reversed or recomputed from a guessed value.

Limits: there is no NER model, so names of people other than the requester (an
agent, a relative) are only found when a pattern recognizer matches them.
Nothing reaches the network: the NLP engine is a blank spaCy tokenizer and the
email recognizer uses tldextract's bundled public-suffix snapshot.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import hmac
import json
import math
import os
import re
import secrets
import stat
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Literal

import spacy
import tldextract
from presidio_analyzer import (
    AnalyzerEngine,
    EntityRecognizer,
    Pattern,
    PatternRecognizer,
    RecognizerRegistry,
)
from presidio_analyzer import RecognizerResult as AnalyzerResult
from presidio_analyzer.nlp_engine import NlpArtifacts, SlimSpacyNlpEngine
from presidio_analyzer.predefined_recognizers import (
    CreditCardRecognizer,
    EmailRecognizer,
    IbanRecognizer,
    IpRecognizer,
    PhoneRecognizer,
    UrlRecognizer,
    UsSsnRecognizer,
)
from presidio_anonymizer import AnonymizerEngine
from presidio_anonymizer.entities import OperatorConfig
from presidio_anonymizer.entities import RecognizerResult as SpanResult
from spacy.tokens import Doc

from blindsum.crypto.encoding import format_dst
from blindsum.errors import ConfigError, Internal, InvalidArgument
from party.mapping import OPERATORS, Mapping
from party.tickets import (
    CANONICAL_FIELDS,
    FREE_TEXT_FIELDS,
    IDENTITY_FIELDS,
    TIMESTAMP_FIELDS,
    Status,
    Ticket,
)

#: Version of the anonymization rules; bump whenever an operator's output changes.
RULES_VERSION = "blindsum-anon/1"

SECRET_BYTES = 32

#: Tag written for each identity field (``[CUSTOMER_NAME]`` ...).
IDENTITY_TAGS: dict[str, str] = {
    "requester_name": "CUSTOMER_NAME",
    "requester_email": "EMAIL",
    "requester_phone": "PHONE",
    "requester_username": "USERNAME",
    "order_id": "ORDER_ID",
    "address": "ADDRESS",
}

#: Presidio entity type -> tag written into scrubbed text.
ENTITY_TAGS: dict[str, str] = {
    "CUSTOMER_NAME": "CUSTOMER_NAME",
    "EMAIL_ADDRESS": "EMAIL",
    "PHONE_NUMBER": "PHONE",
    "USERNAME": "USERNAME",
    "ORDER_ID": "ORDER_ID",
    "ADDRESS": "ADDRESS",
    "CREDIT_CARD": "CREDIT_CARD",
    "IP_ADDRESS": "IP_ADDRESS",
    "URL": "URL",
    "IBAN_CODE": "IBAN",
    "US_SSN": "SSN",
}
_FALLBACK_TAG = "PII"
_ENTITY_ORDER = {entity: i for i, entity in enumerate(ENTITY_TAGS)}
#: Scores of ad-hoc findings: a whole structured value, or a part of one.
_WHOLE = 1.0
_PART = 0.9

PseudonymKind = Literal["name", "email", "username"]
_PSEUDONYM_FIELDS: dict[str, PseudonymKind] = {
    "requester_name": "name",
    "requester_email": "email",
    "requester_username": "username",
}
#: Base32 characters in a pseudonym (5 bits each: 12 -> 60 bits of the HMAC).
_PSEUDONYM_CHARS = 12
#: Hex characters in a token (4 bits each: 16 -> 64 bits of the HMAC).
_TOKEN_HEX = 16
#: Hex characters in a customer token (128 bits).
_CUSTOMER_HEX = 32

_TIME_OPERATORS = frozenset({"generalize:day", "generalize:week", "generalize:month", "year"})
_AGE_MAX = 150
_AGE_TOP_BAND = 90
#: Name parts never matched alone in free text (titles and suffixes).
_NAME_AFFIXES = frozenset(
    {"mr", "mrs", "ms", "miss", "mx", "dr", "prof", "jr", "sr", "ii", "iii", "iv", "md", "phd"}
    | {"dds", "dvm", "esq"}
)


# --------------------------------------------------------------------------- secret


@dataclass(frozen=True, eq=False)
class PartySecret:
    """The party-local HMAC key for pseudonyms and tokens. Never leaves the node."""

    key: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.key, bytes) or len(self.key) != SECRET_BYTES:
            raise InvalidArgument(f"must be exactly {SECRET_BYTES} bytes", field="party_secret")

    @classmethod
    def load_or_create(cls, path: Path) -> PartySecret:
        """Read the secret at ``path``, or create it (mode 0600, 32 random bytes).

        Refuses a file that is not a regular file, is readable or writable by group
        or others, or does not hold exactly 32 bytes.
        """
        path = Path(path)
        # O_NONBLOCK: a FIFO planted at the path must not hang the node.
        flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0)
        try:
            fd = os.open(path, flags)
        except FileNotFoundError:
            return cls._create(path)
        except OSError as exc:
            raise ConfigError(
                f"cannot open party secret {path} ({exc.strerror}); it must be a regular file",
                field="party_secret",
            ) from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise ConfigError(
                    f"party secret {path} is not a regular file", field="party_secret"
                )
            if st.st_mode & 0o077:
                raise ConfigError(
                    f"party secret {path} has mode {stat.S_IMODE(st.st_mode):04o}; "
                    f"it must not be accessible by group or others (chmod 600)",
                    field="party_secret",
                )
            data = b""
            while len(data) <= SECRET_BYTES:
                chunk = os.read(fd, SECRET_BYTES + 1 - len(data))
                if not chunk:
                    break
                data += chunk
        finally:
            os.close(fd)
        if len(data) != SECRET_BYTES:
            found = f"more than {SECRET_BYTES}" if len(data) > SECRET_BYTES else str(len(data))
            raise ConfigError(
                f"party secret {path} must hold exactly {SECRET_BYTES} bytes, found {found}",
                field="party_secret",
            )
        return cls(data)

    @classmethod
    def _create(cls, path: Path) -> PartySecret:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = secrets.token_bytes(SECRET_BYTES)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
        try:
            fd = os.open(path, flags, 0o600)
        except FileExistsError:  # created concurrently: use that one
            return cls.load_or_create(path)
        try:
            os.fchmod(fd, 0o600)
            view = memoryview(key)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise
        os.close(fd)
        return cls(key)


# --------------------------------------------------------------------------- lineage


@dataclass
class LineageSummary:
    """What an anonymization run did, for the export's lineage file. Never a raw value.

    ``entities`` counts replaced values per tag (structured fields and free text).
    ``operators`` is the operator applied to every field (defaults included).
    ``suppressed`` counts values blanked per field because an operator could not
    parse them (for example a non-numeric age under ``age_band``).
    """

    rules_version: str
    rows_in: int
    rows_out: int
    entities: dict[str, int]
    operators: dict[str, str]
    mapping: str
    suppressed: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)


# --------------------------------------------------------------------------- presidio


class _BlankSpacyNlpEngine(SlimSpacyNlpEngine):
    """A tokenizer-only English pipeline (``spacy.blank("en")``): no model, no download.

    A blank pipeline has no lemmatizer, so the lowercased token stands in for the
    lemma; that is enough for Presidio's context words ("email", "phone", ...).
    """

    def __init__(self) -> None:
        super().__init__(
            models=[{"lang_code": "en", "model_name": "blank:en"}], auto_download=False
        )

    def load(self) -> None:
        # presidio's base __init__ declares ``nlp`` as None until load() fills it
        self.nlp = {"en": spacy.blank("en")}  # type: ignore[assignment]

    def _doc_to_nlp_artifact(self, doc: Doc, language: str) -> NlpArtifacts:
        artifacts = super()._doc_to_nlp_artifact(doc, language)
        artifacts.lemmas = [token.lemma_ or token.lower_ for token in doc]
        return artifacts


#: tldextract with its bundled public-suffix snapshot only: no HTTP, no disk cache.
_OFFLINE_TLDEXTRACT = tldextract.TLDExtract(
    suffix_list_urls=(), cache_dir=None, fallback_to_snapshot=True
)


class _OfflineEmailRecognizer(EmailRecognizer):
    """Presidio's email recognizer, but validating domains offline.

    The stock recognizer calls the module-level ``tldextract.extract``, which fetches
    the public suffix list over HTTP unless a cache exists.
    """

    def validate_result(self, pattern_text: str) -> bool:
        return bool(_OFFLINE_TLDEXTRACT(pattern_text).fqdn)


def build_analyzer() -> AnalyzerEngine:
    """A Presidio analyzer with pattern recognizers only (slow: build it once)."""
    recognizers: list[EntityRecognizer] = [
        _OfflineEmailRecognizer(),
        PhoneRecognizer(),
        CreditCardRecognizer(),
        IpRecognizer(),
        UrlRecognizer(),
        IbanRecognizer(),
        UsSsnRecognizer(),
    ]
    registry = RecognizerRegistry(recognizers=recognizers, supported_languages=["en"])
    return AnalyzerEngine(
        registry=registry, nlp_engine=_BlankSpacyNlpEngine(), supported_languages=["en"]
    )


# --------------------------------------------------------------------------- normalizing


def _norm_email(value: str) -> str:
    return value.strip().lower()


def _norm_username(value: str) -> str:
    return value.strip().casefold()


def _norm_phone(value: str) -> str:
    return "".join(ch for ch in value if ch.isdigit())


def _norm_name(value: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", value).casefold().split())


_NORMALIZERS = {"email": _norm_email, "username": _norm_username, "name": _norm_name}


def _alnum_tokens(value: str) -> list[str]:
    return re.findall(r"[^\W_]+", value)


#: What may stand between the parts of a value written differently in free text
#: ("John Smith" / "Smith, John" / "ORD-123" / "ord 123"). Brackets are left out so
#: a match never runs from one value into the next ("Smith (smith@...").
_GAP = r"[\s.,:;_\-'#/]{0,3}"
_EMAIL_GAP = r"[\s.,_\-+@]{0,3}"
_PHONE_GAP = r"[\s.\-()/]{0,3}"
_DIGIT_GAP = r"[\s\-.()/]{0,2}"


def _loose_regex(value: str, gap: str = _GAP) -> str | None:
    """A regex matching ``value`` with any case and short punctuation/space changes."""
    tokens = _alnum_tokens(value)
    if not tokens:
        return None
    return r"(?<!\w)" + gap.join(re.escape(t) for t in tokens) + r"(?!\w)"


def _phone_regex(value: str) -> str | None:
    """Match the phone's main number in any grouping, with optional prefix and extension."""
    main = re.split(r"(?i)\s*(?:x|ext\.?|extension)\s*\d+\s*$", value.strip())[0]
    digits = _norm_phone(main)
    if len(digits) < 5:
        return None
    core = digits[-10:]
    prefix = r"(?:(?:(?:\+|00)\s?)?\d{1,3}[\s\-.()/]{0,3})?"
    extension = r"(?:\s*(?:x|ext\.?|extension)\s*\d{1,6})?"
    return r"(?<![\d+])" + prefix + r"\(?" + _DIGIT_GAP.join(core) + extension + r"(?!\d)"


def _ticket_recognizers(ticket: Ticket) -> list[EntityRecognizer]:
    """Ad-hoc recognizers that find this ticket's own identity values in free text."""
    found: dict[str, dict[str, float]] = {}

    def add(entity: str, regex: str | None, score: float = _WHOLE) -> None:
        if regex is not None:
            scores = found.setdefault(entity, {})
            scores[regex] = max(score, scores.get(regex, 0.0))

    if ticket.requester_name and ticket.requester_name.strip():
        add("CUSTOMER_NAME", _loose_regex(ticket.requester_name))
        parts = [
            part
            for part in _alnum_tokens(ticket.requester_name)
            if part.casefold() not in _NAME_AFFIXES
        ]
        add("CUSTOMER_NAME", _loose_regex(" ".join(parts)))
        if len(parts) >= 2:  # "Jane Q. Doe" is also written "Jane Doe" and "Doe, Jane"
            add("CUSTOMER_NAME", _loose_regex(f"{parts[0]} {parts[-1]}"))
            add("CUSTOMER_NAME", _loose_regex(f"{parts[-1]} {parts[0]}"))
        for part in parts:
            if len(part) >= 2:
                add("CUSTOMER_NAME", _loose_regex(part), _PART)
    if ticket.requester_email and ticket.requester_email.strip():
        add("EMAIL_ADDRESS", _loose_regex(ticket.requester_email, _EMAIL_GAP))
        local = ticket.requester_email.strip().rpartition("@")[0]
        if len(local) >= 3:
            add("EMAIL_ADDRESS", _loose_regex(local), _PART)
    if ticket.requester_username and ticket.requester_username.strip():
        add("USERNAME", _loose_regex(ticket.requester_username))
    if ticket.requester_phone and ticket.requester_phone.strip():
        add("PHONE_NUMBER", _loose_regex(ticket.requester_phone, _PHONE_GAP))
        add("PHONE_NUMBER", _phone_regex(ticket.requester_phone), _PART)
    if ticket.order_id and ticket.order_id.strip():
        add("ORDER_ID", _loose_regex(ticket.order_id))
        for run in re.findall(r"\d{4,}", ticket.order_id):
            add("ORDER_ID", r"(?<!\d)" + re.escape(run) + r"(?!\d)", _PART)
    if ticket.address and ticket.address.strip():
        add("ADDRESS", _loose_regex(ticket.address))
        for part in re.split(r"[,;\n]", ticket.address):
            if len(part.strip()) >= 4:
                add("ADDRESS", _loose_regex(part), _PART)
    recognizers: list[EntityRecognizer] = []
    for entity, regexes in found.items():
        patterns = [
            Pattern(f"ticket_{entity.lower()}_{i}", regex, score)
            for i, (regex, score) in enumerate(regexes.items())
        ]
        recognizers.append(
            PatternRecognizer(
                supported_entity=entity,
                patterns=patterns,
                name=f"ticket_{entity.lower()}",
                supported_language="en",
            )
        )
    return recognizers


def _priority(entity: str) -> int:
    return _ENTITY_ORDER.get(entity, len(_ENTITY_ORDER))


def _merge_spans(results: Iterable[AnalyzerResult]) -> list[SpanResult]:
    """Union overlapping findings so every matched character is replaced.

    Each union takes the entity of its longest finding, then the highest score, then
    the first in :data:`ENTITY_TAGS` order; so an email that contains the requester's
    name is tagged ``[EMAIL]``, and the full name beats the email's local part.
    """
    ordered = sorted(results, key=lambda r: (r.start, r.end))
    merged: list[SpanResult] = []
    group: list[AnalyzerResult] = []
    end = -1

    def flush() -> None:
        if group:
            best = max(group, key=lambda r: (r.end - r.start, r.score, -_priority(r.entity_type)))
            start = min(r.start for r in group)
            merged.append(SpanResult(best.entity_type, start, end, best.score))

    for result in ordered:
        if result.end <= result.start:
            continue
        if group and result.start < end:
            group.append(result)
            end = max(end, result.end)
        else:
            flush()
            group = [result]
            end = result.end
    flush()
    return merged


# --------------------------------------------------------------------------- generalizing


def _as_utc(value: datetime) -> datetime:
    return value.astimezone(UTC) if value.tzinfo is not None else value


def _generalize(value: datetime, operator: str) -> str:
    value = _as_utc(value)
    if operator == "generalize:day":
        return value.date().isoformat()
    if operator == "generalize:week":
        year, week, _ = value.isocalendar()
        return f"{year:04d}-W{week:02d}"
    if operator == "generalize:month":
        return f"{value.year:04d}-{value.month:02d}"
    return f"{value.year:04d}"  # "year"


def _parse_datetime(text: str, formats: Sequence[str]) -> datetime | None:
    text = text.strip()
    if not text:
        return None
    for fmt in (*formats, "iso"):
        try:
            if fmt in ("iso", "auto"):
                try:
                    return datetime.fromisoformat(text)
                except ValueError:
                    day = date.fromisoformat(text)
                    return datetime(day.year, day.month, day.day)
            return datetime.strptime(text, fmt)
        except ValueError:
            continue
    return None


def age_band(value: str) -> str | None:
    """``"34"`` -> ``"30-39"``; 90 and over -> ``"90+"``; None when not an age."""
    try:
        age = float(value.strip())
    except ValueError:
        return None
    if not math.isfinite(age) or age < 0 or age >= _AGE_MAX:
        return None
    if age >= _AGE_TOP_BAND:
        return f"{_AGE_TOP_BAND}+"
    low = int(age) // 10 * 10
    return f"{low}-{low + 9}"


def _as_text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, Status):
        return value.value
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


# --------------------------------------------------------------------------- anonymizer


class Pseudonymizer:
    """The keyed part of anonymization: customer tokens, pseudonyms and tokens.

    Cheap to build (no Presidio), so metrics can use :meth:`customer_token` without
    loading the analyzer. The instance remembers every value it issued, so two
    different inputs that truncate to the same output are detected and raised as
    :class:`Internal` rather than silently merged.
    """

    def __init__(self, secret: PartySecret) -> None:
        self._key = secret.key
        self._issued: dict[tuple[str, str], bytes] = {}

    def __repr__(self) -> str:
        return "Pseudonymizer(<keyed>)"

    def _mac(self, label: str, *parts: str) -> bytes:
        return hmac.new(self._key, format_dst(label, *parts), hashlib.sha256).digest()

    def _register(self, space: str, out: str, digest: bytes) -> str:
        previous = self._issued.setdefault((space, out), digest)
        if not hmac.compare_digest(previous, digest):
            raise Internal(
                f"two different {space} values map to the same pseudonym; "
                f"refusing to write an ambiguous export",
                field=space,
            )
        return out

    def customer_token(self, ticket: Ticket) -> str:
        """Stable keyed token of the ticket's customer (for the per-customer cap).

        Identity, in order of preference: normalized email, username, phone digits,
        name, else the ticket itself (``ticket:<ticket_id>``).
        """
        candidates: list[tuple[str, str]] = [
            ("email", _norm_email(ticket.requester_email or "")),
            ("username", _norm_username(ticket.requester_username or "")),
            ("phone", _norm_phone(ticket.requester_phone or "")),
            ("name", _norm_name(ticket.requester_name or "")),
        ]
        kind, value = next(
            ((k, v) for k, v in candidates if v), ("ticket", f"ticket:{ticket.ticket_id}")
        )
        digest = self._mac("anon/customer", kind, value)
        return self._register("customer", "cust_" + digest.hex()[:_CUSTOMER_HEX], digest)

    def pseudonym_name(self, kind: PseudonymKind, value: str) -> str:
        """Stable pseudonym of a name, email or username (keyed, not per round).

        ``name`` -> ``User<c>``, ``email`` -> ``user<c>@anonymized.com``,
        ``username`` -> ``user_<c>`` where ``<c>`` is 12 lowercase base32 characters
        (60 bits) of HMAC-SHA256 over the normalized value.
        """
        normalize = _NORMALIZERS.get(kind)
        if normalize is None:
            raise InvalidArgument(f"unknown pseudonym kind {kind!r}", field="kind")
        normalized = normalize(value)
        if not normalized:
            raise InvalidArgument("cannot pseudonymize an empty value", field=kind)
        digest = self._mac("anon/pseudonym", kind, normalized)
        chars = base64.b32encode(digest).decode("ascii")[:_PSEUDONYM_CHARS].lower()
        if kind == "name":
            out = f"User{chars}"
        elif kind == "email":
            out = f"user{chars}@anonymized.com"
        else:
            out = f"user_{chars}"
        return self._register(f"pseudonym:{kind}", out, digest)

    def token(self, value: str) -> str:
        """Opaque keyed token ``tok_<16 hex>`` of ``value`` (surrounding spaces ignored)."""
        stripped = value.strip()
        if not stripped:
            raise InvalidArgument("cannot tokenize an empty value", field="value")
        digest = self._mac("anon/token", stripped)
        return self._register("token", "tok_" + digest.hex()[:_TOKEN_HEX], digest)


class Anonymizer:
    """Applies the mapping's operators to canonical tickets.

    Build one per run: construction loads the Presidio analyzer (slow), and the
    instance's :class:`Pseudonymizer` remembers every pseudonym and token it issued
    so a collision between two different values is detected.
    """

    def __init__(self, secret: PartySecret, mapping: Mapping) -> None:
        self.pseudonymizer = Pseudonymizer(secret)
        self._mapping_name = str(mapping.name)
        self._date_formats = tuple(mapping.date_formats)
        self._extras = tuple(str(name) for name in mapping.extras)
        self._explicit = _check_operators(dict(mapping.operators), self._extras)
        self._analyzer = build_analyzer()
        # presidio-anonymizer's __init__ is unannotated
        self._engine = AnonymizerEngine()  # type: ignore[no-untyped-call]
        self._replace = {
            entity: OperatorConfig("replace", {"new_value": f"[{tag}]"})
            for entity, tag in ENTITY_TAGS.items()
        }
        self._replace["DEFAULT"] = OperatorConfig("replace", {"new_value": f"[{_FALLBACK_TAG}]"})

    def __repr__(self) -> str:
        return f"Anonymizer(mapping={self._mapping_name!r})"

    # -- keyed values (see Pseudonymizer) ---------------------------------

    def customer_token(self, ticket: Ticket) -> str:
        """See :meth:`Pseudonymizer.customer_token`."""
        return self.pseudonymizer.customer_token(ticket)

    def pseudonym_name(self, kind: PseudonymKind, value: str) -> str:
        """See :meth:`Pseudonymizer.pseudonym_name`."""
        return self.pseudonymizer.pseudonym_name(kind, value)

    def token(self, value: str) -> str:
        """See :meth:`Pseudonymizer.token`."""
        return self.pseudonymizer.token(value)

    # -- free text ---------------------------------------------------------

    def scrub(self, text: str, ticket: Ticket | None = None) -> tuple[str, Counter[str]]:
        """Replace personal data in ``text`` by tags; returns the text and tag counts.

        With ``ticket``, that ticket's own identity values are searched for as well.
        """
        if not text.strip():
            return text, Counter()
        ad_hoc = _ticket_recognizers(ticket) if ticket is not None else []
        found = self._analyzer.analyze(text=text, language="en", ad_hoc_recognizers=ad_hoc or None)
        spans = _merge_spans(found)
        if not spans:
            return text, Counter()
        result = self._engine.anonymize(
            text=text,
            analyzer_results=spans,
            operators=self._replace,
            merge_entities_with_spaces=False,
        )
        counts = Counter(ENTITY_TAGS.get(span.entity_type, _FALLBACK_TAG) for span in spans)
        return str(result.text), counts

    # -- rows --------------------------------------------------------------

    def operators(self, extras: Sequence[str] = ()) -> dict[str, str]:
        """The operator applied to each output field, defaults included."""
        names = list(CANONICAL_FIELDS) + [e for e in (*self._extras, *extras) if e]
        return {
            name: self._explicit.get(name, _default_operator(name)) for name in dict.fromkeys(names)
        }

    def anonymize(self, tickets: Sequence[Ticket]) -> tuple[list[dict[str, str]], LineageSummary]:
        """One output row per ticket (canonical fields, then extras), plus the lineage."""
        seen_extras = [name for t in tickets for name, _ in t.extras]
        ops = self.operators(seen_extras)
        columns = [name for name, op in ops.items() if op != "drop"]
        entities: Counter[str] = Counter()
        suppressed: Counter[str] = Counter()
        rows: list[dict[str, str]] = []
        for ticket in tickets:
            extras = dict(ticket.extras)
            row: dict[str, str] = {}
            for name in columns:
                value: object = (
                    getattr(ticket, name) if name in CANONICAL_FIELDS else extras.get(name)
                )
                row[name] = self._apply(
                    ops[name], name, value, ticket=ticket, entities=entities, suppressed=suppressed
                )
            rows.append(row)
        summary = LineageSummary(
            rules_version=RULES_VERSION,
            rows_in=len(tickets),
            rows_out=len(rows),
            entities=dict(sorted(entities.items())),
            operators=ops,
            mapping=self._mapping_name,
            suppressed=dict(sorted(suppressed.items())),
        )
        return rows, summary

    def _apply(
        self,
        op: str,
        name: str,
        value: object,
        *,
        ticket: Ticket,
        entities: Counter[str],
        suppressed: Counter[str],
    ) -> str:
        if value is None or (isinstance(value, str) and not value.strip()):
            return ""
        tag = IDENTITY_TAGS.get(name, name.upper())
        if op == "keep":
            return _as_text(value)
        if op == "redact":
            entities[tag] += 1
            return f"[{tag}]"
        if op == "pseudonym":
            entities[tag] += 1
            return self.pseudonym_name(_PSEUDONYM_FIELDS[name], _as_text(value))
        if op == "token":
            entities[tag] += 1
            return self.token(_as_text(value))
        if op == "scrub":
            text, counts = self.scrub(_as_text(value), ticket)
            entities.update(counts)
            return text
        if op in _TIME_OPERATORS:
            when = value if isinstance(value, datetime) else None
            if when is None and isinstance(value, str):
                when = _parse_datetime(value, self._date_formats)
            if when is None:
                suppressed[name] += 1
                return ""
            return _generalize(when, op)
        if op == "age_band":
            band = age_band(_as_text(value))
            if band is None:
                suppressed[name] += 1
                return ""
            return band
        raise Internal(f"unhandled operator {op!r}", field=name)  # _check_operators prevents it


def _default_operator(name: str) -> str:
    if name in IDENTITY_FIELDS:
        return "redact"
    if name in FREE_TEXT_FIELDS or name not in CANONICAL_FIELDS:
        return "scrub"
    return "keep"


def _check_operators(operators: dict[str, str], extras: Sequence[str]) -> dict[str, str]:
    """Refuse operators that cannot apply to their field (ConfigError naming it)."""
    checked: dict[str, str] = {}
    for name, op in operators.items():
        key = f"anonymize.{name}"
        is_extra = name in extras
        if name not in CANONICAL_FIELDS and not is_extra:
            raise ConfigError("not a canonical field or an extras name", field=key)
        if op not in OPERATORS:
            raise ConfigError(f"unknown operator {op!r}", field=key)
        if op == "pseudonym" and name not in _PSEUDONYM_FIELDS:
            raise ConfigError(
                "pseudonym applies to requester_name, requester_email and "
                "requester_username only; use token",
                field=key,
            )
        if op in _TIME_OPERATORS and not (is_extra or name in TIMESTAMP_FIELDS):
            raise ConfigError(f"{op} applies to timestamps and extras only", field=key)
        if op == "age_band" and not is_extra:
            raise ConfigError("age_band applies to extras columns only", field=key)
        checked[name] = op
    return checked


# --------------------------------------------------------------------------- files


def write_export(
    rows: Sequence[dict[str, str]], path: Path, *, columns: Sequence[str] | None = None
) -> None:
    """Write rows as CSV (``.csv``) or JSON lines (``.jsonl``/``.ndjson``).

    ``columns`` fixes the CSV header (needed when ``rows`` is empty); otherwise the
    keys of the first row. Every row must have exactly those keys.
    """
    path = Path(path)
    header = list(columns) if columns is not None else (list(rows[0]) if rows else [])
    for index, row in enumerate(rows, start=1):
        if list(row) != header:
            raise InvalidArgument(
                f"row {index} has different columns than the header", field="rows"
            )
    suffix = path.suffix.lower()
    if suffix == ".csv":
        with path.open("w", encoding="utf-8", newline="") as handle:
            if header:
                writer = csv.DictWriter(handle, fieldnames=header)
                writer.writeheader()
                writer.writerows(rows)
    elif suffix in (".jsonl", ".ndjson"):
        with path.open("w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    else:
        raise InvalidArgument(
            f"cannot tell the export format of {path.name}: use .csv, .jsonl or .ndjson",
            field="output",
        )


def write_lineage(summary: LineageSummary, path: Path) -> None:
    """Write the lineage summary as JSON."""
    Path(path).write_text(summary.to_json() + "\n", encoding="utf-8")
