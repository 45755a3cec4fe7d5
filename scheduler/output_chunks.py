"""The output chunk: the one codec for ``output/<job>/<run>/<seq>`` values.

Written by the running worker (:mod:`workers.output_sink`), read back by
masters and the CLI (:mod:`scheduler.output_reader`). A chunk's value is JSON::

    {"seq": n, "segs": [[stream, unix_time, text], ...]}

where stream is ``"o"`` (stdout), ``"e"`` (stderr) or ``"m"`` (a marker from
etcron), the time is rounded to milliseconds, and the text is the bytes read,
decoded as UTF-8 with backslash escapes for anything else (never dropped).
A reader never fails on a chunk: a malformed one reads as one marker segment.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

STREAMS = {"o": "stdout", "e": "stderr", "m": "etcron"}
"""Stored stream tag -> the stream's name."""
TAGS = {name: tag for tag, name in STREAMS.items()}
"""A stream's name -> its stored tag."""
UNREADABLE = "[etcron: unreadable output chunk]\n"
"""The text a malformed chunk reads as."""

RawSegment = tuple[str, float, bytes]
"""A segment as the worker holds it: (tag ``o``/``e``/``m``, unix time, bytes read)."""


@dataclass(frozen=True, slots=True)
class Segment:
    """A segment as read back: stream name, unix time, text."""

    stream: str
    time: float
    text: str

    def as_dict(self) -> dict[str, object]:
        return {"stream": self.stream, "time": self.time, "text": self.text}


def decode_text(data: bytes) -> str:
    """Output bytes as text: UTF-8, anything else as backslash escapes (never dropped)."""
    return data.decode("utf-8", "backslashreplace")


def encode_chunk(seq: int, segs: list[RawSegment]) -> bytes:
    """The stored value of chunk ``seq`` holding ``segs``."""
    return json.dumps(
        {"seq": seq, "segs": [[tag, round(t, 3), decode_text(d)] for tag, t, d in segs]}
    ).encode()


def parse_chunk(value: bytes) -> tuple[int, list[Segment]]:
    """(seq, segments) of a chunk; a malformed chunk yields seq -1 and one marker segment."""
    try:
        raw = json.loads(value)
        segs = [Segment(STREAMS.get(s, s), float(t), str(d)) for s, t, d in raw["segs"]]
        return int(raw["seq"]), segs
    except (ValueError, KeyError, TypeError):
        return -1, [Segment("etcron", 0.0, UNREADABLE)]
