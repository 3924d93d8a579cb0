"""Typed errors shared by every layer.

Each error carries a stable :class:`ErrorCode`. The transport layer maps codes
to gRPC status codes in one table (``blindsum.transport.errors``); the CLI maps
them to exit codes. Messages are safe to show to a remote caller: they name the
field, row or RPC at fault and never contain key material or raw values.
"""

from __future__ import annotations

import enum


class ErrorCode(enum.Enum):
    INVALID_ARGUMENT = "invalid_argument"
    NOT_FOUND = "not_found"
    ALREADY_EXISTS = "already_exists"
    PERMISSION_DENIED = "permission_denied"
    UNAUTHENTICATED = "unauthenticated"
    FAILED_PRECONDITION = "failed_precondition"
    RESOURCE_EXHAUSTED = "resource_exhausted"
    ABORTED = "aborted"
    UNAVAILABLE = "unavailable"
    INTERNAL = "internal"


class BlindsumError(Exception):
    """Base class. ``field`` names the offending field, row or RPC when known."""

    code: ErrorCode = ErrorCode.INTERNAL

    def __init__(self, message: str, *, field: str | None = None) -> None:
        self.field = field
        super().__init__(f"{field}: {message}" if field else message)

    @property
    def message(self) -> str:
        return str(self)


class InvalidArgument(BlindsumError):
    code = ErrorCode.INVALID_ARGUMENT


class NotFound(BlindsumError):
    code = ErrorCode.NOT_FOUND


class AlreadyExists(BlindsumError):
    code = ErrorCode.ALREADY_EXISTS


class PermissionDenied(BlindsumError):
    code = ErrorCode.PERMISSION_DENIED


class Unauthenticated(BlindsumError):
    code = ErrorCode.UNAUTHENTICATED


class FailedPrecondition(BlindsumError):
    code = ErrorCode.FAILED_PRECONDITION


class ResourceExhausted(BlindsumError):
    code = ErrorCode.RESOURCE_EXHAUSTED


class Aborted(BlindsumError):
    code = ErrorCode.ABORTED


class Unavailable(BlindsumError):
    code = ErrorCode.UNAVAILABLE


class Internal(BlindsumError):
    code = ErrorCode.INTERNAL


class InvalidSignature(InvalidArgument):
    """An Ed25519 signature did not verify. Raised, never returned as a bool."""


class InvalidTag(InvalidArgument):
    """An AES-GCM envelope failed authentication (wrong key, AAD or tampering)."""


class ConfigError(InvalidArgument):
    """A configuration file is missing, malformed, or has unknown keys."""


class UnsafeRequest(PermissionDenied):
    """A party refused a request that would break its privacy (docs/THREAT_MODEL.md)."""


class RoundAborted(Aborted):
    """The round cannot finish, for example because fewer than t parties remain."""
