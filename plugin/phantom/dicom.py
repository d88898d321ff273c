"""Write phantom studies as each vendor writes them (through :mod:`dicom_io.phantom_writer`) with a
``truth.json``, and the ``sample_dicom/`` set.

The phase handed to the writer follows the vendor's convention (:data:`dicom_io.convention.DEFAULT_TABLE`:
GE, Philips right-handed; Siemens, Canon left-handed), so the same microbleed is stored dark on
GE/Philips and bright on Siemens/Canon. The SeriesDescription is the vendor's own protocol name
(its codec's write layout). UIDs are derived from the seed, vendor and study so that
regeneration is reproducible.

Regenerate the sample set (all of ``sample_dicom/``)::

    python -m plugin.phantom --sample-dicom sample_dicom
    # or: borderphase phantom --sample-set --out sample_dicom
"""
from __future__ import annotations

import argparse
import concurrent.futures
import itertools
import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from dicom_io.convention import DEFAULT_TABLE
from dicom_io.vendors import VENDORS, writing_codec
from dicom_io.vocabulary import Handedness
from plugin.phantom import render as P
from plugin.phantom import cohort as C
from plugin.phantom import realistic as R

#: The sample set: every supported vendor once, in this order, in the style written for it
#: (Philips enhanced so that the set holds a multi-frame study).
SAMPLE_SET: tuple[tuple[str, str], ...] = (("GE", "classic"), ("Philips", "enhanced"), ("Siemens", "classic"),
                                           ("Canon", "classic"))
SAMPLE_SEED = 2024
TRUTH_NAME = "truth.json"


def vendor_convention(vendor: str) -> Handedness:
    """The phase handedness ``vendor`` writes (the project's default table)."""
    if vendor not in VENDORS or vendor not in DEFAULT_TABLE:
        raise ValueError(f"vendor must be one of {', '.join(VENDORS)}, got {vendor!r}")
    return Handedness(DEFAULT_TABLE[vendor])


def series_description(vendor: str, style: str, filtered: bool) -> str:
    """The vendor's GRE protocol name, with its filtered-phase suffix (SWAN, SWIp, SWI) when
    the phase is filtered."""
    layout = writing_codec(vendor).write_layout(style)
    return layout.series_description + (layout.filtered_suffix if filtered else "")


def deterministic_uid(*parts: object) -> str:
    """A UID under pydicom's root derived from ``parts`` (same parts -> same UID)."""
    from pydicom.uid import generate_uid

    return generate_uid(entropy_srcs=[repr(p) for p in parts])


@dataclass(frozen=True)
class WriteOptions:
    vendor: str
    style: str = "classic"
    anonymize: str = "none"
    seed: int = 0


def write_study(images: "P.PhantomImages | R.RealisticImages", truth: dict, out_dir: Path, opts: WriteOptions, *, study_index: int = 0) -> dict:
    """Write one rendered study under ``out_dir``; returns ``truth`` with UIDs and files added."""
    from dicom_io.phantom_writer import StackToWrite, StudyInfo, write_acquisition

    key = ("borderphase-phantom", opts.vendor, opts.style, opts.seed, study_index)
    study = StudyInfo(
        study_instance_uid=deterministic_uid(*key, "study"),
        frame_of_reference_uid=deterministic_uid(*key, "for"),
        patient_name=f"Phantom^{opts.vendor}{study_index + 1}",
        patient_id=f"BP-{opts.vendor.upper()}-{opts.seed}-{study_index + 1}",
        accession_number=f"BP{opts.seed % 100000:05d}{study_index + 1:02d}",
        study_description=f"borderphase phantom seed {opts.seed}",
    )
    stacks = []
    for e, te in enumerate(images.echo_times_ms):
        stacks.append(StackToWrite("magnitude", e + 1, te, images.magnitude[e]))
        stacks.append(StackToWrite("phase", e + 1, te, images.phase_rad[e]))
    description = series_description(opts.vendor, opts.style, images.acquisition.filtered)
    out_dir.mkdir(parents=True, exist_ok=True)
    counter = itertools.count()                 # series / instance UIDs: a sequence seeded by the study key
    written = write_acquisition(
        out_dir, vendor=opts.vendor, style=opts.style, stacks=stacks, affine_lps=images.affine_lps,
        study=study, series_description=description, series_number=5 + study_index * 100,
        anonymize=opts.anonymize, field_strength_t=images.acquisition.b0_t,
        uid_factory=lambda: deterministic_uid(*key, next(counter)),
    )
    doc = dict(truth)
    doc.update(
        vendor=opts.vendor,
        style=opts.style,
        anonymize=opts.anonymize,
        study_instance_uid=study.study_instance_uid,
        frame_of_reference_uid=study.frame_of_reference_uid,
        series_instance_uids=dict(written.series_uids),
        series_description=description,
        phase_scaling=written.phase_scaling,
        n_files=len(written.paths),
    )
    return doc


