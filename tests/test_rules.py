"""dicom_io.rules: the one header-rule matcher behind the site's convention rules and the node's
routing rules; a key means the same in both files."""
from __future__ import annotations

from dataclasses import dataclass

import pytest

from dicom_io.convention import parse_rules
from dicom_io.rules import KEYS, Condition, header_rule
from plugin.service.config import parse_config
from plugin.service.routing import SeriesFacts, route


@dataclass(frozen=True)
class Facts:
    vendor: str | None = "Siemens"
    manufacturer: str | None = "SIEMENS"
    model: str | None = "Prisma"
    software_versions: str | None = "syngo MR XA30\\VE11"
    series_description: str | None = "SWI_Images"
    protocol_name: str | None = None
    modality: str | None = "MR"
    image_type: tuple[str, ...] = ("ORIGINAL", "PRIMARY", "P ", "ND")


@pytest.mark.parametrize("fields, expected", [
    ({"manufacturer": "SIEMENS"}, True),
    ({"manufacturer": "siemens"}, False),                  # case counts unless the pattern says (?i)
    ({"manufacturer": "(?i)siemens"}, True),
    ({"software": r"XA30\\VE11"}, True),                  # multi-valued: values joined with '\'
    ({"protocol_name": ".*"}, False),                      # a missing fact never matches
    ({"vendor": ["GE", "Siemens"]}, True),
    ({"vendor": "siemens"}, False),                        # vendor names are exact
    ({"modality": "mr"}, True),                            # modality: any case
    ({"image_type": ["p", "ORIGINAL"]}, True),             # all listed among the values, any case, spaces ignored
    ({"image_type": ["P", "M"]}, False),
    ({"manufacturer": "SIEMENS", "model": "Skyra"}, False),  # every condition must hold
    ({}, True),
])
def test_conditions(fields, expected):
    assert header_rule(fields).matches(Facts()) is expected


def test_every_key_reads_a_fact_attribute():
    assert {k.attr for k in KEYS.values()} <= set(Facts.__dataclass_fields__) | {"calling_ae", "called_ae"}
    assert Condition("calling_ae", values=("MR1",)).holds(Facts()) is False     # no such fact: no match


def test_a_key_decides_alike_in_convention_and_routing_rules():
    """The same keys, given to both files, select the same series."""
    keys = {"series_description": "(?i)swi", "image_type": ["P"], "modality": "MR"}
    convention = parse_rules({"rule": [{"name": "r", "convention": "left-handed", **keys}]}, "inline").rules[0]
    config = parse_config({"state_dir": "/x", "destinations": {"a": {"ae_title": "A", "host": "h", "port": 1}},
                           "rules": [{"name": "r", "match": keys, "destinations": ["a"]}]})
    for desc, image_type, modality in [("SWI_Images", ("ORIGINAL", "P"), "MR"), ("t1", ("ORIGINAL", "P"), "MR"),
                                       ("swi", ("ORIGINAL", "M"), "MR"), ("swi", ("P",), "CT")]:
        facts = SeriesFacts("1.2", modality=modality, series_description=desc, image_type=image_type)
        routed = route(config, facts).action == "analyse"
        assert convention.matches(facts) is routed
