"""Data classes made without generating code: :func:`record` and :func:`field`.

``@dataclasses.dataclass`` writes and compiles an ``__init__``, ``__repr__``,
``__eq__`` (and, frozen, ``__setattr__`` and ``__hash__``) for each class when
its module loads: about a millisecond a class, paid by every run of the check
(see docs/explanation/cost.md).  :func:`record` gives a class the same
behaviour from methods shared by all of them: an ``__init__`` taking the
fields by position or name in order, with their defaults and default
factories; a ``__repr__`` without the fields marked ``repr=False``; an
``__eq__`` over the fields not marked ``compare=False`` (an instance equals
only one of the same class); frozen instances refuse assignment
(:class:`FrozenInstanceError`) and hash like a frozen data class, unfrozen
ones with ``__eq__`` are unhashable.  What a class defines itself stays.
Type checkers read ``@record`` as ``@dataclass`` (``dataclass_transform``).
"""

from __future__ import annotations

import sys
from typing import Any, Callable, Optional, TypeVar

if sys.version_info >= (3, 11):
    from typing import dataclass_transform
else:  # pragma: no cover  (type checkers run with 3.11 or later)
    def dataclass_transform(**_kwargs: Any) -> Callable[[Any], Any]:
        return lambda decorator: decorator

_T = TypeVar("_T")
_MISSING: Any = object()


class FrozenInstanceError(AttributeError):
    """Assignment to a field of a frozen record."""


class _Field:
    __slots__ = ("default", "default_factory", "repr", "compare")

    def __init__(self, default: Any, default_factory: Optional[Callable[[], Any]], repr: bool,
                 compare: bool) -> None:
        self.default, self.default_factory, self.repr, self.compare = default, default_factory, repr, compare


def field(*, default: Any = _MISSING, default_factory: Optional[Callable[[], Any]] = None,
          repr: bool = True, compare: bool = True) -> Any:
    """A field's default (or factory of defaults) and whether ``__repr__`` and ``__eq__`` show it."""
    return _Field(default, default_factory, repr, compare)


def _init(self: Any, *args: Any, **kwargs: Any) -> None:
    fields = type(self).__record_fields__
    if len(args) > len(fields):
        raise TypeError("%s() takes %d positional arguments but %d were given"
                        % (type(self).__name__, len(fields), len(args)))
    setattr_ = object.__setattr__
    for i, (name, spec) in enumerate(fields):
        if i < len(args):
            if name in kwargs:
                raise TypeError("%s() got multiple values for argument %r" % (type(self).__name__, name))
            value = args[i]
        elif name in kwargs:
            value = kwargs.pop(name)
        elif spec.default_factory is not None:
            value = spec.default_factory()
        elif spec.default is not _MISSING:
            value = spec.default
        else:
            raise TypeError("%s() missing required argument: %r" % (type(self).__name__, name))
        setattr_(self, name, value)
    if kwargs:
        raise TypeError("%s() got an unexpected keyword argument %r" % (type(self).__name__, next(iter(kwargs))))


def _repr(self: Any) -> str:
    shown = ("%s=%r" % (name, getattr(self, name)) for name, spec in type(self).__record_fields__ if spec.repr)
    return "%s(%s)" % (type(self).__qualname__, ", ".join(shown))


def _compared(self: Any) -> tuple[Any, ...]:
    return tuple(getattr(self, name) for name, spec in type(self).__record_fields__ if spec.compare)


def _eq(self: Any, other: object) -> Any:
    if other.__class__ is not self.__class__:
        return NotImplemented
    return _compared(self) == _compared(other)


def _hash(self: Any) -> int:
    return hash(_compared(self))


def _frozen_setattr(self: Any, name: str, _value: object) -> None:
    raise FrozenInstanceError("cannot assign to field %r" % name)


def _frozen_delattr(self: Any, name: str) -> None:
    raise FrozenInstanceError("cannot delete field %r" % name)


@dataclass_transform(field_specifiers=(field,))
def record(*, frozen: bool = False, eq: bool = True) -> Callable[[type[_T]], type[_T]]:
    """Make the decorated class a data class (see the module doc)."""

    def make(cls: type[_T]) -> type[_T]:
        fields: dict[str, _Field] = {}
        for base in reversed(cls.__mro__[1:]):
            fields.update(getattr(base, "__record_own_fields__", ()))
        own = []
        for name in cls.__dict__.get("__annotations__", {}):
            value = cls.__dict__.get(name, _MISSING)
            spec = value if isinstance(value, _Field) else _Field(value, None, True, True)
            if spec.default is _MISSING:
                if value is not _MISSING:
                    delattr(cls, name)
            else:
                setattr(cls, name, spec.default)
            own.append((name, spec))
        fields.update(own)  # an inherited field keeps its place, as in a data class
        for name, value in (("__record_own_fields__", tuple(own)), ("__record_fields__", tuple(fields.items()))):
            setattr(cls, name, value)
        methods: dict[str, Any] = {"__init__": _init, "__repr__": _repr}
        if eq:
            methods["__eq__"] = _eq
            methods["__hash__"] = _hash if frozen else None
        if frozen:
            methods["__setattr__"] = _frozen_setattr
            methods["__delattr__"] = _frozen_delattr
        for name, method in methods.items():
            if name not in cls.__dict__:
                setattr(cls, name, method)
        return cls

    return make


def replace(obj: _T, **changes: Any) -> _T:
    """A copy of the record *obj* with the fields named in *changes* changed."""
    values = {name: getattr(obj, name) for name, _spec in type(obj).__record_fields__}  # type: ignore[attr-defined]
    unknown = set(changes) - set(values)
    if unknown:
        raise TypeError("%s has no field %r" % (type(obj).__name__, sorted(unknown)[0]))
    values.update(changes)
    return type(obj)(**values)
