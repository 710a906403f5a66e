"""Dotted paths into messages (`config.lastcall`) and KEY=VALUE expressions."""
from __future__ import annotations

import orjson

_MISSING = object()


class ExpressionError(ValueError):
    """A field path or expression that cannot be meant; its text says why."""


def split_path(path: str) -> list[str]:
    if not path or any(not part for part in path.split(".")):
        raise ExpressionError(f"not a field path: {path!r} (use names joined by dots, e.g. config.lastcall)")
    return path.split(".")


def _operator_in(text: str) -> str | None:
    """The first character of a comparison operator in a key or field, if any:
    no CTI key holds one, so it means an operator typed where it does not go."""
    return next((c for c in text if c in "!<>~="), None)


def field_path(field: str) -> list[str]:
    """A FIELD to remove (ctistrip, --strip): a dotted path inside the message.
    Forms that cannot be meant are refused with a hint, as expressions are."""
    if field.startswith("msg."):
        raise ExpressionError(f"{field!r}: a FIELD is a path inside the message, without "
                              f"'msg.' (e.g. {field[4:]})")
    bad = _operator_in(field)
    if bad is not None:
        raise ExpressionError(f"{field!r}: {bad!r} cannot be in a FIELD, which is removed by "
                              f"name (e.g. timenow); to keep or drop messages by value, use "
                              f"ctiinclude or ctiexclude KEY=VALUE")
    return split_path(field)


def lookup(value: object, path: list[str]) -> object:
    """The value at path, or _MISSING."""
    for key in path:
        if type(value) is not dict:
            return _MISSING
        value = value.get(key, _MISSING)
        if value is _MISSING:
            return _MISSING
    return value


def remove(value: object, path: list[str]) -> bool:
    """Remove the field at path; True if there was one."""
    for key in path[:-1]:
        if type(value) is not dict:
            return False
        value = value.get(key)
    if type(value) is dict and path[-1] in value:
        del value[path[-1]]
        return True
    return False


class Expression:
    """KEY=VALUE: the value at KEY is the string VALUE, or a number, true, false
    or null whose JSON text is VALUE (so commandid=5 matches 5 and "5").
    KEY!=VALUE matches every message that KEY=VALUE does not (a missing KEY too)."""

    __slots__ = ("path", "text", "negated")

    def __init__(self, expression: str) -> None:
        key, sep, text = expression.partition("=")
        if not sep:
            raise ExpressionError(f"not a KEY=VALUE expression: {expression!r}")
        self.negated = key.endswith("!")
        if self.negated:
            key = key[:-1]
        if text.startswith("="):
            raise ExpressionError(f"{expression!r}: write KEY=VALUE with one '=' "
                                  f"(e.g. {key}={text.lstrip('=')})")
        bad = _operator_in(key)
        if bad is not None:
            raise ExpressionError(f"{expression!r}: {bad!r} cannot be in a KEY; the operators "
                                  f"are = and != (e.g. class!=getlist)")
        if key.startswith("msg."):
            raise ExpressionError(f"{expression!r}: KEY is a path inside the message, without "
                                  f"'msg.' (e.g. {key[4:]}={text})")
        self.path = split_path(key)
        self.text = text

    def matches(self, message: object) -> bool:
        return self._equal(message) != self.negated

    def _equal(self, message: object) -> bool:
        value = lookup(message, self.path)
        if type(value) is str:
            return value == self.text
        if value is _MISSING or type(value) in (dict, list):
            return False
        if type(value) is int:  # exact, also beyond 64 bits (which orjson cannot write)
            return str(value) == self.text
        return orjson.dumps(value).decode() == self.text


def matches_any(expressions: list[Expression], message: object) -> bool:
    for expression in expressions:
        if expression.matches(message):
            return True
    return False
