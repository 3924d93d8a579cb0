"""The report document: round trip, the documented JSON schema, and a strict decoder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from blindsum import reportdoc
from blindsum.errors import InvalidArgument
from tests.unit.test_report_html import build_sample_report

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "docs" / "report.schema.json"


def _doc() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(reportdoc.encode(build_sample_report()))
    return doc


def test_round_trip_is_lossless_and_canonical() -> None:
    report = build_sample_report()
    data = reportdoc.encode(report)
    assert reportdoc.decode(data) == report
    # Decoding normalises numbers (an int threshold comes back as a float); after that
    # the bytes are stable.
    again = reportdoc.encode(reportdoc.decode(data))
    assert reportdoc.encode(reportdoc.decode(again)) == again


def test_document_follows_the_published_json_schema() -> None:
    schema = json.loads(SCHEMA_PATH.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator(schema).validate(_doc())


def _bad(mutate: Any) -> InvalidArgument:
    doc = _doc()
    mutate(doc)
    with pytest.raises(InvalidArgument) as err:
        reportdoc.decode(json.dumps(doc).encode())
    return err.value


def test_unknown_missing_and_mistyped_keys_are_named() -> None:
    assert "unknown key 'extra'" in str(_bad(lambda d: d.update(extra=1)))
    err = _bad(lambda d: d["dp"].pop("rho"))
    assert err.field == "report.dp" and "rho" in str(err)
    err = _bad(lambda d: d["regions"][0]["cells"][0].update(value="12"))
    assert err.field == "report.regions[0].cells[0].value"
    err = _bad(lambda d: d["dp"].update(rho=-0.5))
    assert err.field == "report.dp.rho"
    err = _bad(lambda d: d.update(format="blindsum.report/v0"))
    assert err.field == "report.format"


def test_a_suppressed_region_may_not_carry_numbers() -> None:
    def leak(d: dict[str, Any]) -> None:
        region = next(r for r in d["regions"] if r["suppressed"])
        region["contributors"] = 2

    assert "suppressed region" in str(_bad(leak))


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"{not json", "not valid JSON"),
        (b'{"rho": NaN}', "not valid JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b'{"a": 1, "a": 2}', "duplicate key"),
        (b"\xff\xfe", "not valid JSON"),
        (b" " * (reportdoc.MAX_REPORT_BYTES + 1), "more than"),
    ],
)
def test_hostile_bytes_give_one_clear_error(data: bytes, why: str) -> None:
    with pytest.raises(InvalidArgument, match=why) as err:
        reportdoc.decode(data, field="stored release")
    assert err.value.field == "stored release"


def test_huge_numbers_and_dates_are_refused() -> None:
    text = reportdoc.encode(build_sample_report()).decode()
    huge = json.loads(text)
    huge["dp"]["rho"] = 10**400
    with pytest.raises(InvalidArgument, match="finite"):
        reportdoc.decode(json.dumps(huge).encode())
    assert _bad(lambda d: d.update(released_unix_ms=10**18)).field == "report.released_unix_ms"
    assert "surrogate" in str(_bad(lambda d: d.update(round_id="\ud800")))
