"""The DNS wire codec of the embedded resolver: the part of RFC 1035 a stub resolver needs.

Vocabulary:

- *message*: a header (id, flags, counts), at most one *question* (labels as sent, case kept;
  type; class) and *records* (answers; authority and additional sections are skipped). A
  *name* is lower-case and dotted, without the trailing dot; *labels* are its raw parts.
- *flags*: QR (a response), OPCODE (0 = standard query), AA (authoritative: answered by the
  daemon), TC (truncated: ask again over TCP), RD/RA (recursion desired/available); the low
  four bits are the *rcode* (NOERROR, SERVFAIL, NOTIMP…).
- *reverse name*: the PTR name of an IPv4 address, ``2.0.18.172.in-addr.arpa``.

``decode`` raises ``Malformed`` for any packet it cannot read completely (bounds, label
lengths, compression pointers that do not point strictly backwards); ``encode_*`` build
messages, compressing only a record named as the question (a pointer to offset 12).
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

TTL: Final = 600
TYPE_A: Final = 1
TYPE_PTR: Final = 12
TYPE_AAAA: Final = 28
CLASS_IN: Final = 1
NOERROR, SERVFAIL, NOTIMP = 0, 2, 4

FLAG_QR, FLAG_OPCODE, FLAG_AA, FLAG_TC, FLAG_RD, FLAG_RA = (
    0x8000, 0x7800, 0x0400, 0x0200, 0x0100, 0x0080,
)  # fmt: skip
HEADER: Final = struct.Struct("!HHHHHH")
_RR: Final = struct.Struct("!HHIH")
_REVERSE: Final = ".in-addr.arpa"


class Malformed(ValueError):
    """A packet that is not a complete, well-formed DNS message."""


@dataclass(frozen=True, slots=True)
class Question:
    """One question: its labels as sent (case kept), type and class."""

    labels: tuple[bytes, ...]
    qtype: int
    qclass: int = CLASS_IN

    @property
    def name(self) -> str:
        """The name to look up: lower-case, dotted, without the trailing dot."""
        return b".".join(self.labels).decode("latin-1").lower()


@dataclass(frozen=True, slots=True)
class Record:
    """One answer record; *data* is the RDATA on the wire."""

    name: str
    rtype: int
    data: bytes
    ttl: int = TTL


@dataclass(frozen=True, slots=True)
class Message:
    """A decoded message: header, its question (if any) and answers (authority etc. skipped)."""

    id: int
    flags: int
    question: Question | None
    answers: tuple[Record, ...] = ()

    @property
    def rcode(self) -> int:
        """The response code (NOERROR, SERVFAIL, NXDOMAIN=3…)."""
        return self.flags & 0xF


def _read_name(data: bytes, off: int) -> tuple[tuple[bytes, ...], int]:
    """Read a name at *off*; return its labels and the offset just past it."""
    labels: list[bytes] = []
    size, end, floor = 1, -1, off  # pointers must go strictly below every earlier jump: no loops
    while True:
        if off >= len(data):
            raise Malformed("name runs past the end of the packet")
        n = data[off]
        if n & 0xC0 == 0xC0:
            if off + 1 >= len(data):
                raise Malformed("truncated compression pointer")
            target = (n & 0x3F) << 8 | data[off + 1]
            if target >= floor:
                raise Malformed("compression pointer does not point backwards")
            end = off + 2 if end < 0 else end
            off = floor = target
            continue
        if n & 0xC0:
            raise Malformed(f"reserved label type {n >> 6}")
        if n == 0:
            return tuple(labels), off + 1 if end < 0 else end
        size += n + 1
        if size > 255 or off + 1 + n > len(data):
            raise Malformed("label runs past the end of the name or packet")
        labels.append(data[off + 1 : off + 1 + n])
        off += 1 + n


def decode(data: bytes) -> Message:
    """Decode a message (header, at most one question, answers); raise Malformed."""
    if len(data) < HEADER.size:
        raise Malformed("shorter than a header")
    qid, flags, qdcount, ancount, _, _ = HEADER.unpack_from(data)
    if qdcount > 1:
        raise Malformed("more than one question")
    off, question = HEADER.size, None
    if qdcount:
        labels, off = _read_name(data, off)
        if off + 4 > len(data):
            raise Malformed("truncated question")
        question = Question(labels, *struct.unpack_from("!HH", data, off))
        off += 4
    answers = []
    for _ in range(ancount):
        labels, off = _read_name(data, off)
        if off + _RR.size > len(data):
            raise Malformed("truncated record")
        rtype, _, ttl, length = _RR.unpack_from(data, off)
        off += _RR.size + length
        if off > len(data):
            raise Malformed("record data runs past the end of the packet")
        name = b".".join(labels).decode("latin-1").lower()
        answers.append(Record(name, rtype, data[off - length : off], ttl))
    return Message(qid, flags, question, tuple(answers))


def encode_name(name: str) -> bytes:
    """The wire form of a dotted name (a trailing dot is allowed); ValueError if invalid."""
    out = bytearray()
    for label in name.rstrip(".").split(".") if name.strip(".") else []:
        raw = label.encode("ascii")
        if not 0 < len(raw) < 64:
            raise ValueError(f"invalid label {label!r} in DNS name {name!r}")
        out += bytes([len(raw)]) + raw
    if len(out) > 254:
        raise ValueError(f"DNS name {name!r} is longer than 255 bytes")
    return bytes(out) + b"\0"


def encode_query(qid: int, name: str, qtype: int = TYPE_A) -> bytes:
    """A recursive query for *name* (as a stub resolver sends it)."""
    return HEADER.pack(qid, FLAG_RD, 1, 0, 0, 0) + encode_name(name) + struct.pack("!HH", qtype, 1)


def encode_response(query: Message, rcode: int, answers: Sequence[Record] = ()) -> bytes:
    """A reply to *query*: its id, opcode, RD and question; AA when answered here (NOERROR)."""
    flags = FLAG_QR | FLAG_RA | (query.flags & (FLAG_OPCODE | FLAG_RD)) | rcode
    flags |= FLAG_AA if rcode == NOERROR else 0
    q = query.question
    out = bytearray(HEADER.pack(query.id, flags, 1 if q else 0, len(answers), 0, 0))
    if q:
        out += b"".join(bytes([len(x)]) + x for x in q.labels) + b"\0"
        out += struct.pack("!HH", q.qtype, q.qclass)
    for rr in answers:  # a record named as the question points at it (offset 12)
        out += b"\xc0\x0c" if q and rr.name == q.name else encode_name(rr.name)
        out += _RR.pack(rr.rtype, CLASS_IN, rr.ttl, len(rr.data)) + rr.data
    return bytes(out)


def reverse_name(address: str) -> str:
    """The PTR name of an IPv4 address: 172.18.0.2 → 2.0.18.172.in-addr.arpa."""
    return ".".join(reversed(address.split("."))) + _REVERSE


def address_of(name: str) -> str | None:
    """The IPv4 address a PTR name asks about, or None."""
    if not name.endswith(_REVERSE):
        return None
    try:
        return str(ipaddress.IPv4Address(".".join(reversed(name[: -len(_REVERSE)].split(".")))))
    except ValueError:
        return None
