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
    comment = "why"                        # optional, free text
    manufacturer = "(?i)philips"           # regular expressions (re.search); all given must match
    model = "Ingenia"                      # ManufacturerModelName
    software = "^5\\\\."                   # SoftwareVersions (multi-valued joined with '\\')
    series_description = "(?i)swip"
    protocol_name = "..."
    vendor = "Philips"                     # normalised vendor (GE|Philips|Siemens|Canon|unknown), or a list
    modality = "MR"                        # a string or a list, any case
    image_type = ["P"]                     # every listed value among ImageType's values

The keys mean what they mean in the node's routing rules: one matcher (:mod:`dicom_io.rules`).

One resolution per series: :func:`dicom_io.read.series.scan` calls :func:`resolve_convention` once
for each series, with the site rules it is given, and ``inspect``, ``analyze`` and the node all read
``SeriesInfo.phase_convention`` / ``convention_source`` from there.
"""
from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, Field, StrictStr, ValidationError, field_validator, model_validator

from dicom_io.frames import FrameHeader
from dicom_io.rules import STRICT_TABLE, HeaderRule, KeyProblem, Regex, Strings, header_rule, key_problems
from dicom_io.vocabulary import Handedness

CONVENTIONS = tuple(Handedness)
PAPER = "border-slice phase paper, vendor table"
DEFAULT_TABLE: dict[str, Handedness] = {
    "GE": Handedness.RIGHT,
    "Philips": Handedness.RIGHT,
    "Siemens": Handedness.LEFT,
    "Canon": Handedness.LEFT,
}
_CONDITION_KEYS = ("manufacturer", "model", "software", "series_description", "protocol_name", "vendor",
                   "modality", "image_type")


class ConventionConfigError(ValueError):
    """A site rules file that cannot be used; names the file and the problem (exit 2 upstream)."""

    def __init__(self, path: str | Path | None, problem: str):
        self.path = str(path) if path is not None else None
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path else problem)


class ConventionRule(BaseModel):
    """One ``[[rule]]`` table: a convention and the header conditions that select it."""

    model_config = ConfigDict(**STRICT_TABLE, frozen=True)
    name: StrictStr
    convention: Handedness
    comment: Optional[StrictStr] = None
    manufacturer: Optional[Regex] = None
    model: Optional[Regex] = None
    software: Optional[Regex] = None
    series_description: Optional[Regex] = None
    protocol_name: Optional[Regex] = None
    vendor: Optional[Strings] = None
    modality: Optional[Strings] = None
    image_type: Optional[Strings] = None

    @field_validator("name")
    @classmethod
    def _named(cls, name: str) -> str:
        if not name.strip():
            raise ValueError("must not be empty")
        return name

    @model_validator(mode="after")
    def _selects_something(self) -> "ConventionRule":
        if all(getattr(self, k) is None for k in _CONDITION_KEYS):
            raise ValueError(f"matches everything: give at least one of {', '.join(_CONDITION_KEYS)}")
        return self

    @cached_property
    def header_rule(self) -> HeaderRule:
        return header_rule({k: getattr(self, k) for k in _CONDITION_KEYS})

    def matches(self, facts: Any) -> bool:
        """``facts``: an object with the fact attributes of :data:`dicom_io.rules.KEYS`
        (see :func:`convention_facts`)."""
        return self.header_rule.matches(facts)


class _RulesFile(BaseModel):
    model_config = STRICT_TABLE
    rule: list[ConventionRule] = Field(default_factory=list)

    @field_validator("rule")
    @classmethod
    def _unique_names(cls, rules: list[ConventionRule]) -> list[ConventionRule]:
        seen: set[str] = set()
        for i, r in enumerate(rules):
            if r.name in seen:
                raise KeyProblem((i, "name"), f"duplicate name {r.name!r}")
            seen.add(r.name)
        return rules


@dataclass(frozen=True)
class ConventionRules:
    rules: tuple[ConventionRule, ...] = ()
    source: str = "<none>"      # the file name the rules came from


@dataclass(frozen=True)
class ConventionFacts:
    """What a convention rule may test about a series: its first frame's header and its vendor."""

    vendor: Optional[str]
    manufacturer: Optional[str]
    model: Optional[str]
    software_versions: Optional[str]
    series_description: Optional[str]
    protocol_name: Optional[str]
    modality: Optional[str]
    image_type: tuple[str, ...]


def convention_facts(frame: FrameHeader, vendor: str) -> ConventionFacts:
    return ConventionFacts(vendor=vendor, manufacturer=frame.manufacturer, model=frame.model,
                           software_versions=frame.software_versions, series_description=frame.series_description,
                           protocol_name=frame.protocol_name, modality=frame.modality,
                           image_type=tuple(frame.image_type or ()))


def parse_rules(data: dict, source: str = "<memory>", *, path: str | Path | None = None) -> ConventionRules:
    """Validate a parsed TOML document into :class:`ConventionRules`. ``source`` is the short name
    quoted in ``convention_source``; errors name ``path`` (default: ``source``), the key and the
    problem, e.g. ``site.toml: [[rule]][2] "x".manufacturer: not a valid regular expression: ...``."""
    where_file = str(path) if path is not None else source
    doc = dict(data)
    if "rules" in doc and "rule" not in doc:   # [[rules]] is accepted for [[rule]]
        doc["rule"] = doc.pop("rules")
    try:
        parsed = _RulesFile.model_validate(doc)
    except ValidationError as exc:
        lines = key_problems(exc, _RulesFile, doc, tables=("rule",))
        raise ConventionConfigError(where_file, f"\n{where_file}: ".join(lines)) from None
    return ConventionRules(rules=tuple(parsed.rule), source=source)


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


def resolve_convention(frame: FrameHeader, vendor: str, rules: ConventionRules | None = None) -> tuple[Handedness, str]:
    """(convention, convention_source) for a frame of an acquisition by ``vendor``.

    Site rules first (first match wins), then the default table; an unknown vendor -> unknown.
    Called once per series, by :func:`dicom_io.read.series.scan`.
    """
    if rules is not None and rules.rules:
        facts = convention_facts(frame, vendor)
        for rule in rules.rules:
            if rule.matches(facts):
                return rule.convention, f"site rule '{rule.name}' ({rules.source})"
    conv = DEFAULT_TABLE.get(vendor)
    if conv is None:
        who = "vendor unknown" if vendor in (None, "", "unknown", "generic") else f"vendor '{vendor}' not in the table"
        return Handedness.UNKNOWN, f"{who}: no default convention ({PAPER} covers GE, Philips, Siemens, Canon)"
    return conv, f"default table: {vendor} {conv} ({PAPER})"
