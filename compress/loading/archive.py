"""Zip archives read one way only: refuse any that two readers could read differently, and bound what they inflate to.

Every model and data file compress reads is a zip read by two different readers: torch's (miniz, for ``.pt2``,
TorchScript and ``torch.save`` files) and Python's ``zipfile`` (numpy's ``.npz``). They disagree on crafted archives:
with a repeated entry name miniz returns one copy (it compares names ignoring case) and ``zipfile`` the last; with bytes
before the first entry or a central directory that disagrees with the local headers each finds other bytes. So a check
that reads one copy and a loader that reads another is no check. :func:`zip_entries` parses the archive itself and
refuses all of that: every entry's name unique (ignoring case), its local header agreeing with the central directory
(name, method, flags, CRC, sizes), entries laid end to end from byte 0 up to the central directory, which ends where its
end record says, with nothing after. What is left has one reading, whoever reads it.

It also bounds inflation before anything inflates: an entry may only be stored or deflated, and a deflated one larger
than ``MIN_BOMB_BYTES`` may not grow more than ``MAX_INFLATE_RATIO`` times (a deflate bomb). Both readers stop at an
entry's declared size while inflating (miniz inflates into a buffer of that size, ``zipfile`` cuts there and fails its
CRC), so a declared size that lies costs at most what it declares; callers bound declared sizes by the file's kind.

Example:
    >>> [entry.name for entry in zip_entries(Path("tiny.pt2"))][:1]
    ['tiny/data/weights/weight_0']
    >>> zip_entries(Path("evil.pt2"))
    UsageError: evil.pt2: zip entry 'tiny/data/weights/model_weights_config.json' appears 2 times ...
"""
from __future__ import annotations

import io
import struct
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from compress.errors import UsageError
from compress.limits import MAX_INFLATE_RATIO, MIN_BOMB_BYTES

LOCAL, CENTRAL, END, END64, LOCATOR64, DESCRIPTOR = b"PK\x03\x04", b"PK\x01\x02", b"PK\x05\x06", b"PK\x06\x06", b"PK\x06\x07", b"PK\x07\x08"
END_SIZE, LOCATOR_SIZE, CENTRAL_SIZE, LOCAL_SIZE = 22, 20, 46, 30
STORED, DEFLATED = 0, 8
ENCRYPTED, HAS_DESCRIPTOR, UTF8 = 0x1, 0x8, 0x800
ZIP64_EXTRA = 0x0001
FULL32 = 0xFFFFFFFF
RESAVE = "re-save or re-download it"


@dataclass(frozen=True)
class Entry:
    """One archive member as the central directory declares it (checked against its local header)."""

    name: str
    method: int
    flags: int
    crc: int
    compressed: int
    size: int
    offset: int


def is_zip(path: Path) -> bool:
    """True when ``path`` starts like a zip (torch's test) or ends like one (``zipfile``'s)."""
    import zipfile

    with open(path, "rb") as handle:
        return handle.read(4) == LOCAL or zipfile.is_zipfile(path)


def zip_entries(source: Path | bytes, label: str | None = None) -> list[Entry]:
    """The entries of the zip ``source`` (a path, or the bytes of a nested archive), in file order.

    UsageError (exit 2) naming ``label`` (default: the path) when two readers could read it differently, or an entry
    is compressed other than stored/deflated, encrypted, or a deflate bomb.
    """
    label = label or str(source)
    with (open(source, "rb") if isinstance(source, Path) else io.BytesIO(source)) as handle:
        try:
            entries = _read_entries(handle, label)
        except struct.error:
            raise UsageError(f"{label} is corrupt or truncated (a zip record is cut short); {RESAVE}") from None
    for entry in entries:
        _check_inflation(entry, label)
    return entries


def _refuse(label: str, problem: str) -> UsageError:
    return UsageError(f"{label}: {problem}, so zip readers disagree on what it holds (torch reads other bytes than "
                      f"Python's zipfile): the file is crafted or damaged; {RESAVE}")


def _read_entries(handle: BinaryIO, label: str) -> list[Entry]:
    size = handle.seek(0, io.SEEK_END)
    count, cd_size, cd_offset, cd_end = _end_records(handle, size, label)
    if cd_offset + cd_size > size:
        raise UsageError(f"{label} is corrupt or truncated (its central directory lies past the end of the file); {RESAVE}")
    handle.seek(cd_offset)
    directory = handle.read(cd_size)
    entries, position = [], 0
    while position < len(directory):
        entry, position = _central_entry(directory, position, label)
        entries.append(entry)
    if position != cd_size or len(entries) != count:
        raise _refuse(label, f"its central directory holds {len(entries)} entries where its end record says {count}")
    repeated = [name for name, n in Counter(e.name.lower() for e in entries).items() if n > 1]
    if repeated:
        raise _refuse(label, f"zip entry {repeated[0]!r} appears more than once (names compared ignoring case, as torch does)")
    expected = 0
    for entry in sorted(entries, key=lambda e: e.offset):
        if entry.offset != expected:
            where = "overlaps the one before" if entry.offset < expected else f"starts at byte {entry.offset}, not {expected}"
            raise _refuse(label, f"zip entry {entry.name!r} {where}")
        expected = _local_end(handle, entry, label)
    if expected != cd_offset or cd_offset + cd_size != cd_end:
        raise _refuse(label, f"its central directory starts at byte {cd_offset}, where the entries end at {expected}")
    return entries


