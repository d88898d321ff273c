"""Routing rules: which series to analyse, which to ignore (with the reason logged), and where the
results go. Rules are tried in config order; the first whose every ``match`` key matches wins.

Match keys (all optional; a rule with none matches everything):
* ``modality``: a string or list; equal to Modality (0008,0060), case-insensitive.
* ``manufacturer``: regular expression searched in Manufacturer (0008,0070), case-insensitive.
* ``series_description``: regular expression searched in SeriesDescription (0008,103E).
* ``image_type``: a string or list; every value must be among the values of ImageType (0008,0008).
* ``calling_ae`` / ``called_ae``: a string or list; the AE titles of the association that sent it.

The keys are the header-rule keys of :mod:`dicom_io.rules`, matched by the same code as the site's
phase-convention rules; the config validates them when it is read (:mod:`plugin.service.config`).
"""
from __future__ import annotations

from dataclasses import dataclass

from plugin.service.config import Config, RoutingRule
from dicom_io.vocabulary import RESULTS_MANUFACTURER


@dataclass(frozen=True)
class SeriesFacts:
    series_instance_uid: str
    modality: str = ""
    manufacturer: str = ""
    series_description: str = ""
    image_type: tuple[str, ...] = ()
    calling_ae: str = ""
    called_ae: str = ""


@dataclass(frozen=True)
class RouteDecision:
    action: str  # analyse | ignore
    rule: str
    destinations: tuple[str, ...]
    reason: str


def rule_matches(rule: RoutingRule, s: SeriesFacts) -> bool:
    return rule.match.header_rule.matches(s)


OWN_RESULTS = RouteDecision("ignore", "<borderphase's own results>", (),
                            f"Manufacturer {RESULTS_MANUFACTURER!r}: borderphase's own result series, never analysed again")


def route(config: Config, s: SeriesFacts) -> RouteDecision:
    """The first matching rule decides; before any rule, borderphase's own result series (its MR
    QSM series included) are ignored, whatever the site's rules say."""
    if s.manufacturer.strip().lower() == RESULTS_MANUFACTURER:
        return OWN_RESULTS
    for rule in config.rules:
        if rule_matches(rule, s):
            reason = rule.reason or (f"rule {rule.name!r}: ignore" if rule.action == "ignore" else "")
            return RouteDecision(rule.action, rule.name, rule.destinations, reason)
    return RouteDecision(config.default_action, "<default>", (), config.default_reason)
