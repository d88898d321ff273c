"""The conformance report (issue 12): one row per series, for vendor-conformance testers.

``conformance_report(paths, out_dir)`` writes ``out_dir/conformance.json`` (the inspect facts of
every series, ``dicom_io.inspect``, plus the data's own phase convention of each phase series,
``plugin.method.dataconvention``, and thumbnail file names) and ``out_dir/conformance.html`` (the
same facts as a table, with a thumbnail of the central slice of every stack, magnitude and phase),
and ``out_dir/thumbs/*.png``. Unreadable files are listed with their reasons.
"""
from __future__ import annotations

import html
import json
import logging
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

log = logging.getLogger(__name__)

SCHEMA = "borderphase.conformance/1"


def _thumbnail(data: np.ndarray, path: Path, phase: bool) -> None:
    from PIL import Image
    sl = np.asarray(data[data.shape[0] // 2], np.float32)
    if phase:
        lo, hi = -np.pi, np.pi
    else:
        lo, hi = 0.0, float(np.percentile(sl, 99.5)) or 1.0
    img = np.clip((sl - lo) / max(hi - lo, 1e-6) * 255.0, 0, 255).astype(np.uint8)
    im = Image.fromarray(img)
    im.thumbnail((160, 160))
    im.save(path)


def data_conventions(scan_result, thumbs_dir: Optional[Path] = None) -> tuple[dict, dict]:
    """phase series uid -> data convention facts (``data_convention``, ``data_evidence``) of every
    magnitude/phase pair of a scan; series uid -> thumbnail names, written to ``thumbs_dir``
    (none when it is None). ``borderphase inspect`` and ``conformance`` both report these."""
    from dicom_io.read import series as dseries
    from plugin.method.background import remove_background
    from plugin.method.dataconvention import estimate_data_convention
    from plugin.method.detect import brain_mask, detect_spots
    from plugin.pairing import pair_series

    conventions: dict = {}
    thumbs: dict = {}
    pairs, _skipped = pair_series(scan_result.series)
    for pair in pairs:
        try:
            mag = dseries.load_volume(pair.magnitude)
            ph = dseries.load_volume(pair.phase)
        except Exception as exc:  # the reader names the file
            conventions[pair.phase_series_uid] = {"data_convention": None, "data_evidence": {"reason": f"cannot load: {exc}"}}
            continue
        for vol, is_phase in ((mag, False), (ph, True)) if thumbs_dir is not None else ():
            name = f"{vol.series_instance_uid}_{'phase' if is_phase else 'magnitude'}.png"
            try:
                _thumbnail(vol.data, Path(thumbs_dir) / name, is_phase)
                thumbs.setdefault(vol.series_instance_uid, []).append(name)
            except Exception as exc:
                log.warning("thumbnail of %s failed: %s", vol.series_instance_uid, exc)
        try:
            m = np.asarray(mag.data, np.float32)
            vox = tuple(float(np.linalg.norm(mag.affine_lps[:3, i])) for i in range(3))
            mask = brain_mask(m, vox)
            det = detect_spots(m, vox, mask=mask)
            local, _w, _what = remove_background(np.asarray(ph.data, np.float32), m, mask, vox)
            dc = estimate_data_convention(m, local, mask, vox, det.rejected, det.noise_sigma, spots=det.spots)
            conventions[pair.phase_series_uid] = {
                "data_convention": None if dc.data_convention is None else str(dc.data_convention),
                "data_evidence": dc.evidence_dict()}
        except Exception as exc:
            conventions[pair.phase_series_uid] = {"data_convention": None,
                                                  "data_evidence": {"reason": f"{type(exc).__name__}: {exc}"}}
    return conventions, thumbs


def attach_data_conventions(doc: dict, conventions: dict) -> dict:
    """Add ``data_convention`` and ``data_evidence`` (None for a series that is no analysable
    pair's phase) to every series of an inspect document (``dicom_io.inspect``)."""
    for s in doc["series"]:
        dc = conventions.get(s["series_instance_uid"])
        s["data_convention"] = None if dc is None else dc["data_convention"]
        s["data_evidence"] = None if dc is None else dc["data_evidence"]
    return doc


def conformance_report(paths: Sequence, out_dir, *, rules=None) -> dict:
    """Write conformance.json, conformance.html and thumbs/ under ``out_dir``; return the document."""
    from dicom_io.inspect import inspect_scan
    from dicom_io.read.series import scan

    out = Path(out_dir)
    (out / "thumbs").mkdir(parents=True, exist_ok=True)
    result = scan([Path(p) for p in paths], rules=rules)
    doc = inspect_scan(result)
    conventions, thumbs = data_conventions(result, out / "thumbs")
    attach_data_conventions(doc, conventions)
    for s in doc["series"]:
        s["thumbnails"] = [f"thumbs/{n}" for n in thumbs.get(s["series_instance_uid"], [])]
    doc["schema"] = SCHEMA
    (out / "conformance.json").write_text(json.dumps(doc, indent=2))
    (out / "conformance.html").write_text(render_html(doc))
    return doc


def _stack_text(st: dict) -> str:
    geo = f"{st.get('rows')}x{st.get('columns')}x{st.get('n_slices')}"
    if st.get("pixel_spacing_mm"):
        spacing = st.get("slice_spacing_mm")   # None when the stack is no volume (its problem says why)
        geo += f" @ {'x'.join(str(v) for v in st['pixel_spacing_mm'])}{'' if spacing is None else f'x{spacing}'} mm"
    parts = [f"{st.get('component')} ({st.get('component_source')})", f"echo {st.get('echo_number')} TE {st.get('echo_time_ms')} ms",
             geo]
    if st.get("kind"):
        parts.append(str(st.get("kind_label") or st["kind"]))
    if st.get("phase_scaling"):
        parts.append(f"phase scaling: {st['phase_scaling']}")
    if st.get("lossy_compression"):
        parts.append(f"LOSSY: {st['lossy_compression']}")
    return "; ".join(parts)


def render_html(doc: dict) -> str:
    e = html.escape
    rows = []
    for s in doc["series"]:
        stacks = "<br>".join(e(_stack_text(st)) for st in s.get("stacks", []))
        ev = s.get("data_evidence") or {}
        data = "-" if s.get("data_evidence") is None else e(f"{s.get('data_convention') or 'undecided'}: {ev.get('reason', '')}")
        probs = "<br>".join(e(p) for p in s.get("problems", [])) or "none"
        imgs = "".join(f'<img src="{e(t)}" alt="{e(t)}" height="96">' for t in s.get("thumbnails", []))
        kinds = e(str(s.get("sop_class")))
        rows.append(
            f'<tr class="series" data-uid="{e(str(s["series_instance_uid"]))}">'
            f'<td>{e(str(s.get("series_number")))} {e(str(s.get("series_description") or ""))}</td>'
            f'<td class="vendor">{e(str(s.get("vendor")))}<br><small>{e(str(s.get("vendor_source")))}</small></td>'
            f'<td class="sop-class">{kinds}<br><small>{e(str(s.get("sop_class_uid")))}</small></td>'
            f'<td>{stacks}</td>'
            f'<td class="header-convention">{e(str(s.get("phase_convention")))}<br><small>{e(str(s.get("convention_source")))}</small></td>'
            f'<td class="data-convention">{data}</td>'
            f'<td class="problems">{probs}</td><td>{imgs}</td></tr>')
    errors = "".join(f'<li class="error">{e(str(x.get("path")))}: {e(str(x.get("reason")))}</li>' for x in doc.get("errors", []))
    return ("<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>borderphase conformance report</title>"
            "<style>body{font-family:sans-serif}table{border-collapse:collapse}td,th{border:1px solid #999;"
            "padding:4px;vertical-align:top;font-size:13px}small{color:#555}</style></head><body>"
            f"<h1>borderphase conformance report</h1><p id=\"count\">{len(doc['series'])} series, "
            f"{len(doc.get('errors', []))} unreadable file(s)</p>"
            "<table id=\"series\"><thead><tr><th>series</th><th>vendor (rule)</th><th>classic / enhanced</th>"
            "<th>stacks: component (rule), echo, geometry, phase scaling</th><th>header convention (rule)</th>"
            "<th>data convention (evidence)</th><th>problems</th><th>magnitude / phase</th></tr></thead><tbody>"
            + "".join(rows) + "</tbody></table>"
            + (f"<h2>Unreadable files</h2><ul id=\"errors\">{errors}</ul>" if errors else "")
            + "</body></html>\n")
