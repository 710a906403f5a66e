r"""What from the wire must never reach a terminal as it is: the escaping shared by
ctipretty and ctidiff.

A peer must not be able to drive or disguise the display of the person
watching it: C0 controls (ESC starts every terminal sequence), DEL, the C1
controls U+0080-U+009F (U+009B is a CSI on many terminals) and the Unicode
bidirectional controls (U+202E turns the rest of a line around) are shown
escaped. The patterns work on UTF-8 bytes; in valid UTF-8 a lead byte such
as \xc2 never appears inside another character, so they cannot match across
characters.
"""
from __future__ import annotations

import re

_UNICODE_UNSAFE = (rb"\xc2[\x80-\x9f]"  # C1 controls
                   rb"|\xe2\x80[\x8e\x8f\xaa-\xae]"  # LRM, RLM; LRE, RLE, PDF, LRO, RLO
                   rb"|\xe2\x81[\xa6-\xa9]"  # LRI, RLI, FSI, PDI
                   rb"|\xd8\x9c")  # ALM
# orjson already writes C0 controls inside JSON strings as escapes.
_UNSAFE_IN_JSON = re.compile(rb"\x7f|" + _UNICODE_UNSAFE)
# Text from the wire keeps its tabs (and a raw chunk its newlines).
_UNSAFE_IN_TEXT = re.compile(rb"[\x00-\x08\x0b-\x1f\x7f]|" + _UNICODE_UNSAFE)
# One line of ours (an event) holds no control at all.
_UNSAFE_IN_LINE = re.compile(rb"[\x00-\x1f\x7f]|" + _UNICODE_UNSAFE)


def _json_escape(match: re.Match) -> bytes:
    """The JSON escape of the character: the body stays valid JSON, same value."""
    return b"\\u%04x" % ord(match.group().decode())


def _text_escape(match: re.Match) -> bytes:
    found = match.group()
    if len(found) == 1:
        return b"\\x%02x" % found[0]
    return b"\\u%04x" % ord(found.decode())


def safe_json(body: bytes) -> bytes:
    """JSON text (or a batch of lines holding it) with every character that
    could drive a terminal escaped.

    Four memchr scans first: most batches hold none of these lead bytes, and
    the regular expression is ten times slower than laying the JSON out.
    """
    if b"\x7f" in body or b"\xc2" in body or b"\xe2" in body or b"\xd8" in body:
        return _UNSAFE_IN_JSON.sub(_json_escape, body)
    return body


def safe_text(text: bytes, keep_newlines: bool = True) -> bytes:
    """Text from the wire with every control escaped (\\x1b, \\u009b, \\u202e)."""
    return (_UNSAFE_IN_TEXT if keep_newlines else _UNSAFE_IN_LINE).sub(_text_escape, text)
