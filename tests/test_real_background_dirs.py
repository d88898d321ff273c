"""``real_background_benchmark.py --backgrounds``: other real acquisitions, one folder each.

No fetched data is needed: the folder rules are checked on temporary folders, and the refusal of a
folder without a magnitude/phase pair goes through the real scan and pairing (``plugin.inject``)."""
from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import real_background_benchmark as rb


def test_each_folder_is_one_acquisition_named_by_the_folder(tmp_path):
    a, b = tmp_path / "swi_case1", tmp_path / "swi_case2"
    (a / "mag").mkdir(parents=True)
    (a / "mag" / "1.dcm").write_bytes(b"x")
    b.mkdir()
    (b / "2.dcm").write_bytes(b"x")
    got = rb.background_acquisitions([a, str(b)])
    assert got == {"swi_case1": (a.resolve(),), "swi_case2": (b.resolve(),)}
    # an absolute folder is used as given, not under the shared vendor folder
    assert rb.VENDOR_DICOM / got["swi_case1"][0] == a.resolve()


@pytest.mark.parametrize("case, words", [
    ("missing", "does not exist"),
    ("file", "it is a file"),
    ("empty", "holds no files"),
    ("duplicate", "already used"),
    ("shared_name", "already used"),
])
def test_bad_folders_are_refused_naming_the_folder(tmp_path, case, words):
    good = tmp_path / "one" / "swi"
    good.mkdir(parents=True)
    (good / "1.dcm").write_bytes(b"x")
    if case == "missing":
        dirs = [tmp_path / "nowhere"]
    elif case == "file":
        dirs = [good / "1.dcm"]
    elif case == "empty":
        (tmp_path / "empty" / "sub").mkdir(parents=True)
        dirs = [tmp_path / "empty"]
    elif case == "duplicate":
        other = tmp_path / "two" / "swi"
        other.mkdir(parents=True)
        (other / "2.dcm").write_bytes(b"x")
        dirs = [good, other]
    else:
        shared = tmp_path / next(iter(rb.I.KNOWN_ACQUISITIONS))
        shared.mkdir()
        (shared / "1.dcm").write_bytes(b"x")
        dirs = [shared]
    with pytest.raises(rb.BackgroundError, match=words) as err:
        rb.background_acquisitions(dirs)
    assert str(dirs[-1]) in str(err.value)


def test_cli_refuses_a_folder_without_a_magnitude_phase_pair(tmp_path, capsys):
    not_dicom = tmp_path / "notes"
    not_dicom.mkdir()
    (not_dicom / "readme.txt").write_text("not DICOM")
    assert rb.main(["--acquisitions", "--backgrounds", str(not_dicom), "--studies", "1"]) == 2
    out = capsys.readouterr().out
    assert "cannot inject" in out and str(not_dicom) in out and "no magnitude/phase pair" in out


def test_cli_with_nothing_to_run_says_so(capsys):
    assert rb.main(["--acquisitions"]) == 2
    assert "nothing to run" in capsys.readouterr().out
