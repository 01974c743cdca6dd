"""Data classes made without generating code (lib/check_mail_roundtrip/record.py).

A record behaves as the standard library's data class it replaces: the
checks below hold for both, and the last one compares them directly.
"""

import dataclasses
from typing import Optional

import pytest

from check_mail_roundtrip.record import FrozenInstanceError, field, record, replace
from check_mail_roundtrip.settings import Endpoint


@record(frozen=True)
class Point:
    x: int
    y: int = 0
    secret: Optional[str] = field(default=None, repr=False)
    label: str = field(default="", compare=False)


@record()
class Bag:
    name: str
    items: list[str] = field(default_factory=list)


def test_fields_by_position_and_name_with_defaults():
    assert (Point(1).x, Point(1).y, Point(1).secret) == (1, 0, None)
    p = Point(1, 2, secret="s", label="a")
    assert (p.x, p.y, p.secret, p.label) == (1, 2, "s", "a")
    assert Point(y=5, x=4) == Point(4, 5)


def test_wrong_arguments_are_refused_as_by_a_data_class():
    with pytest.raises(TypeError, match="missing"):
        Point()
    with pytest.raises(TypeError, match="unexpected"):
        Point(1, z=2)
    with pytest.raises(TypeError, match="multiple"):
        Point(1, x=2)
    with pytest.raises(TypeError, match="positional"):
        Point(1, 2, "s", "a", "extra")


def test_default_factories_give_each_instance_its_own():
    a, b = Bag("a"), Bag("b")
    a.items.append("x")
    assert (a.items, b.items) == (["x"], [])
    a.name = "renamed"  # not frozen
    assert a == Bag("renamed", ["x"]) and a != Bag("renamed")


def test_repr_hides_what_is_marked_so():
    assert repr(Point(1, 2, secret="hunter2", label="a")) == "Point(x=1, y=2, label='a')"
    assert "hunter2" not in repr(Endpoint("IMAP", "h", 993, "tls", "u", "hunter2"))


def test_equality_and_hash_leave_out_what_is_not_compared():
    assert Point(1, 2, label="a") == Point(1, 2, label="b")
    assert hash(Point(1, 2, label="a")) == hash(Point(1, 2, label="b"))
    assert Point(1, 2) != Point(1, 3)
    assert Point(1) != (1, 0, None)
    with pytest.raises(TypeError):
        hash(Bag("a"))  # mutable: unhashable, as a data class with eq


def test_frozen_records_refuse_assignment_and_replace_makes_a_copy():
    p = Point(1, 2, secret="s")
    with pytest.raises(FrozenInstanceError):
        p.x = 3
    with pytest.raises(AttributeError):
        del p.y
    q = replace(p, y=7)
    assert (q.x, q.y, q.secret, p.y) == (1, 7, "s", 2)
    with pytest.raises(TypeError):
        replace(p, z=1)


def test_a_record_behaves_as_the_data_class_it_replaces():
    @dataclasses.dataclass(frozen=True)
    class DataPoint:
        x: int
        y: int = 0
        secret: Optional[str] = dataclasses.field(default=None, repr=False)
        label: str = dataclasses.field(default="", compare=False)

    for args, kwargs in [((1,), {}), ((1, 2), {"label": "a"}), ((), {"x": 3, "secret": "s"})]:
        p, d = Point(*args, **kwargs), DataPoint(*args, **kwargs)
        assert repr(p).partition("(")[2] == repr(d).partition("(")[2]
        assert hash(p) == hash(d)
        assert Point.y == DataPoint.y and Point.secret == DataPoint.secret
