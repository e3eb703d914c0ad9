"""The wire protocol between the sandbox client and a supervisor process.

Stdlib only: the supervisor imports this module inside a container that has nothing but a
Python interpreter.

A frame is a 4-byte big-endian unsigned length followed by that many bytes of UTF-8 JSON.
    request:  {"id": int, "source": str, "inputs": [str, ...], "timeout_s": float}
    response: {"id": int, "verdicts": [[kind, detail], ...]}   # one per input, same order
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
CRASH = "crash"  # the process died without answering (os._exit, memory, signal...)
KINDS = (PASS, FAIL, COMPILE_ERROR, NO_EVALUATE, EXCEPTION, TIMEOUT, NON_BOOL, CRASH)

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


def write_frame(dest: Stream, obj: Any) -> None:
    # ensure_ascii keeps lone surrogates (possible in LLM text) encodable; they round-trip
    # as \udXXX escapes instead of failing the UTF-8 encode.
    body = json.dumps(obj, ensure_ascii=True, separators=(",", ":")).encode("utf-8")
    if len(body) > MAX_FRAME_BYTES:
        raise FrameError(f"frame of {len(body)} bytes exceeds the {MAX_FRAME_BYTES}-byte limit")
    data = _HEADER.pack(len(body)) + body
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
