"""Header rules: one way to say "a series whose headers look like this", shared by the site's
phase-convention rules (:mod:`dicom_io.convention`) and the node's routing rules
(:mod:`plugin.service.routing`), and one way to report a rules or config file that is wrong.

A rule is a set of conditions on a series' facts; it matches when every condition holds. The
condition a key makes is the same in every file (:data:`KEYS`):

* regular expressions, ``re.search`` in the value (a multi-valued value joined with ``\\``):
  ``manufacturer``, ``model`` (ManufacturerModelName), ``software`` (SoftwareVersions),
  ``series_description``, ``protocol_name``;
* one of the listed strings (a string or a list; surrounding spaces ignored): ``vendor`` (the
  normalised vendor: GE | Philips | Siemens | Canon | unknown), ``modality`` (any case),
  ``calling_ae`` / ``called_ae`` (the association that sent the series);
* all of the listed strings among the values (any case): ``image_type``.

One difference is kept from the files' history: the routing rules search ``manufacturer``
without regard to case (:func:`header_rule` ``ignore_case``); elsewhere a pattern says so itself
with ``(?i)``. A fact the series does not have (``None``) never satisfies a condition on it. Facts are read by
attribute name (:data:`Key.attr`) from any object: a convention view of a frame, the node's
``SeriesFacts``. Each file accepts the keys that make sense for it (convention rules: header keys
only, so ``inspect`` on a folder and the node decide alike).

Config files are validated by pydantic models built on :data:`STRICT_TABLE`; :func:`describe_errors`
turns a ``ValidationError`` into one line per problem naming the file, the key path and the
problem, e.g. ``node.toml: [[rules]][2] "gre".match.series_description: not a valid regular
expression: missing ), unterminated subpattern at position 0``.
"""
from __future__ import annotations

import re
import types
import typing
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any, Iterable, Mapping, Optional, Sequence

from pydantic import AfterValidator, BeforeValidator, ConfigDict, StrictStr, ValidationError

# Config tables: unknown keys are errors; the models use Strict* value types, so a value is never
# silently converted ("104" is not a port, true is not 1).
STRICT_TABLE = ConfigDict(extra="forbid")


class Test(StrEnum):
    """How a key's condition compares the rule's value with the series' fact."""

    REGEX = "regular expression"
    ONE_OF = "one of"
    ALL_OF = "all of"


@dataclass(frozen=True)
class Key:
    attr: str                   # the fact's attribute name
    test: Test
    ignore_case: bool = False   # for ONE_OF / ALL_OF (a regular expression says so itself: (?i))


KEYS: dict[str, Key] = {
    "manufacturer": Key("manufacturer", Test.REGEX),
    "model": Key("model", Test.REGEX),
    "software": Key("software_versions", Test.REGEX),
    "series_description": Key("series_description", Test.REGEX),
    "protocol_name": Key("protocol_name", Test.REGEX),
    "vendor": Key("vendor", Test.ONE_OF),
    "modality": Key("modality", Test.ONE_OF, ignore_case=True),
    "image_type": Key("image_type", Test.ALL_OF, ignore_case=True),
    "calling_ae": Key("calling_ae", Test.ONE_OF),
    "called_ae": Key("called_ae", Test.ONE_OF),
}


@dataclass(frozen=True)
class Condition:
    key: str
    pattern: Optional[re.Pattern] = None    # REGEX
    values: tuple[str, ...] = ()            # ONE_OF / ALL_OF

    def holds(self, facts: Any) -> bool:
        spec = KEYS[self.key]
        value = getattr(facts, spec.attr, None)
        if value is None:
            return False
        many = tuple(str(v) for v in value) if isinstance(value, (tuple, list)) else (str(value),)
        if spec.test is Test.REGEX:
            return self.pattern.search("\\".join(many)) is not None
        norm = (lambda s: s.strip().upper()) if spec.ignore_case else (lambda s: s.strip())
        have = {norm(v) for v in many}
        want = {norm(v) for v in self.values}
        return bool(have & want) if spec.test is Test.ONE_OF else want <= have


@dataclass(frozen=True)
class HeaderRule:
    """All of ``conditions`` must hold; no conditions matches every series."""

    conditions: tuple[Condition, ...] = ()

    def matches(self, facts: Any) -> bool:
        return all(c.holds(facts) for c in self.conditions)


def header_rule(fields: Mapping[str, Any], *, ignore_case: Iterable[str] = ()) -> HeaderRule:
    """The rule made by the given keys of a validated table (``None`` values are absent keys).
    ``ignore_case``: regular-expression keys searched without regard to case (the routing file's
    ``manufacturer``, as it always was)."""
    nocase = set(ignore_case)
    conditions = []
    for key, value in fields.items():
        if value is None or key not in KEYS:
            continue
        if KEYS[key].test is Test.REGEX:
            conditions.append(Condition(key, pattern=re.compile(value, re.IGNORECASE if key in nocase else 0)))
        else:
            conditions.append(Condition(key, values=(value,) if isinstance(value, str) else tuple(value)))
    return HeaderRule(tuple(conditions))


