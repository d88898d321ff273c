"""``borderphase phantom``: write synthetic vendor-styled GRE studies with known lesions + truth.json.

    borderphase phantom --vendor GE --out DIR [--cohort paper|realistic] [--protocol swi3d|gre3d_1mm|gre2d_5mm]
                        [--seed N] [--style classic|enhanced]
                        [--anonymize none|no_private|no_description|no_manufacturer|vendor_stripped] [--snr S]
                        [--echoes N] [--filtered] [--size small|full] [--flip-phase]
    borderphase phantom --sample-set --out sample_dicom     # regenerate the sample_dicom set
    borderphase phantom --inject-into DIR [DIR...] --out OUT [--studies N] [--seed N]
                        # the paper's lesions injected into a REAL magnitude+phase acquisition
                        # (plugin.inject): copies of its files in their own encoding + truth.json

Deterministic for a seed (pixel data, UIDs and truth).
"""
from __future__ import annotations

import argparse
import logging
import time
from dicom_io.vendors import VENDORS

log = logging.getLogger(__name__)

ANONYMIZE = ("none", "no_private", "no_description", "no_manufacturer", "vendor_stripped")


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "phantom",
        help="write synthetic GRE studies (physics phantom) with truth.json",
        description="Write physics-phantom GRE studies (magnitude + phase) the way a vendor writes them, "
                    "with DIR/truth.json. Deterministic for a seed.",
    )
    p.add_argument("--vendor", type=_vendor, help="GE, Philips, Siemens or Canon: vendor style and phase convention")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    p.add_argument("--cohort", choices=("paper", "realistic"),
                   help="paper: the method paper's 128 microbleeds + 62 calcifications over --studies studies in the simple "
                        "ellipsoid; realistic: the same plus faint and cored lesions in head-like anatomy (skull, air sinuses, "
                        "nuclei, veins, physiological calcifications) acquired with --protocol")
    p.add_argument("--protocol", choices=("swi3d", "gre3d_1mm", "gre2d_5mm"),
                   help="for --cohort realistic (default swi3d): swi3d 0.45x0.45x2.5 mm 3 T TE 25 ms filtered phase; "
                        "gre3d_1mm 1 mm isotropic 3 T 5 echoes raw phase; gre2d_5mm 0.9x0.9x5 mm 1.5 T TE 20 ms raw phase")
    p.add_argument("--studies", type=int, default=None,
                   help="number of studies for --cohort paper|realistic (default 4) or --inject-into (default 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--style", choices=("classic", "enhanced"), default="classic")
    p.add_argument("--anonymize", choices=ANONYMIZE, default="none")
    p.add_argument("--snr", type=float, default=None,
                   help="tissue magnitude / noise sigma at the first echo (default 40; realistic: the protocol's, 25-30)")
    p.add_argument("--echoes", type=int, default=None,
                   help="number of echoes, evenly spaced up to the last TE (default 1; realistic: the protocol's)")
    phase_kind = p.add_mutually_exclusive_group()
    phase_kind.add_argument("--filtered", action="store_true", default=None,
                            help="vendor-like homodyne high-pass (filtered) phase (realistic swi3d: the default)")
    phase_kind.add_argument("--raw", dest="filtered", action="store_false", default=None, help="raw phase (realistic: overrides swi3d's filtered default)")
    p.add_argument("--size", choices=("small", "full"), default="full",
                   help="full: 512x512x60; small: 224x224x20 (0.45x0.45x2.5 mm either way)")
    p.add_argument("--flip-phase", action="store_true",
                   help="for --cohort realistic: render the phase in the opposite convention to the vendor's table "
                        "(a site that flips the phase): tests the data's own convention check")
    p.add_argument("--jobs", type=int, default=None, help="studies rendered in parallel (default: up to 2)")
    p.add_argument("--inject-into", nargs="+", metavar="DIR",
                   help="files or folders of ONE real magnitude+phase acquisition: inject the paper's lesions into its "
                        "complex signal and write copies of its files (own encoding, new UIDs) under --out/study_<i> "
                        "with truth.json (--studies copies, default 1 here)")
    p.add_argument("--lesions", type=int, nargs=2, default=(3, 3), metavar=("MICROBLEEDS", "CALCIFICATIONS"),
                   help="for --inject-into: lesions per study (default 3 3)")
    p.add_argument("--lesion-te-ms", type=float, default=None,
                   help="for --inject-into: make the lesions as at this echo time over the real background "
                        "(default: the series' own echo times)")
    p.add_argument("--lesion-diameter-mm", type=float, nargs=2, default=None, metavar=("LOW", "HIGH"),
                   help="for --inject-into: every lesion's diameter uniform in LOW..HIGH mm, susceptibilities the "
                        "paper's (default: the paper's sizes)")
    p.add_argument("--lesion-t2star-ms", type=float, default=None,
                   help="for --inject-into: T2* of the lesions' inside (default 0.3 ms: a signal void at every echo time)")
    p.add_argument("--sample-set", action="store_true", help="write the sample_dicom set (one small study per vendor) to --out")
    p.set_defaults(run=run)


def _vendor(text: str) -> str:
    for v in VENDORS:
        if v.lower() == text.lower():
            return v
    return text


def run(args: argparse.Namespace) -> int:
    from plugin.phantom import dicom as phantom_dicom

    t0 = time.perf_counter()
    try:
        if args.inject_into:
            from plugin import inject
            if (args.studies is not None and args.studies < 1) or min(args.lesions) < 0 or sum(args.lesions) < 1:
                print("borderphase phantom: --studies must be >= 1 and --lesions at least one lesion")
                return 2
            studies = 1 if args.studies is None else args.studies
            doc = inject.inject_into(args.inject_into, args.out, seed=args.seed, n_studies=studies,
                                     n_microbleeds=args.lesions[0], n_calcifications=args.lesions[1],
                                     lesion_echo_time_ms=args.lesion_te_ms, diameter_range_mm=args.lesion_diameter_mm,
                                     lesion_t2star_ms=(inject.VOID_T2STAR_MS if args.lesion_t2star_ms is None
                                                       else args.lesion_t2star_ms))
        elif args.sample_set:
            doc = phantom_dicom.write_sample_set(args.out)
        else:
            if not args.vendor:
                print("borderphase phantom: --vendor is required (GE, Philips, Siemens, Canon) unless --sample-set")
                return 2
            if (args.echoes is not None and args.echoes < 1) or (args.snr is not None and args.snr <= 0) or (args.studies is not None and args.studies < 1):
                print("borderphase phantom: --echoes and --studies must be >= 1 and --snr > 0")
                return 2
            doc = phantom_dicom.generate(
                args.out, vendor=args.vendor, cohort=args.cohort, seed=args.seed, style=args.style,
                anonymize=args.anonymize, snr=args.snr, echoes=args.echoes, filtered=args.filtered,
                size=args.size, n_studies=4 if args.studies is None else args.studies, jobs=args.jobs, protocol=args.protocol,
                flip_phase=args.flip_phase,
            )
    except ValueError as exc:
        print(f"borderphase phantom: {exc}")
        return 2
    n_lesions = sum(len(s["lesions"]) for s in doc["studies"])
    n_files = sum(s["n_files"] for s in doc["studies"])
    print(f"wrote {len(doc['studies'])} stud{'y' if len(doc['studies']) == 1 else 'ies'}, {n_files} files, "
          f"{n_lesions} lesions and truth.json to {args.out} in {time.perf_counter() - t0:.1f} s")
    return 0
