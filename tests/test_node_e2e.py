"""End to end with real peers: dcmtk storescu sends the sample studies of every vendor to
`borderphase serve` (real pipeline); the results land in a real Orthanc in the same study; the test
reads them back through Orthanc's REST API and checks them against findings.json: the SR's spots
(class, QSM chi per spot) and the QSM series "borderphase QSM (ppb)", one image per slice."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import highdicom as hd
import pytest
from pydicom import dcmread
from pydicom.filebase import DicomBytesIO

from conftest import require_peer
from dicom_io.results.qsm import chi_ppm_of
from dicom_io.results.sr import read_spots
from node_helpers import (ORTHANC, REPO, STORESCU, Orthanc, free_port, node_env, start_serve, stop_proc,
                          storescu, wait_for, write_config)
from plugin.service.demo import studies_in
from plugin.service.state import StateLayout
from plugin.service.status import collect

SAMPLES = Path(os.environ.get("BORDERPHASE_SAMPLE_DICOM", REPO / "sample_dicom"))
FINDING_CODES = {"microbleed": "50960005", "calcification": "18115005", "indeterminate": "301766008"}

pytestmark = [pytest.mark.peers, pytest.mark.slow]


@pytest.fixture(autouse=True)
def _peers() -> None:
    require_peer(ORTHANC, "orthanc")
    require_peer(STORESCU, "dcmtk")


def vendor_dirs() -> list[Path]:
    if not SAMPLES.is_dir():
        return []
    return sorted(p for p in SAMPLES.iterdir() if p.is_dir() and studies_in(p))


def _finding_types(sr) -> list[str]:
    """One finding type per spot: its main group (TID 1501, the measurements); the border
    slices read are TID 1410 groups beside it."""
    return [g.finding_type.value if g.finding_type is not None else ""
            for g in sr.content.get_image_measurement_groups()]


def _rendered(orthanc, instance_id: str):
    """Orthanc's own rendering of an instance (its first window preset), as grey levels."""
    import io

    import numpy as np
    from PIL import Image
    png = orthanc.get(f"/instances/{instance_id}/rendered")
    return np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=float)