def generate(
    out_dir: str | Path,
    *,
    vendor: str,
    cohort: Optional[str] = None,
    seed: int = 0,
    style: str = "classic",
    anonymize: str = "none",
    snr: Optional[float] = None,
    echoes: Optional[int] = None,
    filtered: Optional[bool] = None,
    size: str = "full",
    n_studies: int = 4,
    jobs: Optional[int] = None,
    protocol: Optional[str] = None,
    flip_phase: bool = False,
) -> dict:
    """Render and write a phantom (``cohort='paper'``: the paper's 190 lesions over ``n_studies``
    studies; ``cohort='realistic'``: the same population plus faint and cored lesions in
    head-like anatomy (:mod:`plugin.phantom.realistic`), acquired with ``protocol`` (swi3d,
    gre3d_1mm, gre2d_5mm; ``snr``, ``echoes`` and ``filtered`` default to the protocol's);
    otherwise one study of 6 microbleeds + 4 calcifications) and ``out_dir/truth.json``.
    Studies are rendered in up to ``jobs`` processes (default: up to 2, the cores the project
    targets); the result does not depend on ``jobs``. ``flip_phase`` (realistic only): the phase is
    rendered in the opposite convention to the vendor's table (a site or product series that flips
    the phase for display); truth.json's ``phase_convention`` is the rendered one."""
    convention = vendor_convention(vendor)
    out = Path(out_dir)
    if cohort == "realistic":
        return _generate_realistic(out, vendor=vendor, convention=convention, seed=seed, style=style,
                                   anonymize=anonymize, snr=snr, echoes=echoes, filtered=filtered,
                                   n_studies=n_studies, jobs=jobs, protocol=protocol or "swi3d", flip_phase=flip_phase)
    if flip_phase:
        raise ValueError("--flip-phase applies to --cohort realistic only")
    if protocol:
        raise ValueError("--protocol applies to --cohort realistic only")
    snr = 40.0 if snr is None else snr
    echoes = 1 if echoes is None else echoes
    filtered = bool(filtered)
    acq = P.Acquisition(echo_times_ms=P.Acquisition.echo_train(echoes), snr=snr, filtered=filtered)
    if cohort == "paper":
        plans = C.paper_cohort(seed, n_studies=n_studies, size=size)
    elif cohort in (None, "", "random"):
        plans = [C.random_study(seed, size=size)]
    else:
        raise ValueError(f"unknown cohort {cohort!r} (use 'paper' or 'realistic')")
    opts = WriteOptions(vendor, style, anonymize, seed)
    tasks = [(plan, acq, convention, out, opts, len(plans) > 1) for plan in plans]
    studies = _map_studies(_render_and_write, tasks, jobs)
    document = {"schema": P.TRUTH_SCHEMA, "generator": _command_line(vendor, cohort, seed, style, anonymize, snr, echoes, filtered, size),
                "studies": studies}
    (out / TRUTH_NAME).write_text(json.dumps(document, indent=1) + "\n")
    return document


def _map_studies(render_and_write, tasks: list, jobs: Optional[int]) -> list[dict]:
    """``render_and_write`` over ``tasks``, one study per process (at most ``jobs``, default 2):
    each study is independent and seeded, so the output is the same in any order."""
    workers = min(jobs if jobs else min(os.cpu_count() or 1, 2), len(tasks))
    if workers > 1:
        with concurrent.futures.ProcessPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(render_and_write, tasks))
    return [render_and_write(t) for t in tasks]


