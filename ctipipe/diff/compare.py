"""Compare two CTI messages by meaning: which fields to ignore, what kind of
message each is (its signature), and the field-by-field differences.

Pure: values in, differences out; no files, no output, no CLI.
"""
from __future__ import annotations

import json
import math
import re
from typing import Iterator

import orjson

from ctipipe.diff import align

# Fields that differ in every session: the server's clock, the client's
# request numbers and their echoes, the login's session, the relay's clock.
VOLATILE = ("timenow", "commandid", "replyid", "sessionid", "ts")
# ... and every key ending so: timestamps of the server's clock too
# (status.availability_since of an agent's status).
VOLATILE_SUFFIXES = ("_since",)

# Keys that name what a message is about beyond its class: getlist's function
# and list, ipbxcommand's command, featuresput's function.
SIGNATURE_KEYS = ("class", "function", "listname", "command")

# An item key that identifies objects in a list: two lists of such objects are
# compared item by item with the same id, not by position.
ID_KEYS = ("id", "uniqueid", "xid", "tid", "user_id")

MISSING = object()  # the value of a field absent from one side

# A \u escape of an ASCII character, which could spell a key in a way a plain
# search for its name would miss (other escapes, such as accents, cannot).
_ESCAPED_ASCII = re.compile(rb"\\u00[0-7][0-9a-fA-F]").search


class Ignore:
    """Fields left out of the comparison: bare keys (at any depth) and dotted paths.

    A dotted path names fields from the message's root through objects; list
    positions in between are skipped, so `results.relations.user_id` covers the
    field in every item of `results` (`results.1.relations.user_id` only item 1).
    """

    def __init__(self, fields: list[str], suffixes: tuple[str, ...] = ()) -> None:
        self.keys = frozenset(f for f in fields if "." not in f)
        self.paths = frozenset(tuple(f.split(".")) for f in fields if "." in f)
        self.suffixes = tuple(suffixes)  # keys ending so are ignored at any depth
        # the quoted names as they appear in a record's text, for a quick look
        self._fields = list(dict.fromkeys(fields))
        names = {orjson.dumps(f.rsplit(".", 1)[-1]): f.rsplit(".", 1)[-1] for f in self._fields}
        self._key_of = names  # quoted name -> key
        self._find = re.compile(b"|".join(re.escape(n) for n in names)).findall if names else None
        # a suffix is looked for as the end of a string: found, the message is walked
        self._marks = [x.encode() + b'"' for x in self.suffixes]

    def __bool__(self) -> bool:
        return bool(self._fields or self.suffixes)

    def ignored(self, path: tuple) -> bool:
        last = path[-1]
        if last in self.keys or (self.suffixes and type(last) is str and last.endswith(self.suffixes)):
            return True
        if not self.paths:
            return False
        if tuple(p for p in path if type(p) is str) in self.paths:
            return True  # the path without list positions
        return tuple(str(p) for p in path if type(p) is not tuple) in self.paths

    def strip(self, message: object, text: bytes | None = None) -> object:
        """The message without its ignored fields (the message itself when it has none).

        `text` is the JSON text the message was decoded from, given by a caller
        that no longer needs the message as it was: when no ignored name occurs
        in it, or each once as a key of the message itself, the message is used
        (and changed) in place instead of being walked through and copied.
        """
        if not self or type(message) not in (dict, list):
            return message
        if text is not None and not _ESCAPED_ASCII(text):  # no name hidden behind an escape
            found = self._find(text) if self._find else []
            suffixed = False
            for mark in self._marks:
                if mark in text:
                    suffixed = True
            if not found and not suffixed:
                return message
            if type(message) is dict and not self.paths and not suffixed and len(found) == len(set(found)):
                keys = [self._key_of[name] for name in found]
                if all(key in message for key in keys):
                    for key in keys:
                        del message[key]
                    return message
        return self._strip(message, ())

    def _strip(self, value: object, path: tuple) -> object:
        if type(value) is dict:
            return {key: self._strip(item, path + (key,)) for key, item in value.items()
                    if not self.ignored(path + (key,))}
        if type(value) is list:
            return [self._strip(item, path + (n,)) for n, item in enumerate(value)]
        return value