def test_scanner_to_node_to_orthanc(tmp_path):
    vendors = vendor_dirs()
    assert vendors, f"no sample studies under {SAMPLES} (regenerate: python -m plugin.phantom --sample-dicom sample_dicom)"
    node_port = free_port()
    orthanc = Orthanc(tmp_path / "orthanc", node_port).start()
    cfg = write_config(tmp_path / "node.toml", tmp_path / "state", node_port,
                       destinations={"orthanc": {"type": "dicom", "ae_title": "ORTHANC", "host": "127.0.0.1",
                                                 "port": orthanc.dicom_port}})
    node = start_serve(cfg, node_port, tmp_path / "node.log", stand_in=False)  # the real pipeline
    try:
        sent: dict[str, int] = Counter()
        for vdir in vendors:  # one storescu (one association) per vendor directory, as a scanner sends
            storescu(node_port, [vdir])
            for uid, files in studies_in(vdir).items():
                sent[uid] += len(files)
        layout = StateLayout(tmp_path / "state")

        def settled():
            st = collect(layout.root)
            ok = len(st["studies"]) == len(sent) and all(s["state"] in ("analysed", "failed") for s in st["studies"])
            return st if ok and not st["outbox"]["pending"] else None

        st = wait_for(settled, 150, interval_s=0.5, what="all studies analysed and delivered")
        cli = subprocess.run([sys.executable, "-m", "plugin.cli", "status", "--config", str(cfg)], cwd=REPO,
                             env=node_env(), capture_output=True, text=True)
        assert cli.returncode == 0 and "outbox: 0 pending" in cli.stdout, cli.stdout + cli.stderr
        failed = [s for s in st["studies"] if s["state"] != "analysed"]
        assert not failed, failed
        for s in st["studies"]:
            uid = s["study_instance_uid"]
            assert s["n_spooled"] == sent[uid], "every acknowledged instance is in the spool"
            v = s["versions"][-1]
            assert len(s["versions"]) == 1
            rdir = Path(v["results_dir"])
            findings = json.loads((rdir / "findings.json").read_text())
            result = layout.result(rdir.parent.name, v["version"])
            local = {str(dcmread(rdir / f, stop_before_pixels=True).SOPInstanceUID): rdir / f
                     for f in result["result_files"]}
            assert local, f"study {uid}: no DICOM result objects written"
            # read back every result object from Orthanc, in the same study
            oid = orthanc.find_study(uid)
            assert oid, f"study {uid} not in Orthanc"
            in_orthanc = {}
            for series in orthanc.get(f"/studies/{oid}/series?expand"):
                for iid in series["Instances"]:
                    tags = orthanc.get(f"/instances/{iid}/simplified-tags")
                    if tags["SOPInstanceUID"] in local:
                        in_orthanc[tags["SOPInstanceUID"]] = iid
            assert set(in_orthanc) == set(local), f"study {uid}: results missing in Orthanc"
            lesions = [l for a in findings["analyses"] for l in a["lesions"]]
            by_uid = {l["tracking_uid"]: l for l in lesions}
            n_groups, types, chis, qsm_slices, n_rendered = 0, [], {}, [], 0
            for sop, iid in in_orthanc.items():
                raw = orthanc.get(f"/instances/{iid}/file")
                ds = dcmread(DicomBytesIO(raw))
                assert ds == dcmread(local[sop]), "Orthanc holds the data set the node sent"
                assert ds.StudyInstanceUID == uid
                if ds.Modality == "SR":
                    sr = hd.sr.Comprehensive3DSR.from_dataset(ds)
                    t = _finding_types(sr)
                    n_groups += len(t)
                    types += t
                    chis.update({s["tracking_uid"]: s["qsm_chi_ppm"] for s in read_spots(ds)})
                if ds.Modality == "MR":   # the only MR result: the QSM series
                    assert ds.SeriesDescription == "borderphase QSM (ppb)" and ds.Manufacturer == "borderphase"
                    assert "NOT FOR PRIMARY DIAGNOSIS" in ds.ImageComments and "QSM" in ds.DerivationDescription
                    assert float(ds.RescaleSlope) > 0 and ds.get("VOILUTFunction", "LINEAR") == "LINEAR"
                    qsm_slices.append((str(ds.SeriesInstanceUID), float(ds.ImagePositionPatient[2])))
                    chi = chi_ppm_of(ds)
                    if (chi > 0.15).any():   # a viewer: Orthanc renders it with the window preset (+-0.2 ppm)
                        shown = _rendered(orthanc, iid)
                        assert abs(shown[chi == 0].mean() - 127.5) < 3, "0 ppm is not mid grey"
                        assert shown[chi > 0.15].mean() > 127.5 + 80, "paramagnetic is not bright"
                        n_rendered += 1
                if ds.Modality == "SEG":
                    assert len(ds.SegmentSequence) == sum(len(a["lesions"]) for a in findings["analyses"]
                                                          if a["magnitude_series_uid"] in
                                                          {r.SeriesInstanceUID for r in ds.ReferencedSeriesSequence})
            assert n_groups == len(lesions), f"study {uid}: SR has {n_groups} spots, findings.json {len(lesions)}"
            assert Counter(types) == Counter(FINDING_CODES[l["classification"]] for l in lesions)
            # the QSM series: one per analysed pair, one image per slice (distinct positions)
            qsm_series = Counter(s for s, _ in qsm_slices)
            assert len(qsm_series) == len(findings["analyses"]), f"study {uid}: QSM series {dict(qsm_series)}"
            assert all(n >= 2 for n in qsm_series.values()) and len(set(qsm_slices)) == len(qsm_slices)
            assert n_rendered, f"study {uid}: no QSM slice with a paramagnetic spot to render"
            # each spot's chi (DCM 126396, ppm) in the SR Orthanc holds is findings.json's
            assert set(chis) == set(by_uid)
            for tuid, chi in chis.items():
                want = by_uid[tuid][by_uid[tuid]["qsm_reported"]]
                assert want is not None and chi == pytest.approx(want, abs=1e-4), (uid, tuid, chi, want)
        # logs carry UIDs, never patient names or IDs
        log = (tmp_path / "node.log").read_text()
        for vdir in vendors:
            for files in studies_in(vdir).values():
                ds = dcmread(files[0], stop_before_pixels=True)
                for value in (str(ds.get("PatientName", "")), str(ds.get("PatientID", ""))):
                    if len(value) >= 3:
                        assert value not in log, "PHI in the node log"
    finally:
        stop_proc(node)
        orthanc.stop()
