"""
A compact, typed AMP argument for lists of flat records.

``AmpList`` encodes every field of every record as a key/value pair and
parses it back field by field; for a batch of a thousand small jobs that is
most of the master's CPU time.  :class:`Records` packs each record as one
fixed ``struct`` (its integers, floats and the lengths of its bytes and
text fields) followed by those bytes, so a record costs one pack and one
unpack.  The schema is declared in the command, like any AMP argument.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from operator import itemgetter
from typing import Any

from twisted.protocols.amp import Argument

from cwtx._errors import ProtocolError

_KINDS = {"int": "q", "float": "d", "bytes": "I", "text": "I"}


class RecordError(ProtocolError):
    """A Records value that does not match its schema."""


def _getter(names: list[str]) -> Callable[[dict[str, Any]], tuple[Any, ...]]:
    """A record's values of these fields, as a tuple, in one call."""
    if len(names) > 1:
        return itemgetter(*names)
    if names:
        name = names[0]
        return lambda record: (record[name],)
    return lambda record: ()


class Records(Argument):
    """A list of dicts with the fields ``schema`` names, in that order.

    ``schema`` is a list of (name, kind) with kind one of int (signed 64-bit),
    float (IEEE double), bytes, or text (UTF-8).
    """

    def __init__(self, schema: list[tuple[str, str]], optional: bool = False) -> None:
        super().__init__(optional)
        for name, kind in schema:
            if kind not in _KINDS:
                raise ValueError(f"field {name!r} has unknown kind {kind!r}")
        self._fixed = [(n, k) for n, k in schema if k in ("int", "float")]
        self._variable = [(n, k) for n, k in schema if k in ("bytes", "text")]
        self._struct = struct.Struct(
            "!" + "".join(_KINDS[k] for _, k in self._fixed + self._variable)
        )
        self._fixed_names = [n for n, _ in self._fixed]
        self._get_fixed = _getter(self._fixed_names)
        self._get_variable = _getter([n for n, _ in self._variable])
        #: Which of the variable fields are text (encoded on the way out).
        self._texts = [i for i, (_, k) in enumerate(self._variable) if k == "text"]

    def record_size(self, record: dict[str, Any]) -> int:
        """Bytes this record takes on the wire (an upper bound for text)."""
        size = self._struct.size
        for name, kind in self._variable:
            value = record[name]
            size += len(value) * (4 if kind == "text" else 1)
        return size

    def toString(self, inObject: list[dict[str, Any]]) -> bytes:
        out: list[bytes] = []
        pack = self._struct.pack
        get_fixed, get_variable, texts = self._get_fixed, self._get_variable, self._texts
        for record in inObject:
            variable: Any = get_variable(record)
            if texts:
                variable = list(variable)
                for i in texts:
                    variable[i] = variable[i].encode("utf-8")
            out.append(pack(*get_fixed(record), *map(len, variable)))
            out.extend(variable)
        return b"".join(out)

    def fromString(self, inString: bytes) -> list[dict[str, Any]]:
        records = []
        view = memoryview(inString)
        offset, end = 0, len(inString)
        unpack = self._struct.unpack_from
        head = self._struct.size
        names = self._fixed_names
        nfixed = len(names)
        while offset < end:
            if end - offset < head:
                raise RecordError(f"truncated record at byte {offset}")
            values = unpack(view, offset)
            offset += head
            record = dict(zip(names, values[:nfixed], strict=True))
            for (name, kind), length in zip(self._variable, values[nfixed:], strict=True):
                if offset + length > end:
                    raise RecordError(f"field {name!r} runs past the end of the value")
                raw = bytes(view[offset : offset + length])
                offset += length
                if kind == "text":
                    try:
                        record[name] = raw.decode("utf-8")
                    except UnicodeDecodeError as e:
                        raise RecordError(f"field {name!r} is not UTF-8: {e}") from e
                else:
                    record[name] = raw
            records.append(record)
        return records


#: Values one Chunks argument may span; the receiver refuses more.
MAX_CHUNK_VALUES = 64


class Chunks(Argument):
    """A list of byte strings (each at most one AMP value) in one box.

    On the wire: ``name`` holds the count, ``name.0``, ``name.1``, … the
    pieces.  One command then carries up to MAX_CHUNK_VALUES × 65,000 bytes,
    so a big payload costs a few dozen commands per MiB less; and the pieces
    are never joined.
    """

    def toBox(self, name: bytes, strings: Any, objects: dict[str, Any], proto: Any) -> None:
        pieces = objects.pop(name.decode("ascii"))
        if len(pieces) > MAX_CHUNK_VALUES:
            raise RecordError(f"{len(pieces)} pieces is more than {MAX_CHUNK_VALUES}")
        strings[name] = str(len(pieces)).encode("ascii")
        for i, piece in enumerate(pieces):
            strings[b"%s.%d" % (name, i)] = piece

    def fromBox(self, name: bytes, strings: Any, objects: dict[str, Any], proto: Any) -> None:
        count = strings.pop(name)
        if not count.isdigit() or int(count) > MAX_CHUNK_VALUES:
            raise RecordError(f"bad piece count {count[:20]!r}")
        try:
            pieces = [strings.pop(b"%s.%d" % (name, i)) for i in range(int(count))]
        except KeyError as e:
            raise RecordError(f"piece {e} is missing") from None
        objects[name.decode("ascii")] = pieces
