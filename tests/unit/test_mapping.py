"""Mapping files: the shipped presets, strict parsing, and the errors they give."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from blindsum.errors import ConfigError
from party.mapping import (
    OPERATORS,
    PRESETS,
    REQUIRED_FIELDS,
    ColumnSpec,
    Mapping,
    load_mapping,
    mapping_from_toml,
    resolve_timezone,
    to_hours,
)
from party.tickets import CANONICAL_FIELDS, DURATION_FIELDS, Status

DATASET = Path(__file__).resolve().parents[2].parent / "shared" / "datasets"
DATASET_CSV = DATASET / "support_tickets_4teams.csv"

MINIMAL = """
[mapping]
name = "t"

[columns]
ticket_id = "id"
region = "region"
status = "status"
"""


def _parse(extra: str, base: str = MINIMAL) -> Mapping:
    return mapping_from_toml(base + extra, origin="test.toml")


def _error(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        mapping_from_toml(text, origin="test.toml")
    return str(info.value)


# ---------------------------------------------------------------- presets


@pytest.mark.parametrize("name", PRESETS)
def test_presets_load_and_are_complete(name: str) -> None:
    m = load_mapping(name)
    assert m.name == name
    assert m.version == 1
    assert m.origin.startswith(name)
    for required in REQUIRED_FIELDS:
        assert required in m.columns
    assert set(m.columns) <= set(CANONICAL_FIELDS)
    assert set(m.operators.values()) <= OPERATORS
    assert set(m.operators) <= set(CANONICAL_FIELDS) | set(m.extras)
    for f in DURATION_FIELDS:
        if f in m.columns:
            assert m.columns[f].unit in ("hours", "minutes", "seconds", "days")
    # Identity fields that a preset maps are never kept in clear in the export.
    for f in ("requester_name", "requester_email", "requester_phone", "requester_username"):
        if f in m.columns:
            assert m.operators.get(f, "redact") in ("pseudonym", "redact", "token", "drop")
    assert m.status_vocab["escalated"] is Status.ESCALATED


def test_load_mapping_by_path_matches_preset(tmp_path: Path) -> None:
    import importlib.resources

    text = (
        importlib.resources.files("party").joinpath("mappings", "generic.toml").read_text("utf-8")
    )
    path = tmp_path / "mine.toml"
    path.write_text(text, encoding="utf-8")
    from_path = load_mapping(path)
    from_str = load_mapping(str(path))
    preset = load_mapping("generic")
    assert from_path.columns == preset.columns == from_str.columns
    assert from_path.status_vocab == preset.status_vocab
    assert from_path.origin == str(path)


def test_generic_preset_matches_the_dataset_header() -> None:
    m = load_mapping("generic")
    expected = {
        "ticket_id": "ticket_id",
        "created": "created_date",
        "channel": "channel",
        "category": "category",
        "priority": "priority",
        "first_response_hours": "first_response_minutes",
        "resolution_hours": "resolution_hours",
        "status": "status",
        "resolved_at": "resolved_date",
        "csat": "csat_score",
        "region": "region",
        "country": "country",
    }
    for name, column in expected.items():
        assert m.columns[name].column == column
    assert m.columns["first_response_hours"] == ColumnSpec("first_response_minutes", "minutes")
    assert m.columns["resolution_hours"] == ColumnSpec("resolution_hours", "hours")
    assert m.extras == {"team": "team"}
    for word, status in (
        ("resolved", Status.RESOLVED),
        ("in progress", Status.OPEN),
        ("escalated", Status.ESCALATED),
    ):
        assert m.status_vocab[word] is status
    if not DATASET_CSV.is_file():
        pytest.skip(f"dataset absent: {DATASET_CSV.name} (only in the shared workspace)")
    with DATASET_CSV.open(encoding="utf-8", newline="") as fh:
        header = next(csv.reader(fh))
    for column in [*expected.values(), "team"]:
        assert column in header


def test_zendesk_like_preset() -> None:
    m = load_mapping("zendesk")
    assert m.columns["ticket_id"].column == "Id"
    assert m.columns["requester_email"].column == "Requester email"
    assert m.columns["resolved_at"].column == "Solved at"
    assert m.columns["csat"].column == "Satisfaction Score"
    assert m.csat_labels == {"good": 5, "bad": 1}
    assert "offered" in m.empty_values
    assert m.dayfirst is True
    assert m.status_vocab["solved"] is Status.RESOLVED
    assert m.status_vocab["on-hold"] is Status.OPEN


def test_freshdesk_like_preset() -> None:
    m = load_mapping("freshdesk")
    assert m.columns["ticket_id"].column == "Ticket ID"
    assert m.columns["requester_phone"].column == "Phone"
    assert m.columns["first_response_hours"] == ColumnSpec("First response time (in hrs)", "hours")
    assert m.columns["channel"].column == "Source"
    assert m.status_vocab["closed"] is Status.RESOLVED
    assert m.status_vocab["waiting on customer"] is Status.OPEN


def test_unknown_preset_name_lists_presets() -> None:
    with pytest.raises(ConfigError) as info:
        load_mapping("zendesc")
    assert "generic" in str(info.value)
    assert "zendesc" in str(info.value)


def test_missing_and_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_mapping(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="directory"):
        load_mapping(tmp_path)
    bad = tmp_path / "latin.toml"
    bad.write_bytes(b"[mapping]\nname = '\xe9'\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_mapping(bad)
    huge = tmp_path / "huge.toml"
    huge.write_bytes(b"#" * (1024 * 1024 + 10))
    with pytest.raises(ConfigError, match="larger than"):
        load_mapping(huge)


def test_invalid_toml_names_file() -> None:
    message = _error("[mapping\nname=1")
    assert message.startswith("test.toml:")
    assert "invalid TOML" in message


# ---------------------------------------------------------------- minimal file and defaults


def test_minimal_mapping_defaults() -> None:
    m = _parse("")
    assert m.format == "auto"
    assert m.delimiter == ","
    assert m.encoding == "utf-8"
    assert m.date_formats == ("iso",)
    assert m.dayfirst is False
    assert m.timezone == "UTC"
    assert m.csat_scale == (1, 5)
    assert m.nps_scale == (0, 10)
    assert m.extras == {}
    assert m.operators == {}
    # Without a [status] table the canonical names are understood.
    assert m.status_vocab == {s.value: s for s in Status}


def test_status_vocab_is_case_insensitive_and_keeps_canonical_names() -> None:
    m = _parse('[status]\nresolved = ["  Solved ", "CLOSED"]\nopen = ["Pending"]\n')
    assert m.status_vocab["solved"] is Status.RESOLVED
    assert m.status_vocab["closed"] is Status.RESOLVED
    assert m.status_vocab["pending"] is Status.OPEN
    assert m.status_vocab["escalated"] is Status.ESCALATED


def test_durations_default_to_hours_and_accept_units() -> None:
    m = _parse(
        '\n[columns.first_response_hours]\ncolumn = "frt"\nunit = "seconds"\n',
        base=MINIMAL + 'resolution_hours = "rh"\n',
    )
    assert m.columns["resolution_hours"] == ColumnSpec("rh", "hours")
    assert m.columns["first_response_hours"] == ColumnSpec("frt", "seconds")
    assert m.columns["region"] == ColumnSpec("region", None)


def test_to_hours() -> None:
    assert to_hours(90.0, "minutes") == 1.5
    assert to_hours(261.3160766843023, "minutes") == 261.3160766843023 / 60
    assert to_hours(5400.0, "seconds") == 1.5
    assert to_hours(2.0, "days") == 48.0
    assert to_hours(3.25, "hours") == 3.25
    with pytest.raises(ConfigError):
        to_hours(1.0, "weeks")


def test_resolve_timezone() -> None:
    assert resolve_timezone("UTC").utcoffset(None) is not None
    assert str(resolve_timezone("Europe/Berlin")) == "Europe/Berlin"
    with pytest.raises(ConfigError):
        resolve_timezone("Mars/Olympus")


def test_labels_and_empty_values() -> None:
    m = _parse('[values]\nempty = ["N/A", " - "]\ncsat = { Good = 5, "Not Good" = 1 }\n')
    assert m.empty_values == frozenset({"n/a", "-"})
    assert m.csat_labels == {"good": 5, "not good": 1}


def test_extras_and_operators() -> None:
    m = _parse(
        '[extras]\ncustomer_age = "Age"\nbirth = "Birth date"\n'
        '[anonymize]\ncustomer_age = "age_band"\nbirth = "year"\n'
        'created = "generalize:week"\nrequester_email = "pseudonym"\n'
    )
    assert m.extras == {"customer_age": "Age", "birth": "Birth date"}
    assert m.operators == {
        "customer_age": "age_band",
        "birth": "year",
        "created": "generalize:week",
        "requester_email": "pseudonym",
    }


# ---------------------------------------------------------------- strictness


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[columnz]\nx = 1\n", "unknown key columnz"),
        ('[source]\nformat = "csv"\nquote = "x"\n', "unknown key source.quote"),
        ('[dates]\nformat = ["iso"]\n', "unknown key dates.format"),
        ('[status]\nclosed = ["Closed"]\n', "unknown key status.closed"),
        ("[scales]\nces = [1, 7]\n", "unknown key scales.ces"),
        ("[values]\nblank = []\n", "unknown key values.blank"),
        ('[mapping.extra]\nx = "y"\n', "unknown key mapping.extra"),
    ],
)
def test_unknown_keys_are_rejected_with_dotted_key(text: str, expected: str) -> None:
    message = _error(MINIMAL + text)
    assert message.startswith("test.toml: ")
    assert expected in message


def test_unknown_canonical_column_is_rejected() -> None:
    message = _error(MINIMAL + 'requester_mail = "email"\n')
    assert message.startswith("test.toml: ")
    assert "columns.requester_mail" in message
    assert "not a canonical" in message


def test_unknown_key_in_inline_column_table() -> None:
    message = _error(MINIMAL + 'resolution_hours = { column = "rh", units = "hours" }\n')
    assert "columns.resolution_hours.units" in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('resolution_hours = { column = "rh", unit = "weeks" }\n', "unit must be one of"),
        ('region_x = { column = "r" }\n', "columns.region_x"),
        ('country = { column = "c", unit = "hours" }\n', "only allowed for duration"),
        ('country = ""\n', "non-empty"),
        ("country = 3\n", "must be a column name"),
    ],
)
def test_bad_column_entries(text: str, expected: str) -> None:
    assert expected in _error(MINIMAL + text)


@pytest.mark.parametrize("missing", REQUIRED_FIELDS)
def test_required_columns(missing: str) -> None:
    lines = [ln for ln in MINIMAL.splitlines() if not ln.startswith(f"{missing} =")]
    message = _error("\n".join(lines))
    assert f"columns.{missing}" in message
    assert "required" in message


def test_missing_mapping_tables() -> None:
    assert "missing [mapping]" in _error('[columns]\nticket_id = "id"\n')
    assert "missing [columns]" in _error('[mapping]\nname = "x"\n')
    assert "mapping.name" in _error('[mapping]\nversion = 1\n[columns]\nticket_id = "i"\n')
    assert "mapping.version" in _error(MINIMAL.replace('name = "t"', 'name = "t"\nversion = 0'))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[source]\nformat = "xlsx"\n', "source.format"),
        ('[source]\ndelimiter = ";;"\n', "source.delimiter"),
        ('[source]\ndelimiter = "\\""\n', "source.delimiter"),
        ('[source]\nencoding = "utf-16"\n', "not ASCII-compatible"),
        ('[source]\nencoding = "klingon"\n', "unknown encoding"),
        ('[dates]\nformats = ["dd/mm/yyyy"]\n', "dates.formats[0]"),
        ("[dates]\nformats = []\n", "must not be empty"),
        ('[dates]\nformats = ["iso", "%Y-%Q"]\n', "dates.formats[1]"),
        ('[dates]\ndayfirst = "yes"\n', "dates.dayfirst"),
        ('[dates]\ntimezone = "Mars/Olympus"\n', "unknown time zone"),
        ('[status]\nopen = ["Closed"]\nresolved = ["closed"]\n', "listed under both"),
        ('[status]\nopen = "Open"\n', "status.open must be an array"),
        ("[scales]\ncsat = [5, 1]\n", "scales.csat"),
        ("[scales]\nnps = [0, 10, 20]\n", "scales.nps"),
        ("[scales]\ncsat = [1.0, 5]\n", "scales.csat"),
        ("[values]\ncsat = { good = 9 }\n", "outside the scale"),
        ('[values]\ncsat = { good = "5" }\n', "integer score"),
        ("[values]\nempty = [1]\n", "values.empty"),
        ('[extras]\nregion = "R"\n', "collides"),
        ('[extras]\n"bad name" = "R"\n', "letters, digits"),
        ('[extras]\nage = ""\n', "extras.age"),
    ],
)
def test_invalid_values(text: str, expected: str) -> None:
    message = _error(MINIMAL + text)
    assert message.startswith("test.toml: ")
    assert expected in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[anonymize]\nrequester_email = "hash"\n', "anonymize.requester_email must be one of"),
        ('[anonymize]\ncustomer_age = "age_band"\n', "unknown key anonymize.customer_age"),
        ('[anonymize]\nregion = "generalize:week"\n', "only to timestamps"),
        ('[anonymize]\nrequester_name = "age_band"\n', "only to [extras]"),
        ('[anonymize]\nsubject = "year"\n', "only to timestamps"),
    ],
)
def test_invalid_operators(text: str, expected: str) -> None:
    assert expected in _error(MINIMAL + text)


def test_every_operator_is_accepted_somewhere() -> None:
    lines = "\n".join(f'e{i} = "{op}"' for i, op in enumerate(sorted(OPERATORS)))
    extras = "\n".join(f'e{i} = "col{i}"' for i in range(len(OPERATORS)))
    m = _parse(f"[extras]\n{extras}\n[anonymize]\n{lines}\n")
    assert set(m.operators.values()) == OPERATORS


# ---------------------------------------------------------------- optional columns


def test_optional_columns_are_parsed() -> None:
    m = _parse('csat = "Score"\nnps = "NPS"\noptional = ["nps", "team"]\n[extras]\nteam = "Team"\n')
    assert m.optional == frozenset({"nps", "team"})
    assert "optional" not in m.columns
    flags = {c: (i.key, i.optional, i.required) for c, i in m.mapped_columns().items()}
    assert flags == {
        "id": ("columns.ticket_id", False, True),
        "region": ("columns.region", False, True),
        "status": ("columns.status", False, True),
        "Score": ("columns.csat", False, False),
        "NPS": ("columns.nps", True, False),
        "Team": ("extras.team", True, False),
    }
    assert _parse("").optional == frozenset()


def test_a_column_named_twice_is_optional_only_if_both_keys_are() -> None:
    m = _parse('country = "region"\nchannel = "via"\ncategory = "via"\noptional = ["channel"]\n')
    info = m.mapped_columns()
    assert (info["region"].key, info["region"].required) == ("columns.region", True)
    assert (info["via"].key, info["via"].optional) == ("columns.channel", False)
    both = _parse('channel = "via"\ncategory = "via"\noptional = ["channel", "category"]\n')
    assert both.mapped_columns()["via"].optional


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('optional = "csat"\n', "columns.optional must be an array of strings"),
        ("optional = [1]\n", "columns.optional must be an array of strings"),
        ('optional = ["status"]\n', "columns.optional[0]: status is a required field"),
        ('csat = "c"\noptional = ["csat", "nps"]\n', "columns.optional[1]: 'nps' is not a field"),
        ('csat = "c"\noptional = ["csat", "csat"]\n', "columns.optional[1]: csat is listed twice"),
        ('optional = ["satisfaction"]\n', "columns.optional[0]: 'satisfaction' is not a field"),
    ],
)
def test_invalid_optional_lists(text: str, expected: str) -> None:
    message = _error(MINIMAL + text)
    assert message.startswith("test.toml: ")
    assert expected in message


@pytest.mark.parametrize("name", PRESETS)
def test_presets_require_only_the_required_fields(name: str) -> None:
    m = load_mapping(name)
    assert m.optional <= set(m.columns) | set(m.extras)
    assert not m.optional & set(REQUIRED_FIELDS)
    assert {c.name for c in m.mapped_columns().values() if not c.optional} == set(REQUIRED_FIELDS)


def test_generic_preset_marks_what_the_dataset_lacks_optional() -> None:
    m = load_mapping("generic")
    lacking = {
        "nps",
        "requester_name",
        "requester_email",
        "requester_phone",
        "requester_username",
        "order_id",
        "address",
        "subject",
        "description",
        "first_response_at",
        "escalated_at",
    }
    assert lacking <= m.optional
    if not DATASET_CSV.is_file():
        pytest.skip(f"dataset absent: {DATASET_CSV.name} (only in the shared workspace)")
    with DATASET_CSV.open(encoding="utf-8", newline="") as fh:
        header = set(next(csv.reader(fh)))
    for column, info in m.mapped_columns().items():
        assert column in header or info.optional, column
