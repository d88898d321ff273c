"""Speed and memory of the analysis of one 512 x 512 x 60 magnitude + phase pair (reading excluded).

    python benchmarks/analysis_speed.py            # renders one phantom study (paper cohort, study 0)
    python benchmarks/analysis_speed.py --repeat 5
    python benchmarks/analysis_speed.py --six-echo --repeat 5   # issue 10's target: six-echo SWI pair, per stage
    python benchmarks/analysis_speed.py --six-echo --with-qsm   # the same with TE/B0 known: + QSM map, chi, source sizes
    python benchmarks/analysis_speed.py --six-echo --baseline /tmp/old   # before/after, alternating, same load
    python benchmarks/analysis_speed.py --six-echo --echoes 3,6          # a two-echo study (12.6 and 25 ms)

``--with-qsm`` adds the QSM map, the per-spot QSM chi and the bloom model's source sizes to the
stage table.

``--six-echo``: the realistic swi3d study (seed 0, six echoes 4.2-25 ms, scanner-filtered phase,
512 x 512 x 60; plugin.phantom.realistic) rendered once (``--cache DIR`` keeps the rendered echoes
for later runs), then per run in a fresh child: the echo combination + ``analyze_arrays`` timed as the
pipeline runs them (wall and CPU, the 2 s target is on their sum). The combination is the worker's call
(``plugin.pipeline._combine_echoes``: ``combine_echo_volumes``, each phase a deferred volume the fit
reads and owns, every phase read first when more than two, no field volumes kept), its loaders handing
over the arrays already loaded (reading excluded; until the fourteenth session this benchmark called
``combine_echoes`` with the field volumes kept, a call the worker never makes: 0.4-0.6 s more). The brain mask and detection start
on their own thread as soon as the combination has the magnitude, beside its phase fit:
plugin.magnitudereading; ``--serial``: after it, as before), and each stage timed alone,
one after the other (brain mask, detection, background, spot readings, dipole fits, label map):
CPU per stage is what the stage costs; the pipeline's wall is below the stage sum where detection
and background overlap on two threads.

The pair is rendered once by plugin.phantom.render (47-48 lesions + 3 veins, 0.45 x 0.45 x 2.5 mm) as
raw phase and as the scanner's filtered phase, saved to .npy, and each case is timed in a fresh
child process that loads the arrays (not timed) and runs ``plugin.pipeline.analyze_arrays``:
detection, background removal, pattern reading, interpretation. Reported: wall time (median of
``--repeat`` runs), CPU time, and peak memory: the child's peak RSS above its RSS after loading
the arrays, and tracemalloc's peak (numpy reports its buffers to tracemalloc).
Machine load is printed beside: the host is shared, so wall times vary with it.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CHILD = r"""
import json, resource, sys, time, tracemalloc
import numpy as np
sys.path.insert(0, {root!r})
from plugin.pipeline import AnalysisOptions, analyze_arrays
mag = np.load({mag!r}); ph = np.load({ph!r}); aff = np.load({aff!r})
import gc; gc.collect()
rss_now = int(open("/proc/self/statm").read().split()[1]) * 4096 // 1024
rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
tracemalloc.start()
t0 = time.perf_counter(); c0 = time.process_time()
res = analyze_arrays(mag, ph, aff, convention="right-handed", options=AnalysisOptions(background={bg!r}))
wall = time.perf_counter() - t0; cpu = time.process_time() - c0
peak = tracemalloc.get_traced_memory()[1]
rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps(dict(wall_s=wall, cpu_s=cpu, tracemalloc_peak_mb=peak / 2**20, rss_peak_above_load_mb=(rss1 - rss_now) / 1024, rss_after_load_mb=rss_now / 1024,
                      rss_peak_mb=rss1 / 1024, n_lesions=len(res.lesions), notes=res.notes)))
