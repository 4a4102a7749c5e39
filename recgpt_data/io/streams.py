"""Open raw dumps as they are published: plain, ``.gz``, ``.bz2`` or ``.zst``, read in large binary chunks.

A truncated compressed file (an upload cut off) yields every byte that decompresses, then sets
``truncated`` instead of raising, so readers keep every complete record and report the cut.
Decompression is driven by hand (``zlib`` / ``bz2`` decompressor objects) so that nothing already
decompressed is lost when the stream ends early, and multi-member files are read whole; zstd goes through pyarrow's streaming decoder, which reports a
cut stream after handing over what it decoded. A UTF-8 byte order mark at the start of a file is
not data and is dropped. A file is a local path or an object's URL (:func:`~recgpt_data.io.storage.open_input`):
an object is read as a stream, its compressed bytes fed straight to the decoder and a byte range
of a plain one fetched alone, never copied to disk. :class:`LineBlocks` cuts local plain files
straight from an ``mmap``, so each block is copied once, and cuts a plain object's stream at the
same line breaks.
"""

from __future__ import annotations

import bz2
import mmap
import zlib
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa

from recgpt_data.io.storage import Location, is_remote, name_of, open_input

CHUNK_BYTES = 8 << 20
TAIL_BYTES = 4 << 10  # the first read past a range's end, to the end of its last line (a few lines of a dump)
BOM = b"\xef\xbb\xbf"
COMPRESSION_SUFFIXES = {".gz": "gzip", ".bz2": "bz2", ".zst": "zstd"}


def compression_of(path: Location) -> str | None:
    """``"gzip"``, ``"bz2"``, ``"zstd"`` or ``None`` by the file's suffix."""
    return COMPRESSION_SUFFIXES.get(Path(name_of(path)).suffix)


