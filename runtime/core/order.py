"""State API ordering: ``sort_by`` a field of the kind (``descending`` or not), paged by cursors.

A listing has a default order (each kind's: the order the head first heard of its rows, or their
time); ``newest_first`` reverses it. ``sort_by`` orders the rows by one field's value instead, as
``kubectl get --sort-by``: numbers as numbers, text as text (numbers before text when a field
holds both), and a row without a value last whichever the direction: no value, empty text, or a
time of 0 (a time not reached yet: the end of a running task). Rows with equal values keep the
default order between them (reversed by ``newest_first``), so the order is total and a cursor
can hold the last row's (value, default key): the next page starts at the first row after it,
which neither repeats nor skips a row while rows are added or removed. (A row whose value changes
moves, as it would in any sorted view.)

The module is pure (no I/O, no runtime imports): the head sorts with it, and clients check a
field name with the same code.
"""

from __future__ import annotations

import json
from bisect import bisect_left
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple, TypeVar

from .filters import TIME, Field, FilterError

Value = tuple[int, Any]  # (rank, value): numbers (rank 0) before text (1) before the rest (2)
_T = TypeVar("_T")


class Sorting(NamedTuple):
    """How to order a listing: by the value ``get`` reads from a row, ``descending`` or not."""

    field: str
    get: Callable[[Any], Any]
    is_time: bool = False  # a time of 0 is no value
    descending: bool = False

    def value(self, row: Any) -> Value | None:
        """The row's value as the order compares it (None: it has none)."""
        return _value(self.get(row), self.is_time)


def _value(raw: Any, is_time: bool) -> Value | None:
    if raw is None or raw == "":
        return None
    if isinstance(raw, (bool, int, float)):
        if is_time and not raw:
            return None  # a time of 0: not reached yet
        return (0, raw)
    if isinstance(raw, str):
        return (1, raw)
    # Lists and maps (a node's resources) compare by their JSON text: some order, always the same.
    return (2, json.dumps(raw, sort_keys=True, default=str))


def compile_sorting(
    sort_by: str,
    descending: bool,
    fields: Mapping[str, Field],
    kind: str,
    getter: Callable[[str], Callable[[Any], Any]],
) -> Sorting | None:
    """The :class:`Sorting` for ``sort_by`` (None: ``""``, the default order); a
    :class:`~freight.core.filters.FilterError` (INVALID_ARGUMENT) naming the fields allowed when
    the kind has no such field. ``getter(key)`` reads the field from a row."""
    if not sort_by:
        if descending:
            raise FilterError(
                "descending orders by a field: give sort_by too (for the default order "
                "reversed, use newest_first)"
            )
        return None
    field = fields.get(sort_by)
    if field is None:
        raise FilterError(
            f"cannot sort {kind} by {sort_by!r}: it is not a field of {kind}; sort by one of "
            f"{', '.join(sorted(fields))}"
        )
    return Sorting(sort_by, getter(sort_by), field.type == TIME, descending)


def order_name(kind: str, sorting: Sorting | None, newest_first: bool) -> str:
    """What a cursor is tied to: the kind and the order of the listing it pages through."""
    name = kind
    if sorting is not None:
        name += f" by {sorting.field}" + (" descending" if sorting.descending else "")
    return name + (" newest first" if newest_first else "")


_NUMBERS = frozenset({bool, int, float, type(None)})
_TEXTS = frozenset({str, type(None)})


def sort_items(items: Sequence[_T], sorting: Sorting, get: Callable[[_T], Any]) -> list[_T]:
    """``items`` (in the default order, reversed by newest first) ordered by the value ``get``
    reads from each; equal values keep the order given (the sort is stable, reversed too), and
    the items without a value come last.

    A field of one type (the usual case: 100,000 task names) sorts by its raw values, which
    order as their :data:`Value` do, with no tuple made per row."""
    raws = list(map(get, items))
    types = set(map(type, raws))
    keys: list[Any] = raws
    if types <= _TEXTS or (types <= _NUMBERS and sorting.is_time):
        present = [i for i, v in enumerate(raws) if v]  # None, "", a time of 0: no value
    elif types <= _NUMBERS:
        present = [i for i, v in enumerate(raws) if v is not None]
    else:  # mixed types: by (rank, value)
        keys = [_value(v, sorting.is_time) for v in raws]
        present = [i for i, v in enumerate(keys) if v is not None]
    shown = set(present) if len(present) < len(raws) else None
    present.sort(key=keys.__getitem__, reverse=sorting.descending)
    if shown is not None:
        present += [i for i in range(len(raws)) if i not in shown]
    return [items[i] for i in present]


def comes_after(
    value: Value | None,
    tie: Any,
    after: tuple[Value | None, Any],
    descending: bool,
    newest_first: bool,
) -> bool:
    """Whether a row with ``value`` and default key ``tie`` comes strictly after the cursor
    ``after`` = (value, tie) in the order :func:`sort_items` makes."""
    cursor_value, cursor_tie = after
    if value != cursor_value:
        if value is None:
            return True  # no value: last
        if cursor_value is None:
            return False
        return (value > cursor_value) != descending
    return tie != cursor_tie and (tie > cursor_tie) != newest_first


def start_after(
    ordered: Sequence[_T],
    key: Callable[[_T], tuple[Value | None, Any]],
    after: tuple[Value | None, Any],
    descending: bool,
    newest_first: bool,
) -> int:
    """The index of the first of ``ordered`` (as :func:`sort_items` ordered them) that comes
    after the cursor ``after``: a binary search, the rows after it being a suffix."""
    return bisect_left(
        ordered,
        True,
        key=lambda item: comes_after(*key(item), after, descending, newest_first),
    )


def cursor_key(raw: Any) -> tuple[Value | None, Any]:
    """A sorted listing's cursor key back from its JSON (lists again as tuples); ValueError
    when it is not one."""
    if not isinstance(raw, list) or len(raw) != 2:
        raise ValueError("not the cursor of a sorted listing")
    value, tie = raw
    if value is not None:
        if not isinstance(value, list) or len(value) != 2 or value[0] not in (0, 1, 2):
            raise ValueError("not the cursor of a sorted listing")
        value = (value[0], value[1])
    return value, tie
