"""One phase-convention resolution per series, site rules included: ``borderphase inspect --json``,
``borderphase analyze`` (findings.json) and the node's worker name the same convention and
convention_source for the same series under the same site rules file."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from pydicom.uid import generate_uid

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.quicksim import SimLesion, affine_for, simulate  # noqa: E402
from dicom_io.phantom_writer import StackToWrite, StudyInfo, write_acquisition  # noqa: E402
from plugin.cli import main as cli_main  # noqa: E402

VOX = (2.5, 0.9, 0.9)
# Rule 1 matches only the magnitude series (ImageType M): the analysis must report the phase
# series' convention, which rule 2 overrides (the default table says Siemens is left-handed).
SITE_RULES = """
[[rule]]
name = "magnitude is not phase"
convention = "unknown"
image_type = ["M"]

[[rule]]
name = "our Prisma flips"
comment = "this site's phase export is display-flipped"
convention = "right-handed"
vendor = "Siemens"
series_description = "(?i)swi"
"""


@pytest.fixture(scope="module")
def siemens_study(tmp_path_factory):
    root = tmp_path_factory.mktemp("agree")
    mag, ph = simulate((16, 96, 96), VOX, [SimLesion((8.3, 40.0, 40.0), 3.0, 0.3)], convention="left-handed",
                       snr=40, seed=3)
    written = write_acquisition(
        root / "in", vendor="Siemens", style="classic",
        stacks=[StackToWrite("magnitude", 1, 25.0, mag), StackToWrite("phase", 1, 25.0, ph)],
        affine_lps=affine_for(VOX), study=StudyInfo(study_instance_uid=generate_uid(),
                                                    frame_of_reference_uid=generate_uid()),
        series_description="SWI agree", series_number=5)
    rules = root / "site.toml"
    rules.write_text(SITE_RULES)
    return root / "in", rules, written.series_uids


def inspect_json(folder: Path, rules: Path) -> dict:
    out = subprocess.run([sys.executable, "-m", "plugin.cli", "inspect", str(folder), "--json",
                          "--convention-rules", str(rules)], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr
    return {s["series_instance_uid"]: (s["phase_convention"], s["convention_source"])
            for s in json.loads(out.stdout)["series"]}


def header_part(analysis: dict) -> tuple[str, str]:
    """(convention, the header rule that named it) of an analysis: the data check (issue 12) may
    append what the data said after "; " (here: a sample phantom without veins, so "could not
    confirm it"), but the convention and the rule in front must be inspect's."""
    source = analysis["convention_source"]
    head, _, data = source.partition("; ")
    assert not data or data.startswith("the data could not confirm it"), source
    return analysis["phase_convention"], head


def test_inspect_and_analyze_name_the_same_convention(siemens_study, tmp_path):
    folder, rules, uids = siemens_study
    by_series = inspect_json(folder, rules)
    assert by_series[uids["phase"]] == ("right-handed", "site rule 'our Prisma flips' (site.toml)")
    assert by_series[uids["magnitude"]] == ("unknown", "site rule 'magnitude is not phase' (site.toml)")

    assert cli_main(["analyze", str(folder), "--out", str(tmp_path / "out"), "--no-dicom",
                     "--convention-rules", str(rules)]) == 0
    (analysis,) = json.loads((tmp_path / "out" / "findings.json").read_text())["analyses"]
    assert analysis["phase_series_uid"] == uids["phase"]
    assert header_part(analysis) == by_series[uids["phase"]]


def test_the_node_worker_names_the_same_convention(siemens_study, tmp_path):
    """The node reads its rules from ``[analysis] convention_rules`` (relative to the config file)
    and its findings agree with ``inspect`` given the same file."""
    from plugin.service.config import load_config
    from plugin.service.worker import run_analysis

    folder, rules, uids = siemens_study
    (tmp_path / "site.toml").write_text(rules.read_text())
    cfg_path = tmp_path / "node.toml"
    cfg_path.write_text('state_dir = "state"\n[analysis]\nconvention_rules = "site.toml"\n')
    config = load_config(cfg_path)
    findings = run_analysis(config, sorted(folder.rglob("*.dcm")), tmp_path / "out")
    (analysis,) = findings["analyses"]
    assert header_part(analysis) == inspect_json(folder, tmp_path / "site.toml")[
        uids["phase"]] == ("right-handed", "site rule 'our Prisma flips' (site.toml)")


def test_both_commands_refuse_a_bad_rules_file_naming_file_and_key(siemens_study, tmp_path, capsys):
    folder = siemens_study[0]
    bad = tmp_path / "site.toml"
    bad.write_text('[[rule]]\nname = "x"\nconvention = "left-handed"\nmanufacturr = "GE"\n')
    expected = f'{bad}: [[rule]][1] "x".manufacturr: unknown key (allowed: '
    assert cli_main(["inspect", str(folder), "--convention-rules", str(bad)]) == 2
    assert f"borderphase inspect: convention rules: {expected}" in capsys.readouterr().err
    assert cli_main(["analyze", str(folder), "--out", str(tmp_path / "out"), "--convention-rules", str(bad)]) == 2
    assert f"borderphase analyze: error: convention rules: {expected}" in capsys.readouterr().err