def without_bom(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """``chunks`` with a UTF-8 byte order mark at the very start dropped (however the chunks cut it)."""
    head = b""
    for chunk in chunks:
        if head is not None:
            head += chunk
            if len(head) < len(BOM) and BOM.startswith(head):
                continue
            chunk, head = head.removeprefix(BOM), None
        if chunk:
            yield chunk
    if head:
        yield head


def _decompressor(kind: str):
    return zlib.decompressobj(wbits=31) if kind == "gzip" else bz2.BZ2Decompressor()


class ChunkStream:
    """Iterate a file's decompressed bytes in chunks (of a plain file with a ``span``, only the
    lines that start in it: see :func:`owned_lines`); after iteration ``truncated`` tells whether
    the compressed stream ended early and ``error`` says how."""

    def __init__(self, path: Location, chunk_bytes: int = CHUNK_BYTES, span: tuple[int, int] | None = None):
        self.path = path
        self.chunk_bytes = chunk_bytes
        self.span = span
        self.truncated = False
        self.error: str | None = None
        if span is not None and compression_of(path) is not None:
            raise ValueError(f"{name_of(path)}: a byte range is read in place only from a plain file")

    def __iter__(self) -> Iterator[bytes]:
        kind = compression_of(self.path)
        if kind == "zstd":
            yield from self._zstd()
            return
        if self.span is not None:
            yield from self._owned(*self.span)
            return
        with open_input(self.path) as handle:
            if kind is None:
                while chunk := handle.read(self.chunk_bytes):
                    yield chunk
                return
            yield from self._decompress(handle, kind)

    def _owned(self, start: int, end: int) -> Iterator[bytes]:
        """The bytes of the lines that start in ``[start, end)`` (see :func:`owned_lines`), read
        from the byte before ``start`` in chunks up to ``end``, then on past it in small, growing
        pieces only as far as the last of those lines runs: the bytes of a file cut into ranges
        are read about once in all (a range also reads the part of the line it starts in)."""
        with open_input(self.path, max(start - 1, 0)) as handle:
            at, seeking, ended = max(start - 1, 0), start > 0, True
            while at < end and (chunk := handle.read(min(end - at, self.chunk_bytes))):
                at += len(chunk)
                ended = chunk.endswith(b"\n")
                if seeking:  # the line that runs into the range belongs to the range before
                    cut = chunk.find(b"\n")
                    if cut < 0:
                        continue
                    chunk, seeking = chunk[cut + 1 :], False
                if chunk:
                    yield chunk
            piece = TAIL_BYTES
            while not (seeking or ended) and (chunk := handle.read(piece)):
                cut = chunk.find(b"\n")
                ended = cut >= 0
                yield chunk[: cut + 1] if ended else chunk
                piece = min(2 * piece, self.chunk_bytes)

    def _zstd(self) -> Iterator[bytes]:
        """pyarrow's zstd decoder drops what a read decoded when the stream breaks inside that read,
        so after a break the file is decoded again up to what was handed over, and read on in
        smaller pieces, down to single bytes: every byte before the cut is handed over."""
        delivered = 0
        for piece in (self.chunk_bytes, 1 << 16, 1 << 10, 1 << 4, 1):
            raw = (
                pa.OSFile(str(self.path))
                if not is_remote(self.path)
                else pa.PythonFile(open_input(self.path), mode="r")
            )
            stream = pa.CompressedInputStream(raw, "zstd")
            skip = delivered
            try:
                while skip:
                    skip -= len(stream.read(min(skip, self.chunk_bytes)))
                while out := stream.read(piece):
                    delivered += len(out)
                    yield out
                return
            except OSError as exc:
                self.error = f"corrupt zstd stream: {exc}"
            finally:
                stream.close()
        self.truncated = True

    def _decompress(self, handle, kind: str) -> Iterator[bytes]:
        decoder = _decompressor(kind)
        pending = b""
        while True:
            raw = pending or handle.read(self.chunk_bytes)
            pending = b""
            if not raw:
                break
            try:
                out = decoder.decompress(raw)
            except (zlib.error, OSError, EOFError) as exc:
                self.truncated, self.error = True, f"corrupt {kind} stream: {exc}"
                return
            if out:
                yield out
            if decoder.eof:
                rest = decoder.unused_data
                if not rest.strip(b"\x00"):
                    rest = handle.read(self.chunk_bytes)
                    if not rest.strip(b"\x00"):
                        return
                decoder, pending = _decompressor(kind), rest
        if kind == "gzip":
            tail = decoder.flush()
            if tail:
                yield tail
        self.truncated, self.error = True, f"{kind} stream ended before its end-of-stream marker"


class LineBlocks:
    """Iterate a file as blocks of whole lines: ``(first_line, block, count)`` where ``block`` holds
    ``count`` complete lines joined by LF (no trailing LF) and ``first_line`` is the 1-based number
    of its first line. CRLF endings are read as LF.

    A block of lines cut out of a larger file is read with ``first_line``, the number in that file
    of its first line where that is known, and, for a plain file read in place, ``span``: a byte
    range ``[start, end)`` anywhere in the file, whose block is the lines that start in it (see
    :func:`owned_lines`). A plain object in a store is cut at the same line breaks as the same file
    read in place.

    After iteration: ``lines`` is the number of lines yielded, ``truncated`` whether the compressed
    stream was cut, and ``partial`` the incomplete last record of a cut stream (not yielded)."""

    def __init__(
        self,
        path: Location,
        chunk_bytes: int = CHUNK_BYTES,
        first_line: int = 1,
        span: tuple[int, int] | None = None,
    ):
        self.stream = ChunkStream(path, chunk_bytes, span)
        self.first_line = first_line
        self.span = span
        self.lines = 0
        self.partial: bytes | None = None

    @property
    def truncated(self) -> bool:
        return self.stream.truncated

    @property
    def error(self) -> str | None:
        return self.stream.error

    def __iter__(self) -> Iterator[tuple[int, bytes, int]]:
        if compression_of(self.stream.path) is None:
            yield from self._streamed() if is_remote(self.stream.path) else self._mapped()
            return
        carry: list[bytes] = []  # the pieces of a line not yet ended (a long line spans many chunks)
        for chunk in without_bom(iter(self.stream)):
            if b"\r" in chunk:
                chunk = chunk.replace(b"\r\n", b"\n")
            if carry and carry[-1].endswith(b"\r") and chunk.startswith(b"\n"):
                carry[-1] = carry[-1][:-1]
            cut = chunk.rfind(b"\n")
            if cut < 0:
                carry.append(chunk)
                continue
            # one copy per block: the carried partial line and the chunk up to its last line break
            block = b"".join((*carry, memoryview(chunk)[:cut])) if carry else chunk[:cut]
            carry = [chunk[cut + 1 :]]
            yield self._numbered(block)
        rest = b"".join(carry)
        if rest.endswith(b"\r"):
            rest = rest[:-1]
        if not rest:
            return
        if self.stream.truncated:
            self.partial = rest
        else:
            yield self._numbered(rest)

    def _mapped(self) -> Iterator[tuple[int, bytes, int]]:
        """A plain file through ``mmap``: each block is cut at a line break inside the next
        ``chunk_bytes`` and copied once, straight from the page cache."""
        if not Path(self.stream.path).stat().st_size:
            return
        with open(self.stream.path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
            start, size = owned_lines(data, *self.span) if self.span else (0, len(data))
            if start == 0 and data[: len(BOM)] == BOM:
                start = len(BOM)
            last = data.rfind(b"\n", start, size)
            released = start - start % mmap.PAGESIZE
            while start <= last:
                cut = data.rfind(b"\n", start, min(start + self.stream.chunk_bytes, last + 1))
                if cut < start:  # a line longer than a chunk
                    cut = data.find(b"\n", start)
                block = data[start:cut]
                start = cut + 1
                # drop the pages already copied from this process's resident set: the file stays in
                # the page cache, and memory stays flat however large the file
                done = start - start % mmap.PAGESIZE
                data.madvise(mmap.MADV_DONTNEED, released, done - released)
                released = done
                yield self._numbered(crlf_to_lf(block))
            if start < size:
                yield self._numbered(crlf_to_lf(data[start:size]))

    def _streamed(self) -> Iterator[tuple[int, bytes, int]]:
        """A plain file as a stream (an object, or its byte range), cut as :meth:`_mapped` cuts it:
        at the last line break within the next ``chunk_bytes``, or past them at the first where a
        line is longer."""
        chunks = iter(self.stream) if (self.span or (0, 0))[0] else without_bom(iter(self.stream))
        limit = self.stream.chunk_bytes
        pending = b""
        for chunk in chunks:
            pending += chunk
            while len(pending) >= limit:
                cut = pending.rfind(b"\n", 0, limit)
                if cut < 0:
                    cut = pending.find(b"\n", limit)
                    if cut < 0:
                        break
                yield self._numbered(crlf_to_lf(pending[:cut]))
                pending = pending[cut + 1 :]
        while (cut := pending.rfind(b"\n", 0, limit)) >= 0 or (cut := pending.find(b"\n")) >= 0:
            yield self._numbered(crlf_to_lf(pending[:cut]))
            pending = pending[cut + 1 :]
        if pending:
            yield self._numbered(crlf_to_lf(pending))

    def _numbered(self, block: bytes) -> tuple[int, bytes, int]:
        """``(first_line, block, count)`` for the next block of whole lines; ``lines`` moves past it."""
        count = block.count(b"\n") + 1
        first = self.first_line + self.lines
        self.lines += count
        return first, block, count


def crlf_to_lf(block: bytes) -> bytes:
    """A block of whole lines with CRLF endings read as LF (and the CR of a last CRLF cut off)."""
    if b"\r" in block:
        block = block.replace(b"\r\n", b"\n")
        if block.endswith(b"\r"):
            block = block[:-1]
    return block


def owned_lines(data: mmap.mmap, start: int, end: int) -> tuple[int, int]:
    """The bytes ``[first, last)`` of the lines of ``data`` that start in the byte range ``[start,
    end)``: from the start of the first line there (``start`` itself where it is 0 or follows a line
    break) to the end of the line that holds byte ``end - 1`` (its line break included, or the end
    of the data), empty where no line starts in the range. Ranges that tile a file give every line
    to exactly one of them, whatever lengths its lines have, and a line break is never inside a
    UTF-8 character or between the CR and LF of a CRLF's line, so a range splits neither."""
    first = 0 if start == 0 else data.find(b"\n", start - 1, end - 1) + 1
    if first == 0 and start:
        return start, start
    last = data.find(b"\n", end - 1)
    return first, last + 1 if last >= 0 else len(data)
