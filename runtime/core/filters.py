"""State API filters: parse ``key=value`` style conditions and compile them into one predicate.

A filter is ``key op value`` with ``op`` one of ``=`` (or ``==``), ``!=``, ``~`` (regular
expression search), ``!~`` (the rows the regular expression does not find), ``>``, ``<``, ``>=``,
``<=``. Each kind of state row declares its keys and their types (:class:`Field`): text keys take
``=``, ``!=``, ``~`` and ``!~``; number and time keys compare
numerically (times as unix seconds, ISO-8601, or relative to now like ``-5m``); bool keys take
``=``/``!=`` with true/false. Regular expressions run on RE2, whose time is linear in the text:
any token holder may send one, and a backtracking engine would let ``^(a+)+b`` over a few long
names hold the head's event loop for minutes. RE2 has no backreferences or lookarounds; a
pattern that uses them is refused with a message that says so. Every mistake raises :class:`FilterError` (a ``ValueError``, which the
state service turns into ``INVALID_ARGUMENT``) saying what was wrong and what is valid.

The module is pure (no I/O, no runtime imports), so clients parse with the same code the head uses.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

import re2

TEXT, NUMBER, TIME, BOOL = "text", "number", "time", "bool"
OPS = ("=", "!=", "~", "!~", ">", "<", ">=", "<=")
_REGEX_OPS = ("~", "!~")
_ORDER_OPS = (">", "<", ">=", "<=")
_FILTER_RE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(>=|<=|!=|!~|==|=|~|>|<)(.*)$", re.S)
_RELATIVE_RE = re.compile(r"^-?\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)$")  # "-5m" or "5m": ago
_UNIT_S = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_TRUE, _FALSE = ("true", "1", "yes"), ("false", "0", "no")
_REGEX_SPECIAL = frozenset("\\.+*?()|[]{}^$")  # RE2's; every other character stands for itself
MEMO_MAX = 200_000  # texts whose match a compiled regex filter remembers (one request's)
_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # a bad pattern is the caller's error, not the head's log
_RE2_OPTIONS.never_capture = True  # only whether it matches is asked

Row = Any
Predicate = Callable[[Row], bool]


class FilterError(ValueError):
    """A filter that cannot be applied; the message says why and what would work."""


@dataclass(frozen=True)
class Field:
    """One filterable key of a kind: its type and, for enumerations, the allowed values."""

    type: str = TEXT
    choices: tuple[str, ...] = ()


class Filter(NamedTuple):
    key: str
    op: str
    value: str


def parse_filter(text: str) -> Filter:
    """Parse ``"state=FAILED"``, ``"name~^train"``, ``"attempt>0"`` ... into a :class:`Filter`."""
    if not isinstance(text, str):
        raise FilterError(f"a filter must be a string like 'state=FAILED', got {text!r}")
    found = _FILTER_RE.match(text)
    if not found:
        raise FilterError(
            f"cannot parse filter {text!r}: write KEY OP VALUE with OP one of "
            f"{' '.join(OPS)} (for example state=FAILED, name~^train, name!~^train, attempt>0)"
        )
    key, op, value = found.groups()
    return Filter(key, "=" if op == "==" else op, value.strip())


def normalize(item: Any) -> Filter:
    """A filter given as a string or as a ``(key, op, value)`` triple, checked for shape."""
    if isinstance(item, str):
        return parse_filter(item)
    if isinstance(item, (tuple, list)) and len(item) == 3:
        key, op, value = item
        op = "=" if op == "==" else op
        if not isinstance(key, str) or op not in OPS:
            raise FilterError(
                f"bad filter {item!r}: the key must be a string and the operator one of "
                f"{' '.join(OPS)}"
            )
        return Filter(key, op, value if isinstance(value, str) else str(value))
    raise FilterError(
        f"bad filter {item!r}: give 'key=value' strings or (key, op, value) triples, "
        "e.g. ['state=FAILED'] or [('state', '=', 'FAILED')]"
    )


def parse_time(text: str, now: float | None = None) -> float:
    """Unix seconds from ``"1700000000.5"``, ISO-8601 (naive: local time), or a duration
    ago: ``"5m"`` or ``"-5m"`` (``s``, ``m``, ``h``, ``d``)."""
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    rel = _RELATIVE_RE.match(text)
    if rel:
        return (time.time() if now is None else now) - float(rel.group(1)) * _UNIT_S[rel.group(2)]
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise FilterError(
            f"{text!r} is not a time: give unix seconds (1700000000), ISO-8601 "
            "(2024-05-01T12:00:00Z) or a time relative to now (-30s, -5m, -2h, -1d)"
        ) from None


def _number(key: str, value: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise FilterError(f"filter {key}: {value!r} is not a number") from None


def _bool(key: str, value: str) -> bool:
    low = value.lower()
    if low in _TRUE or low in _FALSE:
        return low in _TRUE
    raise FilterError(f"filter {key}: {value!r} is not true or false")


def compile_regex(key: str, pattern: str, op: str = "~") -> Callable[[str], Any]:
    """The ``search`` of ``pattern`` compiled by RE2 (linear time, whatever the pattern)."""
    try:
        return re2.compile(pattern, options=_RE2_OPTIONS).search  # type: ignore[no-any-return]
    except re2.error as e:
        why = e.args[0].decode(errors="replace") if e.args and isinstance(e.args[0], bytes) else e
        raise FilterError(
            f"filter {key}{op}{pattern}: bad regular expression: {why} (patterns are RE2 syntax: "
            "no backreferences or lookarounds; see https://github.com/google/re2/wiki/Syntax)"
        ) from None


def finder(pattern: str, search: Callable[[str], Any]) -> Callable[[str], bool]:
    """Whether ``pattern`` (``search``: its RE2 search) is found in a text, fast over many rows:
    a pattern without special characters (``train``, the inspector's bare word) is a substring
    test; any other remembers its answer for each text seen (up to :data:`MEMO_MAX`), since many
    rows share one text (task names). Each call into RE2 costs microseconds of Python around
    it: a second for 100,000 task names."""
    if not _REGEX_SPECIAL.intersection(pattern):
        return lambda text: pattern in text
    seen: dict[str, bool] = {}

    def found(text: str) -> bool:
        hit = seen.get(text)
        if hit is None:
            hit = search(text) is not None
            if len(seen) < MEMO_MAX:
                seen[text] = hit
        return hit

    return found


def _one(f: Filter, field: Field, get: Callable[[Row], Any], kind: str) -> Predicate:
    key, op, raw = f
    if op in _REGEX_OPS:
        if field.type != TEXT:
            raise FilterError(
                f"filter {key}{op}...: {op} ({'negated ' if op == '!~' else ''}regex) applies "
                f"to text keys; {key} is a {field.type}"
            )
        found = finder(raw, compile_regex(key, raw, op))
        if op == "!~":
            return lambda row: not found(get(row) or "")
        return lambda row: found(get(row) or "")
    if op in _ORDER_OPS and field.type not in (NUMBER, TIME):
        raise FilterError(
            f"filter {key}{op}{raw}: {op} compares numbers and times, and {key} is a {field.type}; "
            f"use = != ~ or !~ on it"
        )
    value: Any
    if field.type == NUMBER:
        value = _number(key, raw)
    elif field.type == TIME:
        value = parse_time(raw)
    elif field.type == BOOL:
        value = _bool(key, raw)
    else:
        value = raw
        if field.choices:  # matched without regard to case: state=failed means FAILED
            value = next((c for c in field.choices if c.upper() == raw.upper()), None)
            if value is None:
                raise FilterError(
                    f"filter {key}{op}{raw}: {raw!r} is not a {kind} {key}; "
                    f"valid values: {', '.join(field.choices)}"
                )
    if op == "=":
        return lambda row: get(row) == value
    if op == "!=":
        return lambda row: get(row) != value
    if op == ">":
        return lambda row: (get(row) or 0) > value
    if op == "<":
        return lambda row: (get(row) or 0) < value
    if op == ">=":
        return lambda row: (get(row) or 0) >= value
    return lambda row: (get(row) or 0) <= value


def compile_filters(
    filters: Iterable[Any],
    fields: Mapping[str, Field],
    kind: str,
    getter: Callable[[str], Callable[[Row], Any]],
) -> Predicate | None:
    """One predicate that passes rows matching every filter; None when there are no filters.

    ``getter(key)`` returns a function reading that key from a row (an attribute or dict getter).
    """
    preds: list[Predicate] = []
    for item in filters:
        f = normalize(item)
        field = fields.get(f.key)
        if field is None:
            raise FilterError(
                f"unknown filter key {f.key!r} for {kind}; valid keys: {', '.join(sorted(fields))}"
            )
        preds.append(_one(f, field, getter(f.key), kind))
    if not preds:
        return None
    if len(preds) == 1:
        return preds[0]
    if len(preds) == 2:
        a, b = preds
        return lambda row: a(row) and b(row)

    def every(row: Row) -> bool:
        return all(p(row) for p in preds)

    return every