"""


SIX_ECHO_CHILD = r"""
import json, os, sys, time
import numpy as np
sys.path.insert(0, {root!r})
from plugin.method.background import remove_background
from plugin.method.detect import DetectionParams, brain_mask, detect_spots
from plugin.method.dipolefit import b0_in_array_axes, fit_dipole
from plugin.method.spotread import read_spot
from plugin.pipeline import analyze_arrays
if not {serial!r}:   # (a baseline checkout older than it runs serial)
    from plugin.magnitudereading import MagnitudeReading
    try:
        from plugin.pipeline import detection_params
    except ImportError:   # an older tree: one void level for every magnitude
        detection_params = lambda p, _e: p  # noqa: E731
d = np.load({npz!r})
idx = [i for i in range(len(d["te"])) if i + 1 in {echoes!r}] if {echoes!r} else list(range(len(d["te"])))
# each echo its own array, as the worker holds them (``d["mag"][i]`` would read the whole six-echo stack
# again per echo and keep six copies of it alive behind the views: 4.5 GB resident)
all_mag, all_ph = d["mag"], d["ph"]
mags, phs = [all_mag[i].copy() for i in idx], [all_ph[i].copy() for i in idx]
tes, aff = [float(d["te"][i]) for i in idx], d["aff"]
del all_mag, all_ph
voxel = tuple(float(np.linalg.norm(aff[:3, i])) for i in range(3))
rows = {{}}
def timed(name, fn):
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    rows[name] = (time.perf_counter() - w, time.process_time() - c)
    return out
load = os.getloadavg()[0]
early = {{}}   # as the pipeline runs it: the magnitude's mask and detection start beside the echo fit
on_mag = None if {serial!r} else (lambda m, *e: early.setdefault(
    "reading", MagnitudeReading(m, voxel, detection_params(DetectionParams(), e[0] if e else None))))
# the combination as the worker runs it (plugin.pipeline._combine_echoes -> combine_echo_volumes): the
# latest echo first, each phase a deferred volume the fit reads and then owns (the last one becomes
# the output phase in place), every phase read before the fit when more than two (the worker's
# budget allows it for this study), no field volumes kept. The loaders hand over the arrays loaded
# above: reading is excluded.
import dataclasses, inspect
from dicom_io.read.volume import Volume
from plugin.method.echoes import DeferredVolume, combine_echo_volumes
def volume(data, te, component, k):
    return Volume(series_instance_uid=f"1.2.3.{{k}}", study_instance_uid="1.2.3", frame_of_reference_uid=None, vendor="phantom",
                  component=component, component_source="benchmark", echo_number=k + 1, echo_time_ms=te, data=data,
                  affine_lps=np.asarray(aff, float), frames=[])
def deferred(k):
    v = volume(phs[k], tes[k], "phase", k)
    return DeferredVolume(tes[k], v.affine_lps, tuple(v.data.shape), v.series_instance_uid, load=lambda: v)
echo_vols = [(volume(mags[k], tes[k], "magnitude", k), deferred(k)) for k in reversed(range(len(tes)))]
del mags, phs   # the fit owns the phases, as in the worker
kw = dict(load_all_phases=len(tes) > 2) if "load_all_phases" in inspect.signature(combine_echo_volumes).parameters else {{}}
if on_mag:
    kw["on_magnitude"] = on_mag
mvol, pvol, _note, _raw, mag_echoes = timed("echo combination", lambda: combine_echo_volumes(echo_vols, **kw))
del echo_vols
# every echo's share of the average (as the pipeline passes it): the detection's void level is the average's,
# which the magnitude reading started beside the fit used too (else analyze_arrays computes it again)
full = dict(echo_time_ms=pvol.echo_time_ms, field_strength_t=3.0) if {with_qsm!r} else {{}}
if "magnitude_echoes" in inspect.signature(analyze_arrays).parameters:
    full["magnitude_echoes"] = mag_echoes
res = timed("analyze_arrays", lambda: analyze_arrays(mvol.data, pvol.data, aff, convention="right-handed",
                                                     **({{"magnitude_reading": early["reading"]}} if early else {{}}), **full))
