"""``entitle usage salvage``: what a damaged SQLite ledger still holds, read page by page.

A truncated file usually loses the b-tree's interior pages (a table that grows moves its upper
levels to new pages at the end of the file), so SQLite itself can then read nothing at all,
though most leaf pages -- the records -- are still there. This reads the file as the SQLite
file format describes it (sqlite.org/fileformat2.html): every table-leaf page, every cell, every
record with the ``records`` table's seven columns and a CloudEvent for a body; overflow chains
followed while they stay inside the file. The rowid is the record's ``seq``; the sequence has
no gaps (AUTOINCREMENT, append-only), so what is missing between 1 and the last issued number
is exactly what was lost.
"""

from __future__ import annotations

import json
from pathlib import Path

TABLE_LEAF = 0x0D


def _varint(data: bytes, at: int) -> tuple[int, int]:
    value = 0
    for i in range(9):
        if at + i >= len(data):
            raise ValueError("varint past the end")
        byte = data[at + i]
        if i == 8:
            return (value << 8) | byte, at + 9
        value = (value << 7) | (byte & 0x7F)
        if byte < 0x80:
            return value, at + i + 1
    raise ValueError("bad varint")


def _values(record: bytes) -> list:
    header_size, at = _varint(record, 0)
    types, body = [], header_size
    while at < header_size:
        serial, at = _varint(record, at)
        types.append(serial)
    out = []
    for serial in types:
        if serial == 0:
            out.append(None)
        elif serial in (1, 2, 3, 4, 5, 6):
            size = {1: 1, 2: 2, 3: 3, 4: 4, 5: 6, 6: 8}[serial]
            out.append(int.from_bytes(record[body:body + size], "big", signed=True))
            body += size
        elif serial == 7:
            body += 8
            out.append(None)
        elif serial in (8, 9):
            out.append(serial - 8)
        elif serial >= 12:
            size = (serial - 12) // 2
            chunk = record[body:body + size]
            out.append(chunk.decode("utf-8", "replace") if serial % 2 else chunk)
            body += size
        else:
            raise ValueError("reserved serial type")
    return out


class _File:
    def __init__(self, data: bytes) -> None:
        self.data = data
        size = int.from_bytes(data[16:18], "big")
        self.page_size = 65536 if size == 1 else size
        self.usable = self.page_size - data[20]
        self.pages = len(data) // self.page_size

    def page(self, number: int) -> bytes | None:
        if not 1 <= number <= self.pages:
            return None
        return self.data[(number - 1) * self.page_size:number * self.page_size]

    def payload(self, page: bytes, at: int, size: int) -> bytes | None:
        """A cell's payload starting at ``at``: local part, then the overflow chain."""
        u = self.usable
        x = u - 35
        if size <= x:
            return page[at:at + size]
        m = ((u - 12) * 32 // 255) - 23
        k = m + ((size - m) % (u - 4))
        local = k if k <= x else m
        out = bytearray(page[at:at + local])
        next_page = int.from_bytes(page[at + local:at + local + 4], "big")
        seen = set()
        while len(out) < size:
            overflow = self.page(next_page)
            if overflow is None or next_page in seen:
                return None          # the chain runs out of the file: this record is lost
            seen.add(next_page)
            next_page = int.from_bytes(overflow[:4], "big")
            out += overflow[4:u][:size - len(out)]
        return bytes(out)


def readable_records(path: str | Path) -> tuple[dict[int, dict], int | None]:
    """{seq: record} of every ``records`` row found on a leaf page, and the last sequence number
    issued (from ``sqlite_sequence``), when that row survives."""
    file = _File(Path(path).read_bytes())
    found: dict[int, dict] = {}
    issued: int | None = None
    for number in range(1, file.pages + 1):
        page = file.page(number)
        start = 100 if number == 1 else 0
        if page is None or page[start] != TABLE_LEAF:
            continue
        cells = int.from_bytes(page[start + 3:start + 5], "big")
        for index in range(cells):
            pointer = start + 8 + 2 * index
            offset = int.from_bytes(page[pointer:pointer + 2], "big")
            try:
                size, at = _varint(page, offset)
                rowid, at = _varint(page, at)
                payload = file.payload(page, at, size)
                values = _values(payload) if payload is not None else []
            except (ValueError, IndexError):
                continue
            if len(values) == 2 and values[0] == "records" and isinstance(values[1], int):
                issued = max(issued or 0, values[1])
            elif len(values) == 7 and isinstance(values[6], str):
                try:
                    record = json.loads(values[6])
                except ValueError:
                    continue
                if isinstance(record, dict) and record.get("specversion") and record.get("id") == values[2]:
                    found[rowid] = record
    return found, issued
