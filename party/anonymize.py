"""Anonymize canonical tickets into a shareable export: nothing raw leaves (docs/THREAT_MODEL.md).

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
    emails, phone numbers, card numbers, IP addresses, URLs, IBANs and SSNs. Identity
    matchers find requester names, emails, phones, usernames, order ids and addresses
    again in the text: the ticket's own values (and its ticket id, tagged
    ``[TICKET_ID]``, unless the mapping keeps ticket ids), and in
    :meth:`Anonymizer.anonymize` also every other ticket's values in the export (a
    requester naming a spouse who is a customer too). They match on a folded copy of
    the text (case, accents, fullwidth letters and zero-width characters ignored),
    with spacing or punctuation changes, order numbers written in groups
    ("ORD 1234 5678"), username stems ("jsmith" of "jsmith_88") and names glued to
    other words ("JohnSmith1990").
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

Limits: there is no NER model, so names of people who are not requesters in the
same export (an agent, a relative) are only found when a pattern recognizer matches
them. Another ticket's single-word values that are common words ("Will", "King",
"info@") are not searched for outside that ticket (see ``_WIDE_STOPWORDS``).
Nothing reaches the network: the NLP engine is a blank spaCy tokenizer and the
email recognizer uses tldextract's bundled public-suffix snapshot.
"""

from __future__ import annotations

import csv
import functools
import json
import math
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import spacy
import tldextract
from presidio_analyzer import AnalyzerEngine, EntityRecognizer, RecognizerRegistry
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
from spacy.lang.en.stop_words import STOP_WORDS as SPACY_STOP_WORDS
from spacy.tokens import Doc

from blindsum import ANONYMIZATION_RULES
from blindsum.errors import ConfigError, Internal, InvalidArgument
from party.mapping import OPERATORS, Mapping
from party.pseudonym import (
    PartySecret,
    Pseudonymizer,
    PseudonymKind,
)
from party.tickets import (
    CANONICAL_FIELDS,
    FREE_TEXT_FIELDS,
    IDENTITY_FIELDS,
    TIMESTAMP_FIELDS,
    Status,
    Ticket,
)

#: Version of the anonymization rules; bump whenever an operator's output changes.
RULES_VERSION = ANONYMIZATION_RULES

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
    "TICKET_ID": "TICKET_ID",
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

_PSEUDONYM_FIELDS: dict[str, PseudonymKind] = {
    "requester_name": "name",
    "requester_email": "email",
    "requester_username": "username",
}

_TIME_OPERATORS = frozenset({"generalize:day", "generalize:week", "generalize:month", "year"})
_AGE_MAX = 150
_AGE_TOP_BAND = 90
#: Name parts never matched alone in free text (titles and suffixes).
_NAME_AFFIXES = frozenset(
    {"mr", "mrs", "ms", "miss", "mx", "dr", "prof", "jr", "sr", "ii", "iii", "iv", "md", "phd"}
    | {"dds", "dvm", "esq"}
)


# --------------------------------------------------------------------------- secret


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


# --------------------------------------------------------------------------- folding

#: Letters NFKD leaves whole, spelled the way people type them without the accent.
_FOLD_LETTERS = str.maketrans(
    {
        "ł": "l",
        "ø": "o",
        "đ": "d",
        "ð": "d",
        "ħ": "h",
        "\u0131": "i",  # dotless i
        "ŀ": "l",
        "ŧ": "t",
        "ŋ": "n",
        "ĸ": "k",
        "æ": "ae",
        "œ": "oe",
        "þ": "th",
    }
)


@functools.lru_cache(maxsize=8192)
def _fold_char(ch: str) -> str:
    """One character folded for matching: lowercase, accents and compatibility forms
    (fullwidth, ligatures) removed; format characters (zero-width spaces and joiners,
    soft hyphens) fold to nothing."""
    if unicodedata.category(ch) == "Cf":
        return ""
    out = unicodedata.normalize("NFKD", unicodedata.normalize("NFKD", ch).casefold())
    return "".join(c for c in out if not unicodedata.combining(c)).translate(_FOLD_LETTERS)


