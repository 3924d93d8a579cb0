"""The error table, the server-side translate decorator and client-side translation."""

from __future__ import annotations

import logging
from typing import Any, NoReturn

import grpc
import grpc.aio
import pytest
from cryptography.exceptions import InvalidTag as CryptoInvalidTag

from blindsum import errors as bse
from blindsum.transport.auth import AuthorizationInterceptor
from blindsum.transport.errors import (
    ERROR_FOR,
    STATUS_FOR,
    TRANSIENT,
    error_from_rpc,
    is_transient,
    translate,
)
from blindsum.transport.pki import Role


class FakeContext:
    """Stands in for grpc.aio.ServicerContext: abort records and raises like grpc does."""

    def __init__(self) -> None:
        self.aborted: tuple[grpc.StatusCode, str] | None = None

    async def abort(self, code: grpc.StatusCode, details: str = "") -> NoReturn:
        self.aborted = (code, details)
        raise grpc.aio.AbortError(details)


class Servicer:
    def __init__(self, exc: BaseException | None) -> None:
        self.exc = exc

    @translate
    async def DoThing(self, request: str, context: Any) -> str:
        if self.exc is not None:
            raise self.exc
        return request.upper()


def _rpc_error(code: grpc.StatusCode, details: str, debug: str = "") -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(
        code,
        grpc.aio.Metadata(),
        grpc.aio.Metadata(),
        details=details,
        debug_error_string=debug,
    )


# --------------------------------------------------------------------------- table


def test_every_error_code_has_a_status() -> None:
    assert set(STATUS_FOR) == set(bse.ErrorCode)


@pytest.mark.parametrize("code", list(bse.ErrorCode))
def test_status_names_match_codes(code: bse.ErrorCode) -> None:
    assert STATUS_FOR[code].name == code.name


def test_reverse_table_is_total_and_inverts_forward() -> None:
    assert set(ERROR_FOR) == set(grpc.StatusCode)
    for code, status in STATUS_FOR.items():
        assert ERROR_FOR[status].code is code


@pytest.mark.parametrize(
    ("cls", "status"),
    [
        (bse.InvalidSignature, grpc.StatusCode.INVALID_ARGUMENT),
        (bse.InvalidTag, grpc.StatusCode.INVALID_ARGUMENT),
        (bse.ConfigError, grpc.StatusCode.INVALID_ARGUMENT),
        (bse.UnsafeRequest, grpc.StatusCode.PERMISSION_DENIED),
        (bse.RoundAborted, grpc.StatusCode.ABORTED),
        (bse.NotFound, grpc.StatusCode.NOT_FOUND),
    ],
)
def test_subclasses_map_through_their_code(cls: type[bse.BlindsumError], status: Any) -> None:
    assert STATUS_FOR[cls.code] == status


def test_transient_set() -> None:
    assert frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}) == TRANSIENT
    assert is_transient(grpc.StatusCode.UNAVAILABLE)
    assert is_transient(grpc.StatusCode.DEADLINE_EXCEEDED)
    for code in (
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.INTERNAL,
    ):
        assert not is_transient(code)


# --------------------------------------------------------------------------- translate


async def test_translate_passes_result_through() -> None:
    ctx = FakeContext()
    assert await Servicer(None).DoThing("abc", ctx) == "ABC"
    assert ctx.aborted is None


@pytest.mark.parametrize(
    "cls", [bse.NotFound, bse.RoundAborted, bse.InvalidSignature, bse.UnsafeRequest]
)
async def test_translate_blindsum_error_aborts_with_table_status(
    cls: type[bse.BlindsumError],
) -> None:
    ctx = FakeContext()
    with pytest.raises(grpc.aio.AbortError):
        await Servicer(cls("bad thing", field="round_id")).DoThing("x", ctx)
    assert ctx.aborted == (STATUS_FOR[cls.code], "round_id: bad thing")


async def test_translate_unexpected_error_is_internal_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ctx = FakeContext()
    with caplog.at_level(logging.INFO), pytest.raises(grpc.aio.AbortError):
        await Servicer(ValueError("detail 42")).DoThing("x", ctx)
    assert ctx.aborted == (grpc.StatusCode.INTERNAL, "internal error in DoThing")
    records = [r for r in caplog.records if r.getMessage() == "rpc_internal_error"]
    assert len(records) == 1
    fields = records[0].blindsum_fields  # type: ignore[attr-defined]  # set by blindsum.log
    assert fields["rpc"] == "DoThing"
    assert "ValueError: detail 42" in fields["error"]


