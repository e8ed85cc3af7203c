"""Typed JSON conversion, used on both sides of send().

On the client it turns the input dataclass into JSON and the job's output back into the
function's return type. The same source (this file, verbatim) is also embedded in the
script that send() ships, where it rebuilds the input dataclass from /input/data.json and
turns the function's return value into /output/result.json. So it must stay standard
library only, and every name here starts with _tako_ (it shares a namespace with user code).
"""
import dataclasses as _tako_dc
import enum as _tako_enum
import typing as _tako_typing


def _tako_hints(cls):
    try:
        return _tako_typing.get_type_hints(cls)
    except Exception:  # string annotations that cannot be resolved here
        return {f.name: f.type for f in _tako_dc.fields(cls)}


def _tako_to_json(value):
    """A dataclass (nested), list, tuple, set, dict, Enum or JSON scalar → JSON value."""
    if _tako_dc.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _tako_to_json(getattr(value, f.name)) for f in _tako_dc.fields(value)}
    if isinstance(value, _tako_enum.Enum):
        return _tako_to_json(value.value)
    if isinstance(value, dict):
        return {str(k): _tako_to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_tako_to_json(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"{type(value).__name__} is not JSON-serializable")


def _tako_from_json(tp, value):
    """A JSON value → an instance of type tp (dataclasses, List/Dict/Optional/Union/Tuple)."""
    if tp is None or tp is type(None):
        if value is not None:
            raise TypeError(f"expected null, got {type(value).__name__}")
        return None
    if tp is _tako_typing.Any or isinstance(tp, (str, _tako_typing.TypeVar)):
        return value
    origin = _tako_typing.get_origin(tp)
    args = _tako_typing.get_args(tp)
    if origin is _tako_typing.Union or type(tp).__name__ == "UnionType":
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _tako_from_json(a, value)
            except (TypeError, ValueError, KeyError) as e:
                errors.append(str(e))
        raise TypeError(f"{value!r} matches none of {tp}: {'; '.join(errors)}")
    if origin in (list, set, frozenset) or tp in (list, set, frozenset):
        if not isinstance(value, list):
            raise TypeError(f"expected a list, got {type(value).__name__}")
        items = [_tako_from_json(args[0], v) if args else v for v in value]
        return (origin or tp)(items) if (origin or tp) is not list else items
    if origin is tuple or tp is tuple:
        if not isinstance(value, list):
            raise TypeError(f"expected a list, got {type(value).__name__}")
        if args and len(args) == 2 and args[1] is Ellipsis:
            return tuple(_tako_from_json(args[0], v) for v in value)
        if args:
            if len(args) != len(value):
                raise TypeError(f"expected {len(args)} items, got {len(value)}")
            return tuple(_tako_from_json(a, v) for a, v in zip(args, value))
        return tuple(value)
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise TypeError(f"expected an object, got {type(value).__name__}")
        if len(args) == 2:
            return {k: _tako_from_json(args[1], v) for k, v in value.items()}
        return dict(value)
    if origin is not None:  # Literal, Annotated, other generics: take the value as it is
        return value
    if isinstance(tp, type) and _tako_dc.is_dataclass(tp):
        if not isinstance(value, dict):
            raise TypeError(f"expected an object for {tp.__name__}, got {type(value).__name__}")
        hints = _tako_hints(tp)
        kwargs = {}
        for f in _tako_dc.fields(tp):
            if not f.init:
                continue
            if f.name in value:
                kwargs[f.name] = _tako_from_json(hints.get(f.name, _tako_typing.Any), value[f.name])
            elif f.default is _tako_dc.MISSING and f.default_factory is _tako_dc.MISSING:
                raise TypeError(f"{tp.__name__}: missing field {f.name!r}")
        return tp(**kwargs)
    if isinstance(tp, type) and issubclass(tp, _tako_enum.Enum):
        return tp(value)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"expected a number, got {type(value).__name__}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise TypeError(f"expected an integer, got {type(value).__name__}")
        return value
    if tp in (str, bool):
        if not isinstance(value, tp):
            raise TypeError(f"expected {tp.__name__}, got {type(value).__name__}")
        return value
    if tp is object:
        return value
    if isinstance(tp, type):
        if isinstance(value, tp):
            return value
        raise TypeError(f"expected {tp.__name__}, got {type(value).__name__}")
    return value
