"""JSON Lines bodies of any size in bounded memory: read and checked once, then run and
answered a piece at a time.

Batch transform sends JSON Lines mini-batches up to MaxPayloadInMB (or a whole file, with
0), and async inference bodies of up to 1 GB. Held whole, a body costs many times its
size (the bytes, the string, the lines, the records, the answer). Here:

1. read: the body comes off the socket in blocks; every line is decoded and checked as
   it passes (decode.decode_line), then only the raw bytes are kept, in a spooled
   temporary file (memory up to SPOOL_IN_MEMORY, then the temporary folder: /tmp, which
   SageMaker leaves writable even on a read-only image). A malformed record anywhere
   fails the whole request with its JSON 4xx, naming its line, before any answer byte is
   sent: a mini-batch is answered whole or not at all, as for a small body.
2. run: the checked lines are read back in groups (cutting.py's rule: one merged call's
   worth, or one fan-out part's) and each group goes through the same path as any
   request (runner.py), so it merges with the requests beside it.
3. answer: each group's answer lines are sent as soon as they are made, with chunked
   encoding, and nginx passes them on unbuffered (X-Accel-Buffering: no).

Memory is then one group's texts and answers, whatever the body's size.
"""

import tempfile
from collections.abc import Iterator
from typing import IO

from capacity import work
from cutting import Limit, groups
from decode import Shape, check_length, decode_line
from protocol import ApiError
from tuning import BLOCK_BYTES, SPOOL_IN_MEMORY

BOM = b"\xef\xbb\xbf"
# A JSON string can spend up to 6 bytes on a character (\uXXXX): a line longer than that
# many bytes per allowed character cannot hold an allowed text.
BYTES_PER_CHARACTER = 6


def _text_length(record: tuple[str, dict]) -> int:
    return len(record[0])


class Body:
    """A checked JSON Lines body: its lines, the work their texts hold (capacity.work),
    their characters (what cutting.py counts), and the bytes to read back."""

    # Answered as it runs, a group at a time (runner.py).
    streamed = True

    def __init__(self, file: IO[bytes], lines: int, work: int, characters: int):
        self.file, self.lines, self.work, self.characters = file, lines, work, characters

    def groups(self, limit: Limit) -> Iterator[tuple[list[str], Shape]]:
        """(texts, Shape) for consecutive records, as many as the limit admits."""
        self.file.seek(0)
        records = (
            decode_line(line[:-1] if line.endswith(b"\n") else line, n)
            for n, line in enumerate(self.file, 1)
        )
        for group in groups(records, limit, _text_length):
            yield [text for text, _ in group], Shape("lines", tuple(f for _, f in group))

    def close(self) -> None:
        self.file.close()


def read(stream: IO[bytes], max_length: int) -> Body:
    """Read a JSON Lines body from stream (a file-like object), checking every record;
    ApiError for the first bad one. A final newline does not start another record."""
    spool = tempfile.SpooledTemporaryFile(SPOOL_IN_MEMORY)
    try:
        return _read(stream, spool, max_length)
    except BaseException:
        spool.close()
        raise


class _Count:
    """What the lines read so far hold."""

    def __init__(self, max_length: int):
        self.max_length = max_length
        self.lines = self.work = self.characters = 0

    def check(self, line: bytes) -> None:
        """Count the next line; ApiError for a bad one."""
        self.lines += 1
        text, _ = decode_line(line, self.lines)
        check_length(text, f"line {self.lines}", self.max_length)
        self.work += work(text)
        self.characters += len(text)


def _read(stream: IO[bytes], spool: IO[bytes], max_length: int) -> Body:
    buffer, count, first = bytearray(), _Count(max_length), True
    longest = BYTES_PER_CHARACTER * max_length + 64  # room for the record's other fields
    while True:
        block = stream.read(BLOCK_BYTES)
        if not block:
            break
        if first:
            # A byte-order mark some Windows tools prepend is not part of the first record.
            block, first = (block[len(BOM) :] if block.startswith(BOM) else block), False
        spool.write(block)
        buffer += block
        start = 0
        while (end := buffer.find(b"\n", start)) != -1:
            count.check(bytes(buffer[start:end]))
            start = end + 1
        del buffer[:start]
        if len(buffer) > longest:  # no need to read the rest of a line that long
            raise ApiError(
                413,
                "text_too_long",
                f"line {count.lines + 1} is over {len(buffer)} "
                f"bytes, more than a text of {max_length} characters "
                "(MODEL_SERVER_MAX_TEXT_CHARACTERS) can take",
            )
    if buffer:
        count.check(bytes(buffer))
    return Body(spool, count.lines, count.work, count.characters)