async def test_translate_never_logs_crypto_error_args(caplog: pytest.LogCaptureFixture) -> None:
    ctx = FakeContext()
    with caplog.at_level(logging.INFO), pytest.raises(grpc.aio.AbortError):
        await Servicer(CryptoInvalidTag("KEYMATERIAL")).DoThing("x", ctx)
    assert ctx.aborted == (grpc.StatusCode.INTERNAL, "internal error in DoThing")
    assert "KEYMATERIAL" not in caplog.text
    assert all("KEYMATERIAL" not in str(vars(r)) for r in caplog.records)


async def test_translate_lets_abort_through_untouched() -> None:
    ctx = FakeContext()
    with pytest.raises(grpc.aio.AbortError):
        await Servicer(grpc.aio.AbortError("already aborted")).DoThing("x", ctx)
    assert ctx.aborted is None


def test_translate_keeps_name() -> None:
    assert Servicer.DoThing.__name__ == "DoThing"


# --------------------------------------------------------------------------- client side


@pytest.mark.parametrize("code", list(bse.ErrorCode))
def test_error_from_rpc_round_trips_codes(code: bse.ErrorCode) -> None:
    err = error_from_rpc(_rpc_error(STATUS_FOR[code], "round_id: nope"), "RoundService.GetRound")
    assert err.code is code
    assert err.message.startswith("RoundService.GetRound: ")
    assert err.field == "RoundService.GetRound"


def test_error_from_rpc_keeps_details() -> None:
    err = error_from_rpc(_rpc_error(grpc.StatusCode.NOT_FOUND, "round_id: no such round"), "Get")
    assert isinstance(err, bse.NotFound)
    assert err.message == "Get: round_id: no such round"


def test_error_from_rpc_deadline_is_transient_unavailable() -> None:
    err = error_from_rpc(_rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded"), "X")
    assert isinstance(err, bse.Unavailable)
    assert "deadline" in err.message


def test_error_from_rpc_handshake_hint() -> None:
    details = (
        "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:1: "
        "Tls handshake failed (TSI_PROTOCOL_FAILURE): CERTIFICATE_VERIFY_FAILED"
    )
    err = error_from_rpc(_rpc_error(grpc.StatusCode.UNAVAILABLE, details), "Advertise")
    assert isinstance(err, bse.Unavailable)
    assert "TLS handshake may have failed" in err.message
    assert err.message.startswith("Advertise: ")


def test_error_from_rpc_socket_closed_hint() -> None:
    details = "failed to connect to all addresses; last error: UNAVAILABLE: x: Socket closed"
    err = error_from_rpc(_rpc_error(grpc.StatusCode.UNAVAILABLE, details), "Advertise")
    assert "rejected our client certificate" in err.message


def test_error_from_rpc_plain_unavailable_has_no_tls_hint() -> None:
    err = error_from_rpc(
        _rpc_error(grpc.StatusCode.UNAVAILABLE, "failed to connect: Connection refused"), "X"
    )
    assert isinstance(err, bse.Unavailable)
    assert "TLS" not in err.message
    assert "Connection refused" in err.message


def test_error_from_rpc_names_the_server_and_what_to_do_only_when_nothing_answered() -> None:
    refused = _rpc_error(grpc.StatusCode.UNAVAILABLE, "Connection refused")
    kw = {"server": "the aggregator at h:1", "advice": "start it"}
    err = error_from_rpc(refused, "X", **kw)
    assert err.message == "X: cannot reach the aggregator at h:1 (Connection refused); start it"
    # A handshake failure is not "nothing answered": the TLS hint wins.
    tls = _rpc_error(grpc.StatusCode.UNAVAILABLE, "Tls handshake failed")
    assert "TLS handshake may have failed" in error_from_rpc(tls, "X", **kw).message
    # Other statuses ignore the server and the advice.
    denied = _rpc_error(grpc.StatusCode.PERMISSION_DENIED, "no")
    assert error_from_rpc(denied, "X", **kw).message == "X: no"


# --------------------------------------------------------------------------- interceptor config


def test_interceptor_rejects_bad_policy() -> None:
    with pytest.raises(bse.InvalidArgument):
        AuthorizationInterceptor({"/blindsum.rpc.v1.X/Y": frozenset({Role.PARTY})})
    with pytest.raises(bse.InvalidArgument):
        AuthorizationInterceptor({"blindsum.rpc.v1.X": frozenset({"party"})})  # type: ignore[arg-type]  # deliberately wrong type