def _render_and_write(task) -> dict:
    plan, acq, convention, out, opts, several = task
    images, truth = P.make_study(plan.lesions, plan.veins, grid=plan.grid, head=plan.head, acquisition=acq,
                                 convention=convention, seed=opts.seed * 1000 + plan.index, vendor=opts.vendor)
    sub = out / f"study_{plan.index + 1:02d}" if several else out / "dicom"
    doc = write_study(images, truth, sub, opts, study_index=plan.index)
    doc["directory"] = sub.relative_to(out).as_posix()
    return doc


def _generate_realistic(out: Path, *, vendor: str, convention: Handedness, seed: int, style: str, anonymize: str,
                        snr: Optional[float], echoes: Optional[int], filtered: Optional[bool], n_studies: int,
                        jobs: Optional[int], protocol: str, flip_phase: bool = False) -> dict:
    """The realistic cohort (:func:`plugin.phantom.realistic.realistic_cohort`) written as ``vendor``."""
    if protocol not in R.PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r} (use {', '.join(R.PROTOCOLS)})")
    acq = R.PROTOCOLS[protocol].acquisition(echoes=echoes, snr=snr, filtered=filtered)
    plans = R.realistic_cohort(seed, protocol=protocol, n_studies=n_studies)
    opts = WriteOptions(vendor, style, anonymize, seed)
    header_convention = convention
    if flip_phase:
        convention = Handedness.LEFT if convention == Handedness.RIGHT else Handedness.RIGHT
    tasks = [(plan, acq, convention, out, opts, header_convention) for plan in plans]
    studies = _map_studies(_render_and_write_realistic, tasks, jobs)
    line = (f"borderphase phantom --cohort realistic --protocol {protocol} --vendor {vendor} --seed {seed} "
            f"--studies {n_studies} --style {style} --snr {acq.snr:g} --echoes {len(acq.echo_times_ms)}"
            + (" --filtered" if acq.filtered else " --raw") + (f" --anonymize {anonymize}" if anonymize != "none" else "")
            + (" --flip-phase" if flip_phase else ""))
    document = {"schema": R.REALISTIC_SCHEMA, "generator": line, "studies": studies}
    out.mkdir(parents=True, exist_ok=True)
    (out / TRUTH_NAME).write_text(json.dumps(document, indent=1) + "\n")
    return document


def _render_and_write_realistic(task) -> dict:
    plan, acq, convention, out, opts, *header = task        # header: the vendor table's convention (--flip-phase)
    header_convention = header[0] if header else convention
    images, truth = R.make_study(plan, acquisition=acq, convention=convention, seed=opts.seed * 1000 + plan.index,
                                 vendor=opts.vendor)
    truth["vendor_table_convention"] = str(header_convention)
    truth["phase_flipped"] = str(header_convention) != str(convention)
    sub = out / f"study_{plan.index + 1:02d}"
    doc = write_study(images, truth, sub, opts, study_index=plan.index)  # type: ignore[arg-type]
    doc["directory"] = sub.relative_to(out).as_posix()
    return doc


def _command_line(vendor, cohort, seed, style, anonymize, snr, echoes, filtered, size) -> str:
    parts = ["borderphase phantom", f"--vendor {vendor}", f"--seed {seed}", f"--style {style}", f"--size {size}",
             f"--snr {snr:g}", f"--echoes {echoes}"]
    if cohort:
        parts.append(f"--cohort {cohort}")
    if anonymize != "none":
        parts.append(f"--anonymize {anonymize}")
    if filtered:
        parts.append("--filtered")
    return " ".join(parts)


