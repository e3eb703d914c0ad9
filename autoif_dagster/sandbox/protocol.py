"""The wire protocol between the sandbox client and a supervisor process.

Stdlib only: the supervisor imports this module inside a container that has nothing but a
Python interpreter.

A frame is a 4-byte big-endian unsigned length followed by that many bytes of UTF-8 JSON.
    request:  {"id": int, "source": str, "inputs": [str | int, ...], "timeout_s": float,
               "forget": bool (optional)}
    response: {"id": int, "marks": str, "others": [[index, kind, detail], ...]}

A response has one mark per input, in order: "p" (pass) or "f" (fail), the verdicts nearly
every input gets, or "x": the input's verdict is in "others", by its index. (A list of
[kind, detail] per input cost the client more to decode than many verifiers take to run.)

The client may send a request before the previous one is answered; the supervisor answers
them one at a time, in order.

Inputs repeat across requests (a verifier's candidates judge the same test cases), so each
is sent once per connection: every string in "inputs" is numbered in order of arrival from
0, and an int n in "inputs" stands for string number n. "forget": true first clears the
numbering (the client does so when the strings it sent pass TextTable.MAX_CHARS).
"""

import json
import os
import struct
from dataclasses import dataclass
from typing import Any, BinaryIO

PASS = "pass"
FAIL = "fail"
COMPILE_ERROR = "compile_error"  # the source does not compile
NO_EVALUATE = "no_evaluate"  # it runs but defines no callable `evaluate`
EXCEPTION = "exception"  # evaluate (or the module's top level) raised
TIMEOUT = "timeout"  # no answer within the per-call wall-clock limit
NON_BOOL = "non_bool"  # evaluate returned something other than True/False
CRASH = "crash"  # the process died without answering (os._exit, a signal...)
MEMORY = "memory"  # evaluate (or the module's top level) ran out of its memory limit
KINDS = (PASS, FAIL, COMPILE_ERROR, NO_EVALUATE, EXCEPTION, TIMEOUT, NON_BOOL, CRASH, MEMORY)

MAX_FRAME_BYTES = 256 * 1024 * 1024
_HEADER = struct.Struct(">I")


class FrameError(ValueError):
    """A frame that is too large, cut short, or not JSON."""


@dataclass(frozen=True)
class Verdict:
    kind: str
    detail: str = ""

    @property
    def passed(self) -> bool:
        return self.kind == PASS

    @property
    def is_error(self) -> bool:
        """The verifier could not judge (anything but a clean pass or fail)."""
        return self.kind not in (PASS, FAIL)

    def to_json(self) -> list[str]:
        return [self.kind, self.detail]

    @classmethod
    def from_json(cls, data: Any) -> "Verdict":
        kind, detail = data
        if kind not in KINDS:
            raise ValueError(f"unknown verdict kind {kind!r}")
        return cls(kind, str(detail))


Stream = BinaryIO | int  # a binary file object or a raw file descriptor


class TextTable:
    """The strings one connection has carried, on either side (see the module docstring)."""

    MAX_CHARS = 4_000_000  # in the supervisor, they sit in the memory every child inherits

    def __init__(self) -> None:
        self.numbers: dict[str, int] = {}  # the client's side: string -> number
        self.texts: list[str] = []  # the supervisor's side: number -> string
        self.chars = 0

    def pack(self, request: dict[str, Any]) -> dict[str, Any]:
        """Client: `request` with inputs sent before replaced by their numbers."""
        packed = dict(request)
        if self.chars > self.MAX_CHARS:
            self.numbers.clear()
            self.chars = 0
            packed["forget"] = True
        items: list[str | int] = []
        numbers = self.numbers
        for text in request["inputs"]:
            number = numbers.get(text)
            if number is None:
                numbers[text] = len(numbers)
                self.chars += len(text)
                items.append(text)
            else:
                items.append(number)
        packed["inputs"] = items
        return packed

    def unpack(self, request: dict[str, Any]) -> list[str]:
        """Supervisor: the request's inputs as strings. ValueError for a number never sent."""
        if request.get("forget"):
            self.texts.clear()
        texts, items = self.texts, request["inputs"]
        # Most requests after the first carry numbers only: checked and looked up in C loops.
        if items and set(map(type, items)) == {int} and 0 <= min(items) and max(items) < len(texts):
            return list(map(texts.__getitem__, items))
        inputs = []
        for item in items:
            if isinstance(item, str):
                texts.append(item)
                inputs.append(item)
            elif type(item) is int and 0 <= item < len(texts):
                inputs.append(texts[item])
            else:
                raise ValueError(f"input {item!r} is neither a string nor the number of one sent before")
        return inputs


