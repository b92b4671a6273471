"""State API filters: parsing, typing, and the errors a user sees for a bad one."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from freight.core.filters import (
    BOOL,
    NUMBER,
    TEXT,
    TIME,
    Field,
    Filter,
    FilterError,
    compile_filters,
    normalize,
    parse_filter,
    parse_time,
)

FIELDS = {
    "name": Field(TEXT),
    "state": Field(TEXT, ("FINISHED", "FAILED")),
    "attempt": Field(NUMBER),
    "start_time": Field(TIME),
    "sealed": Field(BOOL),
}
ROWS = [
    {"name": "train_a", "state": "FINISHED", "attempt": 0, "start_time": 100.0, "sealed": True},
    {"name": "train_b", "state": "FAILED", "attempt": 2, "start_time": 200.0, "sealed": False},
    {"name": "eval", "state": "FAILED", "attempt": 1, "start_time": 0.0, "sealed": True},
]


def select(*filters: object) -> list[str]:
    pred = compile_filters(filters, FIELDS, "tasks", lambda k: lambda row: row.get(k))
    return [r["name"] for r in ROWS if pred is None or pred(r)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("state=FAILED", Filter("state", "=", "FAILED")),
        ("state==FAILED", Filter("state", "=", "FAILED")),
        ("state!=FAILED", Filter("state", "!=", "FAILED")),
        ("name~^tr", Filter("name", "~", "^tr")),
        ("name!~^tr", Filter("name", "!~", "^tr")),
        ("attempt>0", Filter("attempt", ">", "0")),
        ("attempt>=1", Filter("attempt", ">=", "1")),
        ("attempt<=1", Filter("attempt", "<=", "1")),
        (" start_time < 2024-01-01T00:00:00Z ", Filter("start_time", "<", "2024-01-01T00:00:00Z")),
        ("actor_id=", Filter("actor_id", "=", "")),
    ],
)
def test_parse_every_operator(text: str, expected: Filter) -> None:
    assert parse_filter(text) == expected


def test_unparseable_filter_says_how_to_write_one() -> None:
    with pytest.raises(FilterError, match=r"KEY OP VALUE.*state=FAILED"):
        parse_filter("state")


def test_equality_inequality_and_regex() -> None:
    assert select("state=FAILED") == ["train_b", "eval"]
    assert select("state!=FAILED") == ["train_a"]
    assert select("name~^train") == ["train_a", "train_b"]
    assert select("name~_b$", "state=FAILED") == ["train_b"]


def test_negated_regex_keeps_the_rows_it_does_not_find() -> None:
    assert select("name!~^train") == ["eval"]
    assert select("name!~_b$", "state=FAILED") == ["eval"]
    assert select(("name", "!~", "a")) == []
    with pytest.raises(
        FilterError, match=r"!~ \(negated regex\) applies to text keys; attempt is a number"
    ):
        select("attempt!~1")
    with pytest.raises(FilterError, match=r"name!~\(: bad regular expression"):
        select("name!~(")
    with pytest.raises(FilterError, match=r"KEY OP VALUE with OP one of .*!~"):
        parse_filter("name")


def test_enumerated_values_are_case_insensitive_and_checked() -> None:
    assert select("state=failed") == ["train_b", "eval"]
    with pytest.raises(FilterError, match=r"valid values: FINISHED, FAILED"):
        select("state=FAILD")


def test_numbers_compare_numerically() -> None:
    assert select("attempt>0") == ["train_b", "eval"]
    assert select("attempt>=2") == ["train_b"]
    assert select("attempt<1") == ["train_a"]
    assert select("attempt=1.0") == ["eval"]
    with pytest.raises(FilterError, match=r"'two' is not a number"):
        select("attempt>two")


def test_times_compare_as_unix_seconds_or_iso() -> None:
    assert select("start_time>150") == ["train_b"]
    assert select("start_time>=1970-01-01T00:01:40+00:00") == ["train_a", "train_b"]
    with pytest.raises(FilterError, match=r"not a time: give unix seconds"):
        select("start_time>yesterday")


def test_parse_time_forms() -> None:
    assert parse_time("1700000000.5") == 1700000000.5
    iso = datetime(2024, 5, 1, 12, 0, tzinfo=UTC).timestamp()
    assert parse_time("2024-05-01T12:00:00Z") == iso
    assert parse_time("2024-05-01T12:00:00+00:00") == iso
    assert parse_time("-5m", now=1000.0) == 700.0
    assert parse_time("-2h", now=10000.0) == 2800.0


def test_bool_keys() -> None:
    assert select("sealed=true") == ["train_a", "eval"]
    assert select("sealed!=true") == ["train_b"]
    with pytest.raises(FilterError, match=r"not true or false"):
        select("sealed=maybe")


def test_unknown_key_lists_the_valid_ones() -> None:
    with pytest.raises(FilterError) as err:
        select("colour=red")
    assert "unknown filter key 'colour' for tasks" in str(err.value)
    assert "valid keys: attempt, name, sealed, start_time, state" in str(err.value)


def test_a_catastrophic_regex_runs_in_linear_time() -> None:
    # Python's backtracking engine takes 2**40 steps on this; RE2 one pass per row.
    rows = [{"name": "a" * 40}, {"name": "a" * 40 + "b"}]
    pred = compile_filters(["name~^(a+)+b"], FIELDS, "tasks", lambda k: lambda row: row.get(k))
    assert pred is not None
    assert [pred(r) for r in rows] == [False, True]


def test_a_regex_beyond_re2_is_refused_saying_why() -> None:
    with pytest.raises(FilterError, match=r"name~\(a\)\\1: bad regular expression: .*RE2 syntax"):
        select(r"name~(a)\1")
    with pytest.raises(FilterError, match="lookarounds"):
        select("name~a(?=b)")


def test_bad_regex_is_reported() -> None:
    with pytest.raises(FilterError, match=r"name~\(\(: bad regular expression"):
        select("name~((")


def test_ordering_needs_a_numeric_key() -> None:
    with pytest.raises(FilterError, match=r"> compares numbers and times, and name is a text"):
        select("name>a")
    with pytest.raises(FilterError, match=r"regex\) applies to text keys"):
        select("attempt~1")


def test_triples_and_bad_shapes() -> None:
    assert normalize(("state", "==", "FAILED")) == Filter("state", "=", "FAILED")
    assert normalize(["attempt", ">", 1]) == Filter("attempt", ">", "1")
    assert select(("attempt", ">", 1)) == ["train_b"]
    with pytest.raises(FilterError, match=r"operator one of"):
        normalize(("state", "in", "x"))
    with pytest.raises(FilterError, match=r"'key=value' strings or \(key, op, value\) triples"):
        normalize(42)


def test_no_filters_compile_to_none() -> None:
    assert compile_filters([], FIELDS, "tasks", lambda k: lambda r: r[k]) is None
