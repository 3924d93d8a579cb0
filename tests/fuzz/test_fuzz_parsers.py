"""Fuzz targets over the parsers that read what others send (see conftest.py)."""

from __future__ import annotations

import contextlib
import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError, Message
from hypothesis import example, given, settings
from hypothesis import strategies as st

from blindsum import codec, reportdoc
from blindsum.errors import BlindsumError
from blindsum.rpc.v1 import admin_pb2, common_pb2, report_pb2, round_pb2
from blindsum.schema import Schema, load_metrics_file
from party.mapping import mapping_from_toml
from tests.fuzz.conftest import FUZZ_PROFILE

PROFILE = settings.get_profile(FUZZ_PROFILE)

_INTS = st.one_of(
    st.integers(-(1 << 63), (1 << 63) - 1),
    st.sampled_from([0, 1, -1, 2**31 - 1, 2**32 - 1, 2**63 - 1, -(2**63)]),
)
_TEXT = st.one_of(st.text(max_size=40), st.sampled_from(["", "APAC", "../x", "\x00", "a" * 300]))
_BYTES = st.one_of(st.binary(max_size=80), st.sampled_from([b"", b"\x00" * 32, b"\xff" * 64]))


def _value(field: FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
    t = field.type
    if t == FieldDescriptor.TYPE_MESSAGE:
        return messages(field.message_type, depth + 1)
    if t == FieldDescriptor.TYPE_STRING:
        return _TEXT
    if t == FieldDescriptor.TYPE_BYTES:
        return _BYTES
    if t == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if t in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return st.floats(allow_nan=True, allow_infinity=True, width=64 if t == 1 else 32)
    if t == FieldDescriptor.TYPE_ENUM:
        assert field.enum_type is not None
        return st.sampled_from([v.number for v in field.enum_type.values] + [999])
    unsigned = t in (
        FieldDescriptor.TYPE_UINT32,
        FieldDescriptor.TYPE_UINT64,
        FieldDescriptor.TYPE_FIXED32,
        FieldDescriptor.TYPE_FIXED64,
    )
    bits = (
        32
        if t
        in (
            FieldDescriptor.TYPE_INT32,
            FieldDescriptor.TYPE_UINT32,
            FieldDescriptor.TYPE_SINT32,
            FieldDescriptor.TYPE_FIXED32,
            FieldDescriptor.TYPE_SFIXED32,
        )
        else 64
    )
    if unsigned:
        return st.one_of(st.integers(0, (1 << bits) - 1), st.sampled_from([0, 1, (1 << bits) - 1]))
    return st.integers(-(1 << (bits - 1)), (1 << (bits - 1)) - 1)


@st.composite
def _message(draw: st.DrawFn, desc: Any, depth: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for field in desc.fields:
        if depth > 3 and field.type == FieldDescriptor.TYPE_MESSAGE:
            continue
        if not draw(st.booleans()):
            continue
        if field.is_repeated:
            out[field.name] = draw(st.lists(_value(field, depth), max_size=4))
        else:
            out[field.name] = draw(_value(field, depth))
    return out


def messages(desc: Any, depth: int = 0) -> st.SearchStrategy[Any]:
    return _message(desc, depth)


def _build(cls: type[Message], fields: dict[str, Any]) -> Message | None:
    msg = cls()
    try:
        _fill(msg, fields)
    except (ValueError, TypeError):  # a value this field type cannot hold
        return None
    return msg


def _fill(msg: Message, fields: dict[str, Any]) -> None:
    for name, value in fields.items():
        field = msg.DESCRIPTOR.fields_by_name[name]
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            if field.is_repeated:
                for item in value:
                    _fill(getattr(msg, name).add(), item)
            else:
                _fill(getattr(msg, name), value)
        elif field.is_repeated:
            getattr(msg, name).extend(value)
        else:
            setattr(msg, name, value)


def _only_blindsum_errors(call: Callable[[], object]) -> None:
    with contextlib.suppress(BlindsumError):
        call()


DECODERS: list[tuple[type[Message], Callable[[Any], object]]] = [
    (common_pb2.RoundInfo, codec.round_view_from_pb),
    (admin_pb2.OpenRoundRequest, codec.open_round_from_pb),
    (round_pb2.CommitRequest, lambda m: codec.commit_from_request("p", m)),
    (round_pb2.AdvertiseRequest, lambda m: codec.advert_from_request("p", m)),
    (round_pb2.SignedCommit, lambda m: codec.signed_commit_from_pb(m, 0)),
    (round_pb2.SignedAdvert, lambda m: codec.signed_advert_from_pb(m, 0)),
    (round_pb2.SubmitSharesRequest, lambda m: codec.shares_from_pb(m.envelopes, max_count=8)),
    (round_pb2.SubmitUnmaskRequest, lambda m: codec.reveals_from_pb(m.shares, max_count=8)),
    (round_pb2.UnmaskRequest, lambda m: codec.signatures_from_pb(m.signatures, max_count=8)),
    (round_pb2.PublicContext, codec.public_context_from_pb),
    (report_pb2.Report, codec.report_from_pb),
    (common_pb2.DpParams, codec.dp_from_pb),
    (common_pb2.ThreatModel, codec.threat_from_pb),
]


@PROFILE
@given(st.sampled_from(range(len(DECODERS))), st.data())
def test_codec_decoders_take_any_message(index: int, data: st.DataObject) -> None:
    cls, decode = DECODERS[index]
    msg = _build(cls, data.draw(messages(cls.DESCRIPTOR)))
    if msg is not None:
        _only_blindsum_errors(lambda: decode(msg))


@PROFILE
@given(st.sampled_from(range(len(DECODERS))), st.binary(max_size=300))
def test_codec_decoders_take_any_bytes(index: int, raw: bytes) -> None:
    cls, decode = DECODERS[index]
    try:
        msg = cls.FromString(raw)
    except DecodeError:
        return
    _only_blindsum_errors(lambda: decode(msg))


_json = st.recursive(
    st.none() | st.booleans() | _INTS | st.floats() | _TEXT,
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(_TEXT, kids, max_size=4),
    max_leaves=25,
)
SAMPLE_REPORT = None


@PROFILE
@given(_json)
@example({"format": 1})
def test_report_decoder_takes_any_json(doc: Any) -> None:
    _only_blindsum_errors(lambda: reportdoc.decode(json.dumps(doc).encode()))


DEFAULT_SCHEMA_TEXT = (
    Path(__file__).resolve().parents[2] / "blindsum" / "schemas" / "default.toml"
).read_text()
GENERIC_MAPPING_TEXT = (
    Path(__file__).resolve().parents[2] / "party" / "mappings" / "generic.toml"
).read_text()


@st.composite
def mutated(draw: st.DrawFn, text: str) -> str:
    """``text`` with a few lines dropped, duplicated or altered."""
    lines = text.splitlines()
    for _ in range(draw(st.integers(1, 6))):
        if not lines:
            break
        i = draw(st.integers(0, len(lines) - 1))
        action = draw(st.sampled_from(["drop", "dup", "edit", "insert"]))
        if action == "drop":
            del lines[i]
        elif action == "dup":
            lines.insert(i, lines[i])
        elif action == "edit":
            j = draw(st.integers(0, max(0, len(lines[i]))))
            lines[i] = lines[i][:j] + draw(st.text(max_size=6)) + lines[i][j + 1 :]
        else:
            lines.insert(i, draw(st.sampled_from(["[x]", "a = 1", "edges = []", "[[metrics]]"])))
    return "\n".join(lines) + "\n"


@PROFILE
@given(st.one_of(mutated(DEFAULT_SCHEMA_TEXT), st.text(max_size=200)))
def test_schema_toml_takes_anything(text: str) -> None:
    _only_blindsum_errors(lambda: Schema.from_toml(text))


@PROFILE
@given(st.one_of(mutated(GENERIC_MAPPING_TEXT), st.text(max_size=200)))
def test_mapping_toml_takes_anything(text: str) -> None:
    _only_blindsum_errors(lambda: mapping_from_toml(text, origin="fuzz.toml"))


_CSV_CELLS = st.one_of(
    st.sampled_from(["APAC", "EMEA", "tickets", "csat", "csat_sum", "0", "4", "-1", "1e309"]),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=8),
)


@PROFILE
@given(
    st.sampled_from([".csv", ".json"]),
    st.one_of(
        st.lists(st.lists(_CSV_CELLS, min_size=1, max_size=5), max_size=8).map(
            lambda rows: "region,metric,bin,value\n" + "\n".join(",".join(r) for r in rows)
        ),
        _json.map(json.dumps),
        st.text(max_size=100),
    ),
)
def test_metrics_files_take_anything(suffix: str, text: str) -> None:
    schema = Schema.default()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"metrics{suffix}"
        path.write_text(text, encoding="utf-8")
        _only_blindsum_errors(lambda: load_metrics_file(path, schema))


# CSV ticket ingest: a party reads exports it did not write (issue 12, item 6).
_INGEST_COLUMNS = (
    "ticket_id",
    "created_date",
    "resolved_date",
    "first_response_minutes",
    "resolution_hours",
    "status",
    "region",
    "csat_score",
    "nps_score",
    "requester_email",
    "description",
)
_INGEST_CELLS = st.one_of(
    st.sampled_from(
        [
            "",
            "T-1",
            "APAC",
            "EMEA",
            "closed",
            "open",
            "5",
            "-1",
            "1e309",
            "nan",
            "2026-11-20T10:00:00Z",
            "2026-02-30",
            "=HYPERLINK(1)",
            '"quoted, cell"',
            '"unterminated',
            "a\nb",
            "\ufeffbom",
            "x" * 5000,
        ]
    ),
    st.text(max_size=12),
)


_GOOD_CELLS = {
    "ticket_id": ["T-1", "T-2", "T-3", "T-4"],
    "created_date": ["2026-11-20T10:00:00Z", "2026-11-21"],
    "resolved_date": ["", "2026-11-22T09:30:00Z"],
    "first_response_minutes": ["", "35", "0"],
    "resolution_hours": ["", "12.5"],
    "status": ["closed", "solved", "open"],
    "region": ["APAC", "EMEA", "Americas"],
    "csat_score": ["", "1", "5"],
    "nps_score": ["", "9"],
    "requester_email": ["", "jane.doe@example.com"],
    "description": ["", "printer on fire, call +1 555 0100"],
}


@st.composite
def _csv_exports(draw: st.DrawFn) -> bytes:
    """A ticket CSV for the generic mapping: its required columns and some optional
    ones in any order, now and then a repeated or stray column, rows of any width with
    awkward cells; or bytes that are no CSV at all."""
    required = ["ticket_id", "region", "status"]
    optional = draw(st.lists(st.sampled_from(_INGEST_COLUMNS[3:]), unique=True))
    header = draw(st.permutations(required + [c for c in optional if c not in required]))
    if draw(st.booleans()) and draw(st.booleans()):
        header = [*header, draw(st.one_of(st.sampled_from(_INGEST_COLUMNS), st.text(max_size=6)))]
    width = len(header)
    # Mostly good cells (so that rows are accepted too), some awkward ones, and now
    # and then a row that is a cell short or long.
    cell = {c: st.one_of(st.sampled_from(_GOOD_CELLS.get(c, ["x"])), _INGEST_CELLS) for c in header}
    good_row = st.tuples(*(cell[c] for c in header)).map(list)
    odd_row = st.lists(_INGEST_CELLS, min_size=max(0, width - 1), max_size=width + 1)
    rows = draw(st.lists(st.one_of(good_row, good_row, odd_row), max_size=6))
    text = "\n".join(",".join(r) for r in [header, *rows])
    raw = text.encode("utf-8", "surrogatepass")
    export: bytes = draw(
        st.one_of(
            st.just(raw),
            st.just(raw),
            st.just(b"\xef\xbb\xbf" + raw),  # a byte-order mark
            st.just(raw.replace(b"\n", b"\r\n")),
            st.just(raw[: len(raw) // 2]),  # cut off mid-row
            st.binary(max_size=200),  # not UTF-8, NULs, anything
        )
    )
    return export


@PROFILE
@given(_csv_exports())
def test_csv_ticket_ingest_takes_anything(raw: bytes) -> None:
    """Either a result whose counts add up, with every bad row quarantined and named,
    or one BlindsumError for the whole file; never a crash."""
    from party.ingest import ingest_file
    from party.mapping import load_mapping

    mapping = load_mapping("generic")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "export.csv"
        path.write_bytes(raw)
        outcome: list[Any] = []
        _only_blindsum_errors(lambda: outcome.append(ingest_file(path, mapping)))
    if outcome:
        summary = outcome[0].summary
        assert summary.read == summary.accepted + summary.quarantined + summary.outside_window
        assert summary.quarantined == len(outcome[0].quarantine)
        assert sum(summary.by_reason.values()) == summary.quarantined
        assert all(q.line >= 1 and q.reason and q.message for q in outcome[0].quarantine)