@dataclass(frozen=True)
class _Folded:
    """``original`` folded character by character (see :func:`_fold_char`).

    ``starts[j]`` is the offset in ``original`` of the character that produced
    ``text[j]``; None when the offsets are the same (ASCII text).
    """

    original: str = field(repr=False)
    text: str = field(repr=False)
    starts: tuple[int, ...] | None = field(repr=False)

    def source(self, j: int) -> str:
        """The original character behind folded character ``j``."""
        return self.original[j if self.starts is None else self.starts[j]]

    def span(self, start: int, end: int) -> tuple[int, int]:
        """Original offsets of the folded span ``[start, end)`` (``start < end``).

        Characters folded to nothing right after the span (a combining accent, a
        zero-width joiner) are included, so no stray mark is left behind a tag.
        """
        if self.starts is None:
            return start, end
        first = self.starts[start]
        if end >= len(self.starts):
            return first, len(self.original)
        last, after = self.starts[end - 1], self.starts[end]
        return first, (last + 1 if after == last else after)


def _fold(text: str) -> _Folded:
    if text.isascii():
        return _Folded(text, text.lower(), None)
    pieces: list[str] = []
    starts: list[int] = []
    for i, ch in enumerate(text):
        folded = _fold_char(ch)
        pieces.append(folded)
        starts.extend([i] * len(folded))
    return _Folded(text, "".join(pieces), tuple(starts))


def _alnum_tokens(value: str) -> list[str]:
    """The folded letter/digit runs of ``value`` (``"Zoë Ł-M"`` -> ``zoe``, ``l``, ``m``)."""
    return re.findall(r"[^\W_]+", _fold(value).text)


# --------------------------------------------------------------------------- identity matching

#: What may stand between the parts of a value written differently in free text
#: ("John Smith" / "Smith, John" / "ORD-123" / "ord 123"). Brackets are left out so
#: a match never runs from one value into the next ("Smith (smith@...").
_GAP = r"[\s.,:;_\-'#/]{0,3}"
_EMAIL_GAP = r"[\s.,_\-+@]{0,3}"
_PHONE_GAP = r"[\s.\-()/]{0,3}"
_DIGIT_GAP = r"[\s\-.()/]{0,2}"
#: Between the digits of an order or ticket number ("1234 5678", "1234-5678").
_RUN_GAP = r"[ \-]?"

#: Terms are folded tokens joined by these marker characters (never inside a token),
#: each standing for the separator regex it maps to.
_MARKERS = {" ": _GAP, "@": _EMAIL_GAP, "~": _PHONE_GAP, ":": _DIGIT_GAP, "-": _RUN_GAP}

#: How a term's regex is anchored, by kind: a whole word, a phone number's main
#: digits (with an optional country prefix and extension), or a digit run.
_PHONE_PREFIX = r"(?:(?:(?:\+|00)\s?)?\d{1,3}[\s\-.()/]{0,3})?\(?"
_PHONE_EXTENSION = r"(?:\s*(?:x|ext\.?|extension)\s*\d{1,6})?"
_FRAMES = {
    "word": (r"(?<!\w)(?:", r")(?!\w)"),
    "phone": (r"(?<![\d+])" + _PHONE_PREFIX + "(?:", ")" + _PHONE_EXTENSION + r"(?!\d)"),
    "digits": (r"(?<!\d)(?:", r")(?!\d)"),
}
#: Longer terms are cut to their leading tokens (the regex nests one group per
#: branching character).
_MAX_TERM = 200
#: Shortest digit runs matched on their own: a ticket's own order number, another
#: ticket's order number, another ticket's phone number.
_OWN_RUN = 4
_WIDE_RUN = 6
_WIDE_PHONE = 7
#: Shortest name part (or username stem) matched inside a longer word ("JohnSmith1990").
_GLUED_PIECE = 4

