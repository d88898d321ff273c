"""Phase convention: default vendor table, site overrides (first match wins), config validation."""
from __future__ import annotations

from pathlib import Path

import pytest
from pydicom.uid import ExplicitVRLittleEndian

from dicom_io.convention import ConventionConfigError, load_rules, parse_rules, resolve_convention
from dicom_io.read.files import HeaderRead
from dicom_io.read.headers import frames_from_header
from dicom_io.vocabulary import Handedness

from test_vendors import make_ds  # noqa: E402  (tests/ is on sys.path under pytest)

EXAMPLE = Path(__file__).resolve().parents[1] / "dicom_io" / "convention_rules.example.toml"


def frame(manufacturer="Philips", **attrs):
    ds = make_ds(manufacturer, **attrs)
    return frames_from_header(HeaderRead(Path("mem.dcm"), ds, 0, ExplicitVRLittleEndian, None, None))[0]


@pytest.mark.parametrize("vendor,conv", [("GE", "right-handed"), ("Philips", "right-handed"),
                                         ("Siemens", "left-handed"), ("Canon", "left-handed")])
def test_default_table(vendor, conv):
    got, src = resolve_convention(frame(), vendor)
    assert got == conv
    assert src.startswith(f"default table: {vendor} {conv} (")


@pytest.mark.parametrize("vendor", ["unknown", "HITACHI", ""])
def test_unknown_vendor_is_unknown(vendor):
    got, src = resolve_convention(frame(None), vendor)
    assert got == "unknown" and "no default convention" in src


def write(tmp_path, text, name="site.toml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_site_rule_overrides_first_match_wins(tmp_path):
    rules = load_rules(write(tmp_path, """
[[rule]]
name = "philips-swip-flipped"
convention = "left-handed"
manufacturer = "(?i)philips"
series_description = "(?i)swip"

[[rule]]
name = "all-philips-unknown"
convention = "unknown"
vendor = "Philips"
"""))
    f = frame("Philips Healthcare", SeriesDescription="SWIp_phase")
    assert resolve_convention(f, "Philips", rules) == ("left-handed", "site rule 'philips-swip-flipped' (site.toml)")
    f = frame("Philips Healthcare", SeriesDescription="T2star")
    assert resolve_convention(f, "Philips", rules) == ("unknown", "site rule 'all-philips-unknown' (site.toml)")
    # no rule matches a GE frame: default table
    assert resolve_convention(frame("GE MEDICAL SYSTEMS"), "GE", rules)[0] == "right-handed"


def test_rule_on_missing_attribute_does_not_match_and_model_software_rules(tmp_path):
    rules = parse_rules({"rule": [
        {"name": "desc", "convention": "left-handed", "series_description": "SWI"},
        {"name": "model-sw", "convention": "left-handed", "model": "^SIGNA", "software": "DV2[0-9]"},
    ]}, "inline")
    assert resolve_convention(frame("GE"), "GE", rules)[0] == "right-handed"      # no description
    f = frame("GE", ManufacturerModelName="SIGNA Architect", SoftwareVersions=["27", "LX", "DV27.0_R01"])
    assert resolve_convention(f, "GE", rules) == ("left-handed", "site rule 'model-sw' (inline)")


def test_example_file_is_valid():
    rules = load_rules(EXAMPLE)
    assert [r.name for r in rules.rules][0] == "philips-swip-flipped"


@pytest.mark.parametrize("text,problem", [
    ("[[rule]]\nname='x'\nconvention='sideways'\nvendor='GE'\n",
     "[[rule]][1] \"x\".convention: input should be 'right-handed', 'left-handed' or 'unknown', got 'sideways'"),
    ("[[rule]]\nname='x'\nconvention='left-handed'\n", "[[rule]][1] \"x\": matches everything: give at least one of"),
    ("[[rule]]\nname='x'\nconvention='left-handed'\nvendor='GE'\n[[rule]]\nname='y'\nconvention='left-handed'\n"
     "manufacturer='(['\n", "[[rule]][2] \"y\".manufacturer: not a valid regular expression: unterminated character set"),
    ("[[rule]]\nname='x'\nconvention='left-handed'\nmanufacturr='GE'\n",
     "[[rule]][1] \"x\".manufacturr: unknown key (allowed: comment, convention, image_type, manufacturer, "),
    ("[[rule]]\nconvention='left-handed'\nvendor='GE'\n", "[[rule]][1].name: required"),
    ("[[rule]]\nname=' '\nconvention='left-handed'\nvendor='GE'\n", "[[rule]][1] \" \".name: must not be empty"),
    ("[[rule]]\nname='x'\nconvention='left-handed'\nvendor='GE'\n[[rule]]\nname='x'\nconvention='unknown'\nvendor='GE'\n",
     "[[rule]][2] \"x\".name: duplicate name 'x'"),
    ("[[rule]]\nname='x'\nconvention='left-handed'\nvendor=3\n",
     "[[rule]][1] \"x\".vendor: expected a string or a list of strings, got 3"),
    ("rule = 3\n", "[[rule]]: must be an array of tables ([[rule]]), got 3"),
    ("[rules2]\n", "rules2: unknown key (allowed: rule)"),
    ("[[rule]\nname=", "not valid TOML"),
])
def test_bad_config_names_file_key_and_problem(tmp_path, text, problem):
    p = write(tmp_path, text, "bad.toml")
    with pytest.raises(ConventionConfigError) as ei:
        load_rules(p)
    assert str(ei.value).startswith(f"{p}: {problem}")


def test_every_problem_is_reported_each_naming_the_file(tmp_path):
    p = write(tmp_path, "[[rule]]\nname='x'\nconvention='up'\nmodel='('\n", "bad.toml")
    with pytest.raises(ConventionConfigError) as ei:
        load_rules(p)
    lines = str(ei.value).splitlines()
    assert len(lines) == 2 and all(line.startswith(f"{p}: [[rule]][1] \"x\".") for line in lines)
    assert {line.removeprefix(f"{p}: [[rule]][1] \"x\".").split(":")[0] for line in lines} == {"convention", "model"}


def test_conventions_are_handedness():
    rules = parse_rules({"rule": [{"name": "a", "convention": "left-handed", "vendor": ["GE", "Philips"]}]}, "inline")
    assert rules.rules[0].convention is Handedness.LEFT
    conv, _ = resolve_convention(frame("GE"), "GE", rules)
    assert conv is Handedness.LEFT
    assert resolve_convention(frame("GE"), "GE")[0] is Handedness.RIGHT
    assert resolve_convention(frame(None), "unknown")[0] is Handedness.UNKNOWN


def test_image_type_and_modality_rules(tmp_path):
    rules = parse_rules({"rule": [{"name": "phase", "convention": "left-handed", "modality": "mr",
                                   "image_type": ["p"]}]}, "inline")
    assert resolve_convention(frame("GE", ImageType=["ORIGINAL", "PRIMARY", "P"]), "GE", rules)[0] == "left-handed"
    assert resolve_convention(frame("GE", ImageType=["ORIGINAL", "PRIMARY", "M"]), "GE", rules)[0] == "right-handed"


def test_missing_config_file(tmp_path):
    with pytest.raises(ConventionConfigError, match="cannot read convention rules"):
        load_rules(tmp_path / "nope.toml")