MARKS = {PASS: "p", FAIL: "f"}
_OTHER = "x"
_SHARED = {mark: Verdict(kind) for kind, mark in MARKS.items()}  # one object per common verdict


def encode_verdicts(marks: str, others: dict[int, Verdict]) -> dict[str, Any]:
    """A response's verdict fields: `marks` holds "p", "f" or "x" per input; `others` the
    verdict of each "x"."""
    return {"marks": marks, "others": [[i, v.kind, v.detail] for i, v in sorted(others.items())]}


def decode_verdicts(response: dict[str, Any], count: int) -> list[Verdict]:
    """The `count` verdicts of a response; ValueError if it does not hold exactly that many."""
    marks, others = response.get("marks"), response.get("others")
    if (not isinstance(marks, str) or len(marks) != count or not isinstance(others, list)
            or marks.count(_OTHER) != len(others)):
        raise ValueError(f"expected {count} verdicts")
    try:
        verdicts = [_SHARED[mark] if mark != _OTHER else None for mark in marks]
    except KeyError as exc:
        raise ValueError(f"unknown verdict mark {exc}") from None
    for item in others:
        index, *verdict = item
        if type(index) is not int or not 0 <= index < count or verdicts[index] is not None:
            raise ValueError(f"misplaced verdict {item!r}")
        verdicts[index] = Verdict.from_json(verdict)
    return verdicts  # every "x" filled: as many others as "x" marks, each in a distinct one


def encode_frame(obj: Any) -> bytes:
    """The frame carrying `obj`: header and body."""
    # ensure_ascii keeps lone surrogates (possible in LLM text) encodable; they round-trip
    # as \udXXX escapes instead of failing the UTF-8 encode.
    body = json.dumps(obj, ensure_ascii=True, separators=(",", ":")).encode("utf-8")
    if len(body) > MAX_FRAME_BYTES:
        raise FrameError(f"frame of {len(body)} bytes exceeds the {MAX_FRAME_BYTES}-byte limit")
    return _HEADER.pack(len(body)) + body


def split_frame(buffer: bytes | bytearray) -> tuple[Any, int] | None:
    """(object, bytes used) for the first complete frame in `buffer`, or None if it holds
    only part of one; FrameError for an oversized or malformed frame."""
    if len(buffer) < _HEADER.size:
        return None
    (size,) = _HEADER.unpack_from(buffer)
    if size > MAX_FRAME_BYTES:
        raise FrameError(f"incoming frame of {size} bytes exceeds the {MAX_FRAME_BYTES}-byte limit")
    end = _HEADER.size + size
    if len(buffer) < end:
        return None
    try:
        return json.loads(bytes(buffer[_HEADER.size:end])), end
    except ValueError as exc:  # UnicodeDecodeError is a ValueError too
        raise FrameError(f"frame is not UTF-8 JSON: {exc}") from exc


def write_frame(dest: Stream, obj: Any) -> None:
    data = encode_frame(obj)
    if isinstance(dest, int):
        view = memoryview(data)
        while view:
            view = view[os.write(dest, view):]
    else:
        dest.write(data)
        dest.flush()


def read_frame(src: Stream) -> Any | None:
    """The next object, or None on a clean end of stream (EOF before a new frame)."""
    header = _read_exactly(src, _HEADER.size)
    if header is None:
        return None
    (size,) = _HEADER.unpack(header)
    if size > MAX_FRAME_BYTES:
        raise FrameError(f"incoming frame of {size} bytes exceeds the {MAX_FRAME_BYTES}-byte limit")
    body = _read_exactly(src, size)
    if body is None:
        raise FrameError("stream ended inside a frame")
    try:
        return json.loads(body)
    except ValueError as exc:  # UnicodeDecodeError is a ValueError too
        raise FrameError(f"frame is not UTF-8 JSON: {exc}") from exc


def _read_exactly(src: Stream, size: int) -> bytes | None:
    """`size` bytes; None if the stream ends before the first byte, FrameError if after it."""
    chunks, got = [], 0
    while got < size:
        chunk = os.read(src, size - got) if isinstance(src, int) else src.read(size - got)
        if not chunk:
            if got == 0:
                return None
            raise FrameError(f"stream ended after {got} of {size} bytes")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)