m, p = mvol.data, pvol.data
mask = timed("brain mask", lambda: brain_mask(m, voxel, DetectionParams()))
det = timed("detection", lambda: detect_spots(m, voxel, DetectionParams(), mask=mask))
local, wrapped, _ = timed("background", lambda: remove_background(p, m, mask, voxel, method="auto"))
up, b0 = bool(aff[2, 0] > 0), b0_in_array_axes(aff)
timed("spot readings", lambda: [read_spot(local, m, s, voxel, det.noise_sigma, up, wrapped=wrapped) for s in det.spots])
timed("dipole fits", lambda: [fit_dipole(local, m, s, voxel, det.noise_sigma, convention="right-handed", wrapped=wrapped,
                                         b0_axes=b0) for s in det.spots])
def label_map():
    lm = np.zeros(m.shape, np.uint16)
    for i, s in enumerate(det.spots, start=1):
        v = lm[s.bbox]
        v[s.footprint & (v == 0)] = i
timed("label map", label_map)
if {with_qsm!r}:
    from plugin.method.bloom import source_diameter
    from plugin.method.morphology import fill_holes
    from plugin.method.qsm import compute_qsm, spot_susceptibility
    te, fits = pvol.echo_time_ms, [fit_dipole(local, m, s, voxel, det.noise_sigma, convention="right-handed", wrapped=wrapped,
                                                  b0_axes=b0, echo_time_ms=pvol.echo_time_ms, field_strength_t=3.0)
                                       for s in det.spots]
    q = timed("QSM map", lambda: compute_qsm(local, mask & fill_holes(local != 0), aff, echo_time_ms=te, field_strength_t=3.0,
                                             convention="right-handed"))
    timed("spot QSM chi", lambda: [spot_susceptibility(q, s.footprint, s.bbox, voxel, s.diameter_mm) for s in det.spots])
    timed("source sizes (bloom)", lambda: [source_diameter(4 * np.pi * f.moment, s.diameter_mm, voxel, b0, full["magnitude_echoes"], 3.0)
                                           for s, f in zip(det.spots, fits) if f.usable and f.moment and f.moment_unit.startswith("ppm")])
import hashlib   # the results' fingerprint: the ways and checkouts compared report the same
sig = hashlib.sha1(repr(([(l.center_lps_mm, l.diameter_mm, l.classification.value, l.reason, l.confidence) for l in res.lesions],
                         res.rejected, res.notes)).encode()).hexdigest()[:12]
print(json.dumps(dict(rows=rows, load=load, n_lesions=len(res.lesions), results_sha1=sig)))
"""

STAGES = ("brain mask", "detection", "background", "spot readings", "dipole fits", "label map")
QSM_STAGES = ("QSM map", "spot QSM chi", "source sizes (bloom)")   # with --with-qsm


def six_echo(args) -> int:
    """Issue 10's speed target: the six-echo 512 x 512 x 60 SWI pair, per stage."""
    import shlex
    cache = Path(args.cache) if args.cache else Path(tempfile.mkdtemp(prefix="bp_speed6_"))
    npz = cache / "swi3d_six_echo_seed0.npz"
    if not npz.exists():
        from plugin.phantom import realistic as R
        plan = R.realistic_cohort(0, protocol="swi3d", n_studies=1)[0]
        images, _ = R.make_study(plan, acquisition=R.PROTOCOLS["swi3d"].acquisition(echoes=6), convention="right-handed",
                                 seed=0)
        cache.mkdir(parents=True, exist_ok=True)
        np.savez(npz, mag=np.asarray(images.magnitude, np.float32), ph=np.asarray(images.phase_rad, np.float32),
                 te=np.asarray(images.echo_times_ms, float), aff=images.affine_lps)
        del images
    # (label, checkout, serial); a baseline checkout (older code) runs the serial way
    roots = ([("this checkout, mask and detection beside the echo fit", ROOT, False), ("this checkout, serial", ROOT, True)]
             if args.compare_serial else [("this checkout", ROOT, args.serial)])
    roots += [("baseline " + args.baseline, Path(args.baseline).resolve(), True)] if args.baseline else []
    all_runs: dict[str, list] = {label: [] for label, *_ in roots}
    for i in range(args.repeat):   # with --baseline or --compare-serial: the two alternate, in turn first
        for label, root, serial in (roots if i % 2 == 0 else roots[::-1]):
            out = subprocess.run([sys.executable, "-c", SIX_ECHO_CHILD.format(root=str(root), npz=str(npz), with_qsm=args.with_qsm, echoes=args.echoes,
                                                                          serial=serial)],
                                 capture_output=True, text=True, check=True, env=dict(os.environ, PYTHONPATH=str(root)))
            all_runs[label].append(json.loads(out.stdout.strip().splitlines()[-1]))
    command = "python benchmarks/analysis_speed.py " + " ".join(shlex.quote(a) for a in (args.argv or []))
    print(f"command: {command}")
    for label, runs in all_runs.items():
        _six_echo_table(args, runs, label if len(roots) > 1 else "")
    return 0