def signature(message: object) -> tuple:
    """What kind of message this is, for aligning two sessions: the values of
    SIGNATURE_KEYS (None where absent)."""
    if type(message) is not dict:
        return ("(" + type(message).__name__ + ")",)
    kind = tuple(map(message.get, SIGNATURE_KEYS))
    try:
        hash(kind)
    except TypeError:  # an object or list where a name was expected
        kind = tuple(v if v is None or isinstance(v, (str, int, float, bool)) else "?" for v in kind)
    return kind


def signature_text(kind: tuple) -> str:
    """A signature as shown: its values joined by slashes."""
    return "/".join(str(part) for part in kind if part is not None) or "(no class)"


def content_key(message: object) -> int:
    """Equal for messages with equal content (keys in any order); a 64-bit hash.
    Integers are kept exact, and NaN, Infinity and null are three different things."""
    try:
        return hash(orjson.dumps(message, option=orjson.OPT_SORT_KEYS))
    except TypeError:  # a big integer, a Constant, a lone surrogate, deep nesting: orjson refuses
        constants: list[str] = []

        def constant(value: object) -> str:
            if type(value) is not Constant:
                raise TypeError(f"not JSON: {type(value).__name__}")
            constants.append(value.word)  # beside the text: no string can pass for it
            return ""

        return hash((json.dumps(message, sort_keys=True, default=constant), tuple(constants)))


class Constant:
    """NaN, Infinity or -Infinity (or a number too large for a float, such as
    1e400) as a file spelt it: Python's json reads them, JSON has no such
    value. Equal only to the same word; never to null, nor to a number."""

    __slots__ = ("word",)

    def __init__(self, word: str) -> None:
        self.word = word

    def __eq__(self, other: object) -> bool:
        return type(other) is Constant and other.word == self.word

    def __hash__(self) -> int:
        return hash((Constant, self.word))

    def __repr__(self) -> str:
        return self.word