#: Words never matched alone from *another* ticket's identity values: English stop
#: words, common words that are also names ("Will", "King", "Grant") and generic
#: mailbox or account names ("info@", "admin"). The ticket's own values still match.
_WIDE_STOPWORDS = frozenset(
    {w for w in SPACY_STOP_WORDS if w.isalpha()}
    | {"april", "august", "june", "may", "summer", "autumn", "winter", "dawn", "day"}
    | {"will", "bill", "mark", "marks", "grant", "chase", "frank", "guy", "jack", "joy"}
    | {"hope", "faith", "grace", "rose", "holly", "ivy", "violet", "amber", "ruby", "pearl"}
    | {"crystal", "penny", "sandy", "misty", "candy", "cherry", "ginger", "olive", "angel"}
    | {"robin", "river", "sky", "storm", "ray", "sue", "don", "gene", "art", "earl", "duke"}
    | {"king", "long", "young", "white", "black", "brown", "green", "gray", "grey", "best"}
    | {"good", "rich", "love", "wise", "small", "short", "sharp", "stark", "stout", "noble"}
    | {"hardy", "little", "strong", "price", "page", "case", "cross", "glass", "house"}
    | {"hall", "hill", "wood", "woods", "stone", "lane", "park", "parks", "west", "north"}
    | {"south", "east", "bell", "ball", "banks", "bass", "bean", "beard", "berry", "bird"}
    | {"bond", "booth", "buck", "bush", "clay", "cook", "dale", "dean", "drake", "ford"}
    | {"fox", "gates", "gross", "hart", "heath", "hood", "horn", "hunt", "key", "lamb"}
    | {"lance", "marsh", "mason", "miles", "mills", "moon", "moss", "peck", "pope", "rice"}
    | {"rush", "snow", "wall", "walls", "ward", "ware", "watts", "weeks", "wells", "wolf"}
    | {"baker", "carter", "hunter", "miller", "porter", "potter", "fisher", "turner"}
    | {"walker", "parker", "cooper", "bishop", "knight", "church", "field", "law", "max"}
    | {"admin", "info", "contact", "support", "sales", "billing", "help", "hello", "mail"}
    | {"email", "office", "team", "test", "user", "shop", "store", "service", "noreply"}
    | {"reply", "order", "account", "customer", "ticket", "street", "road", "city"}
    | {"unknown", "anonymous", "guest", "null", "nan", "client", "requester", "member"}
)


@dataclass
class _Terms:
    """Identity values as matcher terms, grouped by (kind, entity, score).

    ``pieces`` maps a name part or username stem to its entity and to the identity
    records it belongs to, for the glued-word pass.
    """

    groups: dict[tuple[str, str, float], set[str]] = field(default_factory=dict)
    pieces: dict[str, tuple[str, set[int]]] = field(default_factory=dict)

    def add(self, kind: str, entity: str, term: str, score: float) -> None:
        if len(term) > _MAX_TERM:  # keep whole leading tokens
            cut = max(term.rfind(m, 0, _MAX_TERM) for m in " @~")
            term = term[: cut if cut > 0 else _MAX_TERM]
        if term:
            self.groups.setdefault((kind, entity, score), set()).add(term)

    def add_piece(self, piece: str, entity: str, record: int) -> None:
        current = self.pieces.get(piece)
        if current is None:
            self.pieces[piece] = (entity, {record})
        else:
            current[1].add(record)


def _join(tokens: Sequence[str], marker: str = " ", *, runs: bool = False) -> str:
    """Tokens joined by ``marker``; with ``runs``, digit tokens of 4 or more digits
    may also be written with single spaces or dashes between their digits."""
    return marker.join("-".join(t) if runs and t.isdigit() and len(t) >= 4 else t for t in tokens)


def _wide_ok(tokens: Sequence[str]) -> bool:
    """Whether another ticket's value is specific enough to look for everywhere: not
    a stop word, and 6 characters or more when it has a number on its own ("A-2024"
    and "2024" are not; "amy78" is)."""
    if len(tokens) == 1 and tokens[0].isalpha():
        return len(tokens[0]) >= 3 and tokens[0] not in _WIDE_STOPWORDS
    size = sum(len(t) for t in tokens)
    return size >= (6 if any(t.isdigit() for t in tokens) else 4)


def _phone_core(value: str) -> str:
    """The phone's main number (extension cut), last 10 digits, folded."""
    main = re.split(r"(?i)\s*(?:x|ext\.?|extension)\s*\d+\s*$", value.strip())[0]
    return "".join(ch for ch in _fold(main).text if ch.isdigit())[-10:]


