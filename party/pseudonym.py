"""The party's keyed values: its local HMAC secret and the pseudonyms it issues.

:class:`PartySecret` is the party-local 32-byte key (a 0600 file that never leaves
the node). :class:`Pseudonymizer` derives customer tokens, pseudonyms and tokens
from it as HMAC-SHA256 over a domain-separated encoding of the normalized value.

This module needs nothing heavy: the round path (metrics, with the per-customer
cap) uses it without loading Presidio or spaCy, which only ``party.anonymize``
imports.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import stat
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from blindsum.crypto.encoding import format_dst
from blindsum.errors import ConfigError, Internal, InvalidArgument
from party.tickets import Ticket

SECRET_BYTES = 32


PseudonymKind = Literal["name", "email", "username"]
#: Base32 characters in a pseudonym (5 bits each: 12 -> 60 bits of the HMAC).
_PSEUDONYM_CHARS = 12
#: Hex characters in a token (4 bits each: 16 -> 64 bits of the HMAC).
_TOKEN_HEX = 16
#: Hex characters in a customer token (128 bits).
_CUSTOMER_HEX = 32


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
        _make_private_dirs(path.parent)
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


def _make_private_dirs(directory: Path) -> None:
    """Create every missing level of ``directory`` with mode 0700, whatever the umask.

    Existing levels are left alone; a level created concurrently by someone else is
    not chmodded.
    """
    missing: list[Path] = []
    while not directory.exists() and directory != directory.parent:
        missing.append(directory)
        directory = directory.parent
    for level in reversed(missing):
        try:
            os.mkdir(level, 0o700)
        except FileExistsError:
            continue
        os.chmod(level, 0o700)


def _norm_email(value: str) -> str:
    return value.strip().lower()


def _norm_username(value: str) -> str:
    return value.strip().casefold()


def _norm_phone(value: str) -> str:
    return "".join(ch for ch in value if ch.isdigit())


def _norm_name(value: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", value).casefold().split())


_NORMALIZERS = {"email": _norm_email, "username": _norm_username, "name": _norm_name}


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