def dumps(value: object) -> str:
    """Compact JSON text of whatever ctidiff read: orjson's, else json's (big
    integers, lone surrogates escaped, a Constant as its word or as Infinity)."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return json.dumps(value, separators=(",", ":"), default=_as_float)


def _as_float(value: object) -> float:
    if type(value) is Constant:
        return float(value.word)  # json writes NaN, Infinity, -Infinity
    raise TypeError(f"not JSON: {type(value).__name__}")


def _float(text: str) -> float | Constant:
    number = float(text)
    return number if math.isfinite(number) else Constant(text)


# Python's json as ctidiff reads with it: integers exact, NaN and Infinity as Constant.
DECODER = json.JSONDecoder(parse_constant=Constant, parse_float=_float)

# An integer of 19 digits or more may be beyond 64 bits (-2**63 has 19), where
# orjson reads a float (two different integers would look equal): such a text
# is read by json. Found as 19 zeros once every digit is made a zero: four
# times quicker than a regular expression (stream.may_hold_big_integer's).
DIGITS_AS_ZEROS = bytes(0x30 if 0x30 <= c <= 0x39 else 0x20 for c in range(256))
LONG_RUN = b"0" * 19


def long_digits(text: bytes) -> bool:
    """Whether the text holds a run of 19 digits (maybe an integer beyond 64 bits)."""
    return LONG_RUN in text.translate(DIGITS_AS_ZEROS)


def loads(text: bytes) -> object:
    """A JSON text decoded exactly: by orjson, or by Python's json where orjson
    would not be exact (integers beyond 64 bits) or refuses (NaN, Infinity:
    read as Constant). Raises ValueError when the text is not JSON, or nests
    too deeply for either."""
    if not long_digits(text):
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            pass
    try:
        return DECODER.decode(text.decode("utf-8"))
    except RecursionError:
        raise ValueError("nested too deeply") from None


# Deepest nesting compared field by field; a message nested deeper is compared
# as its text (the relay records such a message as an undecodable line, and
# Python's recursion would not reach the bottom of one nested 1,000 deep).
MAX_DEPTH = 200


def too_deep(value: object, text: bytes) -> bool:
    """Whether `value` (decoded from `text`) nests deeper than MAX_DEPTH."""
    if text.count(b"[") + text.count(b"{") <= MAX_DEPTH:  # the usual case, in C
        return False
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if type(item) is dict:
            children = item.values()
        elif type(item) is list:
            children = item
        else:
            continue
        if depth > MAX_DEPTH:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def differences(a: object, b: object, path: tuple = (), path_b: tuple | None = None,
                budget: align.Budget | None = None) -> Iterator[tuple[tuple, tuple, object, object]]:
    """(path in A, path in B, value in A, value in B) for every field that differs.

    A field only in A has MISSING as its value in B, and the other way round.
    Objects are compared key by key, lists of objects with an id (ID_KEYS) id
    by id, lists of equal length item by item, and lists of different lengths
    by a common subsequence of their items, so that one inserted item is one
    difference. Paths hold keys (str), positions (int) and, for items matched
    by id, (key, id) pairs. The two paths differ only when an item moved in its list.
    Lists are aligned on `budget` (one for the whole comparison bounds its time,
    see align.py; by default one for these two values).
    """
    if path_b is None:
        path_b = path
    if budget is None:
        budget = align.Budget()
    if type(a) is dict and type(b) is dict:
        for key in sorted(a.keys() | b.keys()):
            old, new = a.get(key, MISSING), b.get(key, MISSING)
            if old is MISSING or new is MISSING:
                yield path + (key,), path_b + (key,), old, new
            elif type(old) in _NESTED or type(new) in _NESTED:
                yield from differences(old, new, path + (key,), path_b + (key,), budget)
            elif not _same(old, new):  # two plain values: no generator for each field
                yield path + (key,), path_b + (key,), old, new
    elif type(a) is list and type(b) is list:
        yield from _list_differences(a, b, path, path_b, budget)
    elif not _same(a, b):
        yield path, path_b, a, b


_NESTED = (dict, list)


def _same(a: object, b: object) -> bool:
    # JSON numbers compare by value (1 == 1.0), but true is not 1.
    if type(a) is bool or type(b) is bool:
        return a is b
    return a == b


def _list_differences(a: list, b: list, path: tuple, path_b: tuple, budget: align.Budget) -> Iterator:
    id_key = _id_key(a, b)
    if id_key is not None:
        new = {item[id_key]: item for item in b}
        old_ids = set()
        for item in a:
            ident = item[id_key]
            old_ids.add(ident)
            where, where_b = path + ((id_key, ident),), path_b + ((id_key, ident),)
            if ident in new:
                yield from differences(item, new[ident], where, where_b, budget)
            else:
                yield where, where_b, item, MISSING
        for item in b:
            if item[id_key] not in old_ids:
                where, where_b = path + ((id_key, item[id_key]),), path_b + ((id_key, item[id_key]),)
                yield where, where_b, MISSING, item
        return
    if len(a) == len(b):
        for n, (old, new) in enumerate(zip(a, b)):
            yield from differences(old, new, path + (n,), path_b + (n,), budget)
        return
    # Different lengths: equal items matched first; what lies between two
    # matches is compared position by position, the rest added or removed.
    pairs = align.common_pairs([content_key(x) for x in a], [content_key(x) for x in b], budget)
    i = j = 0
    for next_i, next_j in pairs + [(len(a), len(b))]:
        while i < next_i and j < next_j:
            yield from differences(a[i], b[j], path + (i,), path_b + (j,), budget)
            i += 1
            j += 1
        while i < next_i:
            yield path + (i,), path_b + (j,), a[i], MISSING
            i += 1
        while j < next_j:
            yield path + (i,), path_b + (j,), MISSING, b[j]
            j += 1
        i, j = next_i + 1, next_j + 1


def _id_key(a: list, b: list) -> str | None:
    """The id key every object in both lists carries, with values unique in each list."""
    if not a or not b or type(a[0]) is not dict:
        return None
    for key in ID_KEYS:
        if all(type(item) is dict and key in item for item in a) and \
                all(type(item) is dict and key in item for item in b):
            for items in (a, b):
                ids = [item[key] for item in items]
                if any(type(i) not in (str, int) for i in ids) or len(set(ids)) != len(ids):
                    return None
            return key
    return None


def path_text(path: tuple) -> str:
    """A path as the user writes it: keys and positions joined by dots, an item
    matched by id as [key=id]; the message itself is (message)."""
    text = ""
    for part in path:
        if type(part) is tuple:
            text += f"[{part[0]}={part[1]}]"
        else:
            text += ("." if text else "") + str(part)
    return text or "(message)"