def _add_identity(terms: _Terms, ticket: Ticket, record: int, *, wide: bool) -> None:
    """Add the terms that find ``ticket``'s identity values in free text.

    ``wide`` is for another ticket's values: single words must pass :func:`_wide_ok`
    and digit runs must be longer, so ordinary words and numbers are left alone.
    """

    def add(
        entity: str, tokens: Sequence[str], score: float, marker: str = " ", runs: bool = False
    ) -> None:
        if tokens and (not wide or _wide_ok(tokens)):
            terms.add("word", entity, _join(tokens, marker, runs=runs), score)

    name = ticket.requester_name or ""
    if name.strip():
        tokens = _alnum_tokens(name)
        parts = [t for t in tokens if t not in _NAME_AFFIXES]
        add("CUSTOMER_NAME", tokens, _WHOLE)
        add("CUSTOMER_NAME", parts, _WHOLE)
        if len(parts) >= 2:  # "Jane Q. Doe" is also written "Jane Doe" and "Doe, Jane"
            add("CUSTOMER_NAME", [parts[0], parts[-1]], _WHOLE)
            add("CUSTOMER_NAME", [parts[-1], parts[0]], _WHOLE)
        for part in parts:
            if len(part) >= (3 if wide else 2):
                add("CUSTOMER_NAME", [part], _PART)
            if len(part) >= _GLUED_PIECE and part.isalpha() and (not wide or _wide_ok([part])):
                terms.add_piece(part, "CUSTOMER_NAME", record)
    email = (ticket.requester_email or "").strip()
    if email:
        add("EMAIL_ADDRESS", _alnum_tokens(email), _WHOLE, marker="@")
        local = email.rpartition("@")[0]
        if len(local) >= 3:
            add("EMAIL_ADDRESS", _alnum_tokens(local), _PART)
    username = (ticket.requester_username or "").strip()
    if username:
        add("USERNAME", _alnum_tokens(username), _WHOLE)
        folded = _fold(username).text
        stem = re.match(r"[^\W\d_]*", folded)
        if stem is not None and len(stem.group()) >= _GLUED_PIECE:  # "jsmith" of "jsmith_88"
            if stem.group() != folded:
                add("USERNAME", [stem.group()], _PART)
            if not wide or _wide_ok([stem.group()]):
                terms.add_piece(stem.group(), "USERNAME", record)
    phone = (ticket.requester_phone or "").strip()
    if phone:
        digits = sum(ch.isdigit() for ch in _fold(phone).text)
        if not wide or digits >= _WIDE_PHONE:
            add("PHONE_NUMBER", _alnum_tokens(phone), _WHOLE, marker="~")
        core = _phone_core(phone)
        if len(core) >= (_WIDE_PHONE if wide else 5):
            terms.add("phone", "PHONE_NUMBER", ":".join(core), _PART)
    order = (ticket.order_id or "").strip()
    if order:
        add("ORDER_ID", _alnum_tokens(order), _WHOLE, runs=True)
        for run in re.findall(r"\d+", _fold(order).text):
            if len(run) >= (_WIDE_RUN if wide else _OWN_RUN):
                terms.add("digits", "ORDER_ID", "-".join(run), _PART)
    address = (ticket.address or "").strip()
    if address:
        add("ADDRESS", _alnum_tokens(address), _WHOLE)
        for line in re.split(r"[,;\n]", address):
            if len(line.strip()) >= 4 and (not wide or any(ch.isdigit() for ch in line)):
                add("ADDRESS", _alnum_tokens(line), _PART)


def _add_ticket_id(terms: _Terms, ticket: Ticket) -> None:
    """Add the ticket's own id ("TKT-004711", "tkt 004711", "#004711")."""
    tokens = _alnum_tokens(ticket.ticket_id or "")
    if sum(len(t) for t in tokens) >= 4:
        terms.add("word", "TICKET_ID", _join(tokens, runs=True), _WHOLE)
    for token in tokens:
        if token.isdigit() and len(token) >= _OWN_RUN:
            terms.add("digits", "TICKET_ID", "-".join(token), _PART)


def _trie_regex(terms: Iterable[str]) -> str:
    """One regex matching any of ``terms`` (marker characters as their separators).

    The terms share their prefixes (a character trie), so matching costs about the
    length of the longest term at each position, not the number of terms; longer
    continuations are tried first.
    """
    root: dict[str, dict[str, Any]] = {}
    for term in terms:
        node = root
        for ch in term:
            node = node.setdefault(ch, {})
        node[""] = {}  # a term ends here
    return _node_regex(root)[0]


def _node_regex(node: dict[str, dict[str, Any]]) -> tuple[str, int]:
    """The regex and height of a trie node; chains of single children are unrolled."""
    out: list[str] = []
    height = 0
    while True:
        keys = [k for k in node if k]
        if len(keys) == 1 and "" not in node:
            out.append(_MARKERS.get(keys[0], re.escape(keys[0])))
            height += 1
            node = node[keys[0]]
            continue
        if keys:
            subs = [(k, *_node_regex(node[k])) for k in keys]
            subs.sort(key=lambda s: (-s[2], s[0]))
            alts = "|".join(_MARKERS.get(k, re.escape(k)) + sub for k, sub, _ in subs)
            out.append(f"(?:{alts})" + ("?" if "" in node else ""))
            height += 1 + subs[0][2]
        return "".join(out), height


