"""Unambiguous byte encodings for transcripts and domain-separation strings.

Every KDF, PRG, signature and AAD input in blindsum is built with
:func:`format_dst` or :func:`encode_parts`, so two different tuples of fields can
never encode to the same bytes.
"""

from __future__ import annotations

import struct

VERSION = b"blindsum/v1/"

Part = bytes | str | int


def _part_bytes(part: Part) -> bytes:
    if isinstance(part, bytes):
        return b"b" + part
    if isinstance(part, str):
        return b"s" + part.encode("utf-8")
    if isinstance(part, bool):  # bool is an int subclass; refuse the ambiguity
        raise TypeError("booleans are not transcript parts")
    if part < 0:
        raise ValueError("transcript integers must be non-negative")
    return b"i" + part.to_bytes((part.bit_length() + 7) // 8 or 1, "big")


def encode_parts(*parts: Part) -> bytes:
    """Length-prefix each typed part: ``u32 len || tag || bytes`` for each."""
    out = bytearray()
    for part in parts:
        data = _part_bytes(part)
        out += struct.pack(">I", len(data))
        out += data
    return bytes(out)


def format_dst(label: str, *parts: Part) -> bytes:
    """Domain-separation string: ``b"blindsum/v1/" + label`` then the encoded parts."""
    return VERSION + label.encode("ascii") + b"\x00" + encode_parts(*parts)