# -- value types for the rule keys of pydantic models ------------------------------------------
def _valid_regex(text: str) -> str:
    try:
        re.compile(text)
    except re.error as exc:
        raise ValueError(f"not a valid regular expression: {exc}") from None
    return text


def _one_or_more(value: Any) -> Any:
    if isinstance(value, str):
        return [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"expected a string or a list of strings, got {value!r}")
    return value


Regex = Annotated[StrictStr, AfterValidator(_valid_regex)]
"""A regular expression (checked when the file is read)."""
Strings = Annotated[tuple[StrictStr, ...], BeforeValidator(_one_or_more)]
"""A string or a list of strings."""


# -- errors that name the file, the key path and the problem ----------------------------------
class KeyProblem(ValueError):
    """Raised by a validator about a key below the one it validates: ``at`` is the rest of the path
    (e.g. ``("rules", 2, "destinations")``), so the message names the exact key."""

    def __init__(self, at: Sequence[str | int], problem: str):
        self.at = tuple(at)
        self.problem = problem
        super().__init__(problem)


def _fields(tp: Any) -> dict[str, Any]:
    """Key name -> annotation of a pydantic model or pydantic dataclass type, else {}. Fields that
    are not keys of the file (``init=False``, or ``exclude=True``) are left out."""
    found = getattr(tp, "__pydantic_fields__", None) or {}
    return {name: f.annotation for name, f in found.items() if f.init is not False and not f.exclude}


def _unwrap(tp: Any) -> Any:
    """The model type inside Optional[...], Annotated[...] (other unions are left alone)."""
    while True:
        origin = typing.get_origin(tp)
        if origin is Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            if len(args) != 1:
                return tp
            tp = args[0]
        else:
            return tp


def _path(model: Any, loc: Sequence[str | int], doc: Any, tables: Iterable[str]) -> tuple[str, Any]:
    """(printable key path, the type at its end). Positions in arrays count from 1; an array of
    tables shows as ``[[rules]][2] "name"`` (the table's ``name`` when it has one)."""
    text, tp, node = "", model, doc
    for key in loc:
        inner = _unwrap(tp)
        args = typing.get_args(inner)
        if isinstance(key, int):
            item = node[key] if isinstance(node, list) and key < len(node) else None
            name = item.get("name") if isinstance(item, dict) else None
            text += f"[{key + 1}]" + (f' "{name}"' if isinstance(name, str) else "")
            tp, node = (args[0] if args else None), item
            continue
        fields = _fields(inner)
        if key in fields:
            tp = fields[key]
        else:   # a table of tables (destinations.pacs) or a key the model does not know
            tp = args[1] if typing.get_origin(inner) is dict and len(args) == 2 else None
        text += ("." if text else "") + (f"[[{key}]]" if key in tables else str(key))
        node = node.get(key) if isinstance(node, dict) else None
    return text, tp


def describe_errors(exc: ValidationError, model: Any, doc: Any, *, file: str,
                    tables: Iterable[str] = ()) -> str:
    """One line per problem: ``FILE: KEY.PATH: PROBLEM``. ``model``: the validated type (to list
    the allowed keys of a table); ``doc``: the parsed document (to name rules by their ``name``);
    ``tables``: keys that are arrays of tables (``[[rules]]``), shown that way."""
    return "\n".join(f"{file}: {line}" for line in key_problems(exc, model, doc, tables=tables))


def key_problems(exc: ValidationError, model: Any, doc: Any, *, tables: Iterable[str] = ()) -> list[str]:
    """``KEY.PATH: PROBLEM`` for each error of ``exc`` (see :func:`describe_errors`)."""
    lines = []
    for err in exc.errors(include_url=False):
        loc = list(err["loc"])
        kind, problem = err["type"], err["msg"]
        if kind in ("extra_forbidden", "unexpected_keyword_argument"):
            parent, tp = _path(model, loc[:-1], doc, tables)
            allowed = sorted(_fields(_unwrap(tp)))
            lines.append(f"{(parent + '.' if parent else '')}{loc[-1]}: unknown key"
                         + (f" (allowed: {', '.join(allowed)})" if allowed else ""))
            continue
        cause = (err.get("ctx") or {}).get("error")
        if isinstance(cause, KeyProblem):
            loc, problem = loc + list(cause.at), cause.problem
        elif kind == "value_error":
            problem = str(cause) if cause is not None else problem.removeprefix("Value error, ")
        elif kind == "missing":
            problem = "required"
        elif kind in ("list_type", "tuple_type") and loc and loc[-1] in tables:
            problem = f"must be an array of tables ([[{loc[-1]}]]), got {err.get('input')!r}"
        elif not isinstance(err.get("input"), (dict, list)):
            problem = f"{problem[0].lower()}{problem[1:]}, got {err.get('input')!r}"
        where, _ = _path(model, loc, doc, tables)
        lines.append(f"{where or 'top level'}: {problem}")
    return lines