SAMPLE_README = """# sample_dicom: small synthetic GRE studies, one per vendor

Generated by the borderphase physics phantom (`plugin/physics.py`, `plugin/phantom*.py`); every
file here is regenerated exactly (same pixel data, same UIDs, same truth) by

    python -m plugin.phantom --sample-dicom sample_dicom
    # equivalently: borderphase phantom --sample-set --out sample_dicom

| directory | vendor | style | phase convention (default table) | series |
|---|---|---|---|---|
{rows}

Each study: 224 x 224 x 20 axial slices, voxels 0.45 x 0.45 x 2.5 mm (the method paper's in-plane
resolution and slice thickness; the matrix is cropped from 512 x 512 x 60 to keep the set under
20 MB, so the "head" is a small ellipsoid of brain that fits the 101 x 101 x 50 mm field of view),
3 T, TE 25 ms, one echo, SNR 40, raw (unfiltered) phase with a smooth background of about 6 rad
across the brain (it wraps). The same lesions are in every vendor's study; the phase sign follows
the vendor: a microbleed is dark on GE and Philips (right-handed) and bright on Siemens and Canon
(left-handed).

Lesions (uniform spheres, Lorentz-corrected dipole field; interior signal ~0.14 of tissue):

| id | class | diameter mm | chi ppm |
|---|---|---|---|
{lesions}

Two veins run along B0 (round dark/bright dots on every axial slice they cross: mimics to reject)
and one runs in-plane (a line).

`truth.json`: `studies[]`, one per vendor, with `study_instance_uid`, `series_instance_uids`,
`phase_convention`, the geometry (`affine_lps` maps (slice, row, column, 1) to LPS mm), and
`lesions[]` with the GUIDE truth fields `id, class, center_lps_mm, diameter_mm, chi_ppm,
n_slices` (slices where the spot is visible on magnitude) plus `slice_indices`,
`upper_border_slice`, `lower_border_slice`, `central_slice`, the expected `border_pattern` /
`central_pattern` on those slices, and `phase_upper_border_slice` / `phase_lower_border_slice` /
`phase_border_pattern`: the outermost slices where the spot still shows on the *phase* image (the
paper reads "the edge of each dark spot on phase images"); patterns are 1-6 as displayed in that
vendor's convention, computed from the noise-free phase by the rules in
`plugin/phantom_truth.py`. `veins[]`: segments (two along B0, one in-plane).
"""


def write_sample_set(out_dir: str | Path, seed: int = SAMPLE_SEED) -> dict:
    """Write ``sample_dicom``: one small study per vendor, ``truth.json`` and ``README.md``."""
    out = Path(out_dir)
    plan = C.sample_study(seed)
    acq = P.Acquisition()
    studies = []
    for vendor, style in SAMPLE_SET:
        sub = out / vendor
        if sub.exists():
            shutil.rmtree(sub)
        images, truth = P.make_study(plan.lesions, plan.veins, grid=plan.grid, head=plan.head, acquisition=acq,
                                     convention=vendor_convention(vendor), seed=seed, vendor=vendor)
        doc = write_study(images, truth, sub, WriteOptions(vendor, style, "none", seed))
        doc["directory"] = vendor
        studies.append(doc)
    document = {"schema": P.TRUTH_SCHEMA,
                "generator": "python -m plugin.phantom --sample-dicom sample_dicom", "studies": studies}
    (out / TRUTH_NAME).write_text(json.dumps(document, indent=1) + "\n")
    rows = "\n".join(f"| `{d['directory']}/` | {d['vendor']} | {d['style']} | {d['phase_convention']} | "
                     f"{len(set(d['series_instance_uids'].values()))} |" for d in studies)
    lesions = "\n".join(f"| {L['id']} | {L['class']} | {L['diameter_mm']:.1f} | {L['chi_ppm']:+.2f} |" for L in studies[0]["lesions"])
    (out / "README.md").write_text(SAMPLE_README.format(rows=rows, lesions=lesions))
    return document


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m plugin.phantom --sample-dicom DIR``."""
    parser = argparse.ArgumentParser(prog="python -m plugin.phantom", description="Regenerate sample_dicom.")
    parser.add_argument("--sample-dicom", metavar="DIR", required=True, help="output directory (e.g. sample_dicom)")
    parser.add_argument("--seed", type=int, default=SAMPLE_SEED)
    args = parser.parse_args(argv)
    doc = write_sample_set(args.sample_dicom, seed=args.seed)
    print(f"wrote {len(doc['studies'])} studies and truth.json to {args.sample_dicom}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