class _IdentityMatcher:
    """Finds identity values (one ticket's, or a whole export's) in free text.

    Matching runs on the folded text (:func:`_fold`), so case, accents, fullwidth
    letters and zero-width characters do not hide a value; findings are mapped back
    to offsets in the original text. Build cost is linear in the number of terms.
    """

    def __init__(self, terms: _Terms) -> None:
        self._patterns = [
            (entity, score, re.compile(_FRAMES[kind][0] + _trie_regex(group) + _FRAMES[kind][1]))
            for (kind, entity, score), group in sorted(terms.groups.items())
            if group
        ]
        self._pieces = {
            piece: (entity, frozenset(recs)) for piece, (entity, recs) in terms.pieces.items()
        }
        self._piece_lengths = sorted({len(p) for p in self._pieces}, reverse=True)
        self._piece_re = (
            re.compile(r"(?=" + _trie_regex(self._pieces) + ")") if self._pieces else None
        )

    @classmethod
    def for_ticket(cls, ticket: Ticket, *, ticket_id: bool) -> _IdentityMatcher:
        """The ticket's own values (and its ticket id when ``ticket_id``)."""
        terms = _Terms()
        _add_identity(terms, ticket, 0, wide=False)
        if ticket_id:
            _add_ticket_id(terms, ticket)
        return cls(terms)

    @classmethod
    def for_export(cls, tickets: Iterable[Ticket]) -> _IdentityMatcher:
        """Every ticket's values, to be found in every other ticket's free text."""
        terms = _Terms()
        for record, ticket in enumerate(tickets):
            _add_identity(terms, ticket, record, wide=True)
        return cls(terms)

    def find(self, folded: _Folded) -> list[AnalyzerResult]:
        """Every finding in ``folded``, with offsets in its original text (may overlap)."""
        found: list[AnalyzerResult] = []
        for entity, score, pattern in self._patterns:
            for match in pattern.finditer(folded.text):
                if match.end() > match.start():
                    start, end = folded.span(match.start(), match.end())
                    found.append(AnalyzerResult(entity, start, end, score))
        for entity, start, end in self._glued(folded):
            found.append(AnalyzerResult(entity, *folded.span(start, end), _PART))
        return found

    def _glued(self, folded: _Folded) -> list[tuple[str, int, int]]:
        """Name parts and username stems inside longer words ("JohnSmith1990").

        A word is split at its seams: its ends, letter/digit changes and lower-to-upper
        case changes in the original text. A piece is found when it lies on a chain of
        pieces of one identity record that runs from a seam to a seam, so "JohnSmith"
        and "jsmith1990" match but "asking" (king) and "marketing" (mark) do not.
        """
        if self._piece_re is None:
            return []
        text = folded.text
        words: dict[int, list[tuple[int, int]]] = {}
        for hit in self._piece_re.finditer(text):
            i = hit.start()
            start = i
            while start > 0 and text[start - 1].isalnum():
                start -= 1
            candidates = words.setdefault(start, [])
            for length in self._piece_lengths:
                if text[i : i + length] in self._pieces:
                    candidates.append((i, i + length))
        out: list[tuple[str, int, int]] = []
        for start, candidates in words.items():
            end = start
            while end < len(text) and text[end].isalnum():
                end += 1
            if all(i == start and j == end for i, j in candidates):
                continue  # a whole word: the word patterns match it
            out.extend(self._chains(folded, start, end, candidates))
        return out

    def _chains(
        self, folded: _Folded, start: int, end: int, candidates: list[tuple[int, int]]
    ) -> list[tuple[str, int, int]]:
        text = folded.text
        seams = {start, end}
        for k in range(start + 1, end):
            digit_change = text[k - 1].isdigit() != text[k].isdigit()
            camel = folded.source(k - 1).islower() and folded.source(k).isupper()
            if digit_change or camel:
                seams.add(k)
        # records that reach a position by a chain from a seam (None: any record)
        ahead: dict[int, frozenset[int] | None] = dict.fromkeys(seams)
        for i, j in sorted(candidates):
            if i in ahead:
                ahead[j] = _join_records(
                    ahead.get(j, frozenset()), _meet(ahead[i], self._pieces[text[i:j]][1])
                )
        behind: dict[int, frozenset[int] | None] = dict.fromkeys(seams)
        for i, j in sorted(candidates, key=lambda c: (-c[1], -c[0])):
            if j in behind:
                behind[i] = _join_records(
                    behind.get(i, frozenset()), _meet(behind[j], self._pieces[text[i:j]][1])
                )
        out: list[tuple[str, int, int]] = []
        for i, j in sorted(set(candidates)):
            entity, records = self._pieces[text[i:j]]
            if i in ahead and j in behind and _meet(_meet(ahead[i], records), behind[j]):
                if out and out[-1][0] == entity and i <= out[-1][2]:  # "John"+"Smith": one tag
                    out[-1] = (entity, out[-1][1], max(j, out[-1][2]))
                else:
                    out.append((entity, i, j))
        return out