def _six_echo_table(args, runs: list, label: str) -> None:
    """The per-stage table of one checkout's runs."""
    import statistics
    med = lambda name, k: statistics.median(r["rows"][name][k] for r in runs)   # noqa: E731
    lo_hi = lambda name, k: (min(r["rows"][name][k] for r in runs), max(r["rows"][name][k] for r in runs))  # noqa: E731
    loads = [r["load"] for r in runs]
    what = " with QSM, chi and source sizes (TE, B0 known)" if args.with_qsm else ""
    n_echoes = f"echoes {','.join(map(str, args.echoes))} of 6" if args.echoes else "6 echoes"
    print(f"{label + ': ' if label else ''}borderphase six-echo analysis speed{what}: swi3d seed 0, {n_echoes}, 512 x 512 x 60, reading excluded, "
          f"{os.cpu_count()} cores, median of {args.repeat} runs, load average {min(loads):.1f}-{max(loads):.1f}, "
          f"{runs[0]['n_lesions']} lesions reported (results SHA-1 "
          f"{', '.join(sorted(set(r.get('results_sha1', '?') for r in runs)))})")
    print(f"| stage | wall s | CPU s | CPU min-max |")
    print(f"|---|---|---|---|")
    stages = STAGES + (QSM_STAGES if args.with_qsm else ())
    for name in ("echo combination",) + stages:
        lo, hi = lo_hi(name, 1)
        print(f"| {name} | {med(name, 0):.2f} | {med(name, 1):.2f} | {lo:.2f}-{hi:.2f} |")
    stage_cpu = sum(med(n, 1) for n in stages)
    print(f"| (analysis stages, one after the other) | {sum(med(n, 0) for n in stages):.2f} | {stage_cpu:.2f} | |")
    lo, hi = lo_hi("analyze_arrays", 1)
    print(f"| analyze_arrays as the pipeline runs it | {med('analyze_arrays', 0):.2f} | {med('analyze_arrays', 1):.2f} | {lo:.2f}-{hi:.2f} |")
    tot_w = [r["rows"]["echo combination"][0] + r["rows"]["analyze_arrays"][0] for r in runs]
    tot_c = [r["rows"]["echo combination"][1] + r["rows"]["analyze_arrays"][1] for r in runs]
    tw, tc = statistics.median(tot_w), statistics.median(tot_c)
    print(f"| **total: combination + analysis** | **{tw:.2f}** ({min(tot_w):.2f}-{max(tot_w):.2f}) | {tc:.2f} | "
          f"{min(tot_c):.2f}-{max(tot_c):.2f} |")
    print(f"target <= 2 s wall on 2 cores: {'met' if tw <= 2.0 else 'not met'} at load {statistics.median(loads):.1f} "
          f"(CPU {tc:.2f} s: {'fits' if tc <= 4.0 else 'exceeds'} 2 cores x 2 s)")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--six-echo", action="store_true", help="the six-echo swi3d pair, per stage (issue 10's target)")
    ap.add_argument("--with-qsm", action="store_true",
                    help="with --six-echo: pass the echo time, field strength and echo weights as the pipeline does "
                         "from the headers, so analyze_arrays also makes the QSM map, per-spot chi and source sizes")
    ap.add_argument("--baseline", default="", metavar="DIR",
                    help="with --six-echo: another checkout of the code (e.g. `git archive <commit> | tar -x -C DIR`) run "
                         "alternately with this one in the same loop, each with its own table (before/after under the same load)")
    ap.add_argument("--echoes", type=lambda v: [int(x) for x in v.split(",")], default=[], metavar="N,N",
                    help="with --six-echo: only these echoes (1-6 by echo time, e.g. 3,6 for a two-echo study: 12.6 and 25 ms)")
    ap.add_argument("--cache", default="", help="with --six-echo: folder keeping the rendered echoes between runs")
    ap.add_argument("--serial", action="store_true",
                    help="with --six-echo: brain mask and detection after the echo combination, not beside its phase "
                         "fit (the pipeline before 2026-12-03)")
    ap.add_argument("--compare-serial", action="store_true",
                    help="with --six-echo: both ways alternately in the same loop, each with its own table")
    args = ap.parse_args(argv)
    args.argv = list(argv if argv is not None else sys.argv[1:])
    if args.six_echo:
        return six_echo(args)
    from dataclasses import replace

    from plugin.phantom import render as phantom
    from plugin.phantom.cohort import paper_cohort

    plan = paper_cohort(0)[0]
    cases = []
    with tempfile.TemporaryDirectory(prefix="bp_speed_") as tmp:
        for label, acq in (("raw phase", phantom.Acquisition()), ("filtered phase", replace(phantom.Acquisition(), filtered=True))):
            images, _ = phantom.make_study(plan.lesions, plan.veins, grid=plan.grid, head=plan.head, acquisition=acq, seed=0)
            stem = Path(tmp) / label.replace(" ", "_")
            np.save(f"{stem}_mag.npy", images.magnitude[-1])
            np.save(f"{stem}_ph.npy", images.phase_rad[-1])
            np.save(f"{stem}_aff.npy", images.affine_lps)
            shape = images.magnitude[-1].shape
            del images
            for bg in (("auto", "homodyne") if label == "raw phase" else ("auto",)):
                runs = []
                for _ in range(args.repeat):
                    code = CHILD.format(root=str(ROOT), mag=f"{stem}_mag.npy", ph=f"{stem}_ph.npy", aff=f"{stem}_aff.npy", bg=bg)
                    load = os.getloadavg()[0]
                    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
                    r = json.loads(out.stdout.strip().splitlines()[-1])
                    r["load"] = load
                    runs.append(r)
                runs.sort(key=lambda r: r["wall_s"])
                med = runs[len(runs) // 2]
                cases.append((label, bg, shape, med, runs))
    print(f"borderphase analysis speed: one {shape[2]} x {shape[1]} x {shape[0]} pair, reading excluded, "
          f"{os.cpu_count()} cores, median of {args.repeat} runs")
    print(f"{'input':<16}{'background':<12}{'wall s':>8}{'(min-max)':>14}{'cpu s':>8}{'peak RSS above load MB':>24}"
          f"{'tracemalloc peak MB':>21}{'spots':>7}{'load avg':>10}")
    for label, bg, shape, med, runs in cases:
        print(f"{label:<16}{bg:<12}{med['wall_s']:8.2f}{'(' + format(runs[0]['wall_s'], '.2f') + '-' + format(runs[-1]['wall_s'], '.2f') + ')':>14}"
              f"{med['cpu_s']:8.2f}{med['rss_peak_above_load_mb']:24.0f}{med['tracemalloc_peak_mb']:21.0f}{med['n_lesions']:7d}"
              f"{med['load']:10.1f}")
    print("input pair: 2 x %.0f MB float32" % (np.prod(shape) * 4 / 2**20))
    return 0


if __name__ == "__main__":
    sys.exit(main())