def _end_records(handle: BinaryIO, size: int, label: str) -> tuple[int, int, int, int]:
    """``(entries, central directory size, offset, where it must end)`` from the end record (and its zip64 twin)."""
    if size < END_SIZE:
        raise UsageError(f"{label} is corrupt or truncated (too short for a zip); {RESAVE}")
    handle.seek(size - END_SIZE)
    signature, _, _, _, count, cd_size, cd_offset, comment = struct.unpack("<4s4H2LH", handle.read(END_SIZE))
    if signature != END or comment:
        raise UsageError(f"{label} is corrupt or truncated (its zip end record is not the file's last 22 bytes); {RESAVE}")
    locator = size - END_SIZE - LOCATOR_SIZE
    if locator >= 0:
        handle.seek(locator)
        mark, _, record, _ = struct.unpack("<4sLQL", handle.read(LOCATOR_SIZE))
        if mark == LOCATOR64:
            handle.seek(record)
            signature, length, _, _, _, _, _, count64, size64, offset64 = struct.unpack("<4sQ2H2L4Q", handle.read(56))
            if signature != END64 or record + 12 + length != locator:
                raise _refuse(label, "its zip64 end record is not where its locator says")
            for field, full, value in ((count, 0xFFFF, count64), (cd_size, FULL32, size64), (cd_offset, FULL32, offset64)):
                if field not in (full, value):
                    raise _refuse(label, "its zip64 end record disagrees with its end record")
            return count64, size64, offset64, record
    return count, cd_size, cd_offset, size - END_SIZE


def _central_entry(directory: bytes, position: int, label: str) -> tuple[Entry, int]:
    (signature, _, _, flags, method, _, _, crc, compressed, size, name_length, extra_length, comment_length, _, _, _,
     offset) = struct.unpack_from("<4s6H3L5H2L", directory, position)
    if signature != CENTRAL:
        raise _refuse(label, f"its central directory has no entry at byte {position}")
    start = position + CENTRAL_SIZE
    raw_name = directory[start:start + name_length]
    extra = directory[start + name_length:start + name_length + extra_length]
    size, compressed, offset = _zip64_values(extra, (size, compressed, offset))
    entry = Entry(_name(raw_name, flags, label), method, flags, crc, compressed, size, offset)
    return entry, start + name_length + extra_length + comment_length


def _name(raw: bytes, flags: int, label: str) -> str:
    if b"\x00" in raw:
        raise _refuse(label, f"zip entry {raw[:80]!r} has a NUL byte in its name")
    return raw.decode("utf-8" if flags & UTF8 else "cp437", errors="replace")


def _zip64_values(extra: bytes, values: tuple[int, ...]) -> tuple[int, ...]:
    """``values`` with each 0xFFFFFFFF replaced, in order, from the zip64 extra field."""
    position = 0
    while position + 4 <= len(extra):
        kind, length = struct.unpack_from("<2H", extra, position)
        if kind == ZIP64_EXTRA:
            wide = iter(struct.unpack_from(f"<{length // 8}Q", extra, position + 4))
            return tuple(next(wide, value) if value == FULL32 else value for value in values)
        position += 4 + length
    return values


def _local_end(handle: BinaryIO, entry: Entry, label: str) -> int:
    """Where ``entry``'s bytes (local header, data, data descriptor) end, once its local header agrees with it."""
    handle.seek(entry.offset)
    header = handle.read(LOCAL_SIZE)
    signature, _, flags, method, _, _, crc, compressed, size, name_length, extra_length = struct.unpack("<4s5H3L2H", header)
    raw_name = handle.read(name_length)
    extra = handle.read(extra_length)
    if signature != LOCAL or _name(raw_name, flags, label) != entry.name or method != entry.method or flags != entry.flags:
        raise _refuse(label, f"zip entry {entry.name!r} has a local header that disagrees with its central directory")
    data_end = entry.offset + LOCAL_SIZE + name_length + extra_length + entry.compressed
    if not flags & HAS_DESCRIPTOR:
        size, compressed = _zip64_values(extra, (size, compressed))
        if (crc, compressed, size) != (entry.crc, entry.compressed, entry.size):
            raise _refuse(label, f"zip entry {entry.name!r} declares other sizes in its local header than in the central directory")
        return data_end
    handle.seek(data_end)
    tail = handle.read(24)
    for layout in ("<4sL2Q", "<4s3L", "<L2Q", "<3L"):  # with or without a signature; zip64 or 32-bit sizes
        fields = struct.unpack_from(layout, tail) if len(tail) >= struct.calcsize(layout) else ()
        values = fields[1:] if layout.startswith("<4s") else fields
        if fields and (not layout.startswith("<4s") or fields[0] == DESCRIPTOR) and tuple(values) == (entry.crc, entry.compressed, entry.size):
            return data_end + struct.calcsize(layout)
    raise _refuse(label, f"zip entry {entry.name!r} has a data descriptor that disagrees with its central directory")


def _check_inflation(entry: Entry, label: str) -> None:
    if entry.flags & ENCRYPTED or entry.method not in (STORED, DEFLATED):
        raise UsageError(f"{label}: zip entry {entry.name!r} is encrypted or compressed with method {entry.method}; "
                         "torch and numpy write stored or deflated entries only: re-save the file with them")
    if entry.method == STORED and entry.size != entry.compressed:
        raise _refuse(label, f"stored zip entry {entry.name!r} declares {entry.size} bytes in {entry.compressed}")
    if entry.method == DEFLATED and entry.size > MIN_BOMB_BYTES and entry.size > MAX_INFLATE_RATIO * max(entry.compressed, 1):
        raise UsageError(f"{label}: zip entry {entry.name!r} inflates from {entry.compressed:,} to {entry.size:,} bytes, over "
                         f"the limit of {MAX_INFLATE_RATIO}x (compress.limits.MAX_INFLATE_RATIO) for a deflate bomb; if the "
                         "content is real, save it uncompressed (numpy.savez, torch.save)")