def _meet(a: frozenset[int] | None, b: frozenset[int] | None) -> frozenset[int] | None:
    return b if a is None else a if b is None else a & b


def _join_records(a: frozenset[int] | None, b: frozenset[int] | None) -> frozenset[int] | None:
    return None if a is None or b is None else a | b


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
        self._scrub_ticket_id = self._explicit.get("ticket_id", "keep") != "keep"
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

        With ``ticket``, that ticket's own identity values are searched for as well
        (and its ticket id, unless the mapping keeps ticket ids). The values of other
        tickets are only searched for by :meth:`anonymize`, which knows the export.
        """
        return self._scrub(text, [self._own_matcher(ticket)] if ticket is not None else [])

    def _own_matcher(self, ticket: Ticket) -> _IdentityMatcher:
        return _IdentityMatcher.for_ticket(ticket, ticket_id=self._scrub_ticket_id)

    def _scrub(self, text: str, matchers: Sequence[_IdentityMatcher]) -> tuple[str, Counter[str]]:
        if not text.strip():
            return text, Counter()
        found = self._analyzer.analyze(text=text, language="en")
        if matchers:
            folded = _fold(text)
            for matcher in matchers:
                found.extend(matcher.find(folded))
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
        """One output row per ticket (canonical fields, then extras), plus the lineage.

        Free text is scrubbed of its own ticket's identity values and of every other
        ticket's (a requester naming a relative who is a customer too): the export's
        values are gathered into one matcher per call, so the cost stays linear.
        """
        seen_extras = [name for t in tickets for name, _ in t.extras]
        ops = self.operators(seen_extras)
        columns = [name for name, op in ops.items() if op != "drop"]
        scrubbing = any(ops[name] == "scrub" for name in columns)
        wide = [_IdentityMatcher.for_export(tickets)] if scrubbing and tickets else []
        entities: Counter[str] = Counter()
        suppressed: Counter[str] = Counter()
        rows: list[dict[str, str]] = []
        for ticket in tickets:
            scrubber = _TicketScrubber(self, ticket, wide)
            extras = dict(ticket.extras)
            row: dict[str, str] = {}
            for name in columns:
                value: object = (
                    getattr(ticket, name) if name in CANONICAL_FIELDS else extras.get(name)
                )
                row[name] = self._apply(
                    ops[name],
                    name,
                    value,
                    scrub=scrubber,
                    entities=entities,
                    suppressed=suppressed,
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
        scrub: Callable[[str], tuple[str, Counter[str]]],
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
            text, counts = scrub(_as_text(value))
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


class _TicketScrubber:
    """Scrubs one ticket's free-text cells; its own matcher is built on first use."""

    def __init__(
        self, anonymizer: Anonymizer, ticket: Ticket, wide: Sequence[_IdentityMatcher]
    ) -> None:
        self._anonymizer = anonymizer
        self._ticket = ticket
        self._wide = wide
        self._own: _IdentityMatcher | None = None

    def __call__(self, text: str) -> tuple[str, Counter[str]]:
        if self._own is None:
            self._own = self._anonymizer._own_matcher(self._ticket)
        return self._anonymizer._scrub(text, [self._own, *self._wide])


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
                writer.writerows({k: _csv_safe(v) for k, v in row.items()} for row in rows)
    elif suffix in (".jsonl", ".ndjson"):
        with path.open("w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    else:
        raise InvalidArgument(
            f"cannot tell the export format of {path.name}: use .csv, .jsonl or .ndjson",
            field="output",
        )


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")


def _csv_safe(value: str) -> str:
    """Defuse spreadsheet formulas: a text cell starting with = + - @ (or a tab or
    CR) gets a leading apostrophe, as OWASP recommends for CSV exports. Numbers,
    such as a negative duration, are left alone."""
    if value.startswith(_FORMULA_START) and not _NUMBER.fullmatch(value):
        return "'" + value
    return value


def write_lineage(summary: LineageSummary, path: Path) -> None:
    """Write the lineage summary as JSON."""
    Path(path).write_text(summary.to_json() + "\n", encoding="utf-8")
