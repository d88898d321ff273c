"""Phase convention (handedness) per acquisition: the paper's vendor table, site overrides, and
the rule that decided.

Default table (border-slice phase paper, ``../shared/seeds/000_*``: "Paramagnetic CMBs appear
dark ... in the right-handed system, which is used by vendors such as GE Healthcare and Philips
Healthcare ... left-handed system, which is used by vendors such as Siemens and Canon"):
GE and Philips right-handed (paramagnetic dark), Siemens and Canon left-handed (paramagnetic
bright). Public QSM toolboxes flip GE relative to Siemens but treat raw Philips phase like
Siemens, and filtered-phase products may be flipped for display, so a site can override the
table with rules in a TOML file; the first rule that matches wins. An unknown vendor gives
``unknown`` (the analysis is then indeterminate, never a guess).

Site rules file (TOML, see ``dicom_io/convention_rules.example.toml``)::

    [[rule]]
    name = "philips-swip-flipped"          # required, unique
    convention = "left-handed"             # right-handed | left-handed | unknown
    manufacturer = "(?i)philips"           # regular expressions (re.search); all given must match
    model = "Ingenia"                      # ManufacturerModelName
    software = "^5\\\\."                   # SoftwareVersions (multi-valued joined with '\\')
    series_description = "(?i)swip"
    protocol_name = "..."
    vendor = "Philips"                     # exact normalised vendor (GE|Philips|Siemens|Canon|unknown)
"""
from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from dicom_io.frames import FrameHeader
from dicom_io.vocabulary import Handedness

CONVENTIONS = tuple(Handedness)
PAPER = "border-slice phase paper, vendor table"
DEFAULT_TABLE: dict[str, str] = {
    "GE": "right-handed",
    "Philips": "right-handed",
    "Siemens": "left-handed",
    "Canon": "left-handed",
}
_MATCH_KEYS = {
    "manufacturer": "manufacturer",
    "model": "model",
    "software": "software_versions",
    "series_description": "series_description",
    "protocol_name": "protocol_name",
}
_ALLOWED_KEYS = {"name", "convention", "vendor", "comment", *_MATCH_KEYS}


class ConventionConfigError(ValueError):
    """A site rules file that cannot be used; names the file and the problem (exit 2 upstream)."""

    def __init__(self, path: str | Path | None, problem: str):
        self.path = str(path) if path is not None else None
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path else problem)


@dataclass(frozen=True)
class ConventionRule:
    name: str
    convention: str
    patterns: dict[str, re.Pattern] = field(default_factory=dict)   # FrameHeader attribute -> regex
    vendor: Optional[str] = None

    def matches(self, frame: FrameHeader, vendor: str) -> bool:
        if self.vendor is not None and self.vendor != vendor:
            return False
        for attr, rx in self.patterns.items():
            text = getattr(frame, attr, None)
            if text is None or not rx.search(str(text)):
                return False
        return True


@dataclass(frozen=True)
class ConventionRules:
    rules: tuple[ConventionRule, ...] = ()
    source: str = "<none>"      # the file name the rules came from


def _problem(path, where: str, what: str) -> ConventionConfigError:
    return ConventionConfigError(path, f"{where}: {what}")


def parse_rules(data: dict, source: str = "<memory>", *, path: str | Path | None = None) -> ConventionRules:
    """Validate a parsed TOML document into :class:`ConventionRules`. ``source`` is the short name
    quoted in ``convention_source``; errors name ``path`` (default: ``source``)."""
    where_file = str(path) if path is not None else source
    unknown_top = set(data) - {"rule", "rules"}
    if unknown_top:
        raise ConventionConfigError(where_file, f"unknown top-level key(s) {sorted(unknown_top)}; expected [[rule]] tables")
    items = data.get("rule", data.get("rules", []))
    if not isinstance(items, list):
        raise ConventionConfigError(where_file, "'rule' must be an array of tables ([[rule]])")
    rules: list[ConventionRule] = []
    names: set[str] = set()
    for i, item in enumerate(items, start=1):
        where = f"rule {i}"
        if not isinstance(item, dict):
            raise _problem(where_file, where, "is not a table")
        name = item.get("name")
        if not isinstance(name, str) or not name.strip():
            raise _problem(where_file, where, "needs a non-empty string 'name'")
        where = f"rule {i} ('{name}')"
        if name in names:
            raise _problem(where_file, where, "duplicate name")
        names.add(name)
        extra = set(item) - _ALLOWED_KEYS
        if extra:
            raise _problem(where_file, where, f"unknown key(s) {sorted(extra)}; allowed: {sorted(_ALLOWED_KEYS)}")
        conv = item.get("convention")
        if conv not in CONVENTIONS:
            raise _problem(where_file, where, f"'convention' must be one of {list(CONVENTIONS)}, got {conv!r}")
        patterns: dict[str, re.Pattern] = {}
        for key, attr in _MATCH_KEYS.items():
            if key in item:
                if not isinstance(item[key], str):
                    raise _problem(where_file, where, f"'{key}' must be a string (a regular expression)")
                try:
                    patterns[attr] = re.compile(item[key])
                except re.error as exc:
                    raise _problem(where_file, where, f"'{key}' is not a valid regular expression: {exc}") from None
        vendor = item.get("vendor")
        if vendor is not None and not isinstance(vendor, str):
            raise _problem(where_file, where, "'vendor' must be a string")
        if not patterns and vendor is None:
            raise _problem(where_file, where, f"matches everything: give at least one of {sorted([*_MATCH_KEYS, 'vendor'])}")
        rules.append(ConventionRule(name=name, convention=conv, patterns=patterns, vendor=vendor))
    return ConventionRules(rules=tuple(rules), source=source)


def load_rules(path: str | Path) -> ConventionRules:
    """Read and validate a site rules TOML file. Raises :class:`ConventionConfigError` naming the
    file and the problem (missing, not TOML, unknown keys, bad regex, bad convention)."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ConventionConfigError(p, f"cannot read convention rules: {exc.strerror or exc}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConventionConfigError(p, f"not valid TOML: {exc}") from None
    return parse_rules(data, source=p.name, path=p)


def resolve_convention(frame: FrameHeader, vendor: str, rules: ConventionRules | None = None) -> tuple[str, str]:
    """(convention, convention_source) for a frame of an acquisition by ``vendor``.

    Site rules first (first match wins), then the default table; an unknown vendor -> unknown.
    """
    if rules is not None:
        for rule in rules.rules:
            if rule.matches(frame, vendor):
                return rule.convention, f"site rule '{rule.name}' ({rules.source})"
    conv = DEFAULT_TABLE.get(vendor)
    if conv is None:
        who = "vendor unknown" if vendor in (None, "", "unknown", "generic") else f"vendor '{vendor}' not in the table"
        return "unknown", f"{who}: no default convention ({PAPER} covers GE, Philips, Siemens, Canon)"
    return conv, f"default table: {vendor} {conv} ({PAPER})"
