"""Load benchmark of the DICOM node (issue 6), compared with dcmtk storescp in the same run.

    python benchmarks/load_benchmark.py [--studies 9] [--senders 4] [--quiet-period 5] [--work DIR]

1. Data: one physics-phantom study (``borderphase phantom --vendor Siemens --echoes 2 --size full``:
   512 x 512 x 60, two echoes, magnitude + phase = 240 16-bit instances), copied with fresh UIDs to
   ``--studies`` studies (9 -> 2,160 instances).
2. Baseline: dcmtk ``storescp`` receives everything from ``--senders`` concurrent dcmtk ``storescu``;
   then a node without analysis workers receives the same (the receiver's own cost). Each takes
   about a second, so the two are alternated ``--receive-repeats`` times (default 3) and their
   medians compared (each pair's ratio printed too).
3. Node: ``borderphase serve`` (real pipeline, SQLite queue, results to a real Orthanc) receives the
   same load from the same senders; then every study must end analysed with its SR in Orthanc.
4. Idle latency: one more study sent alone to the idle node; time from its last instance stored to
   its SR accepted by Orthanc, split into completion wait, queue wait, analysis and delivery.
5. ``--six-echo``: then a 6-echo study (the paper's protocol: 720 instances, 360 MB of pixels) sent
   alone: its idle latency and the analysis worker's peak RSS (VmHWM of the forked workers, the
   2-echo figure taken before it is sent).
6. ``--compare-workers 1``: the same load again on a fresh node with that many SQLite workers (median
   last instance -> SR beside the main run's ``--workers``).
7. ``--redis-workers 1,2``: the Redis mode (real redis-server, ``serve`` receiving only, N separate
   ``serve --worker --workers 1`` processes): studies/hour from the first instance sent to the last
   study's results accepted by Orthanc.
Prints a JSON report and a Markdown table. TCP_NODELAY=1 is exported for dcmtk and Orthanc.

    python benchmarks/load_benchmark.py --idle-only N [--echoes 6] [--no-speculative] [--work DIR]

only the idle latency: N fresh copies of the study sent one at a time to an idle node; per study
last instance -> SR accepted, split into the completion wait and completion -> SR accepted
(with ``[queue] speculative`` the analysis starts at the release and overlaps the wait).

    python benchmarks/load_benchmark.py --qsm-latency 3 [--work DIR]

runs only the idle-latency step, for the QSM series (issue 11): two idle nodes (real pipeline),
one with ``[analysis] qsm_series = true`` (the default), one with ``false``, deliver to one real
Orthanc; R fresh copies of the study go to each, alternately (on/off, then off/on, ...), one at a
time. Per study: last instance stored -> SR visible in Orthanc (polled every 0.1 s) and -> all
results delivered (the outbox entry), with the analysis time; then the medians and the growth.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from node_helpers import (Orthanc, child_pids, free_port, node_env, start_redis, start_serve, stop_proc, wait_for,  # noqa: E402
                          wait_port, write_config)

STORESCU, STORESCP = "/usr/bin/storescu", "/usr/bin/storescp"
RECEIVE_PROCESSES: int | None = None  # --receive-processes; None: the node's default (one per core, at most 4)
KEEP_FREED_MEMORY = False             # --keep-freed-memory: the node's [queue] keep_freed_memory = true


def with_queue_settings(cfg: Path) -> Path:
    """The node config ``cfg`` with this run's [queue] settings (``--keep-freed-memory``) added."""
    if KEEP_FREED_MEMORY:
        cfg.write_text(cfg.read_text().replace("[queue]\n", "[queue]\nkeep_freed_memory = true\n", 1))
    return cfg


def make_source(work: Path, echoes: int = 2) -> Path:
    src = work / ("phantom" if echoes == 2 else f"phantom_{echoes}echoes")
    if not (src / "truth.json").exists():
        subprocess.run([sys.executable, "-m", "plugin.cli", "phantom", "--vendor", "Siemens", "--out", str(src),
                        "--echoes", str(echoes), "--size", "full", "--seed", "7"], cwd=REPO, check=True)
    return src


def prepared_study(src: Path, d: Path) -> dict:
    """``src`` copied with fresh UIDs to ``d/dicom`` once (kept in ``d/meta.json`` for reruns)."""
    meta = d / "meta.json"
    if meta.exists():
        return json.loads(meta.read_text()) | {"dir": d}
    info = copy_study(src, d / "dicom")
    meta.write_text(json.dumps({"study_uid": info["study_uid"], "n": info["n"]}))
    return {"study_uid": info["study_uid"], "n": info["n"], "dir": d}


def copy_study(src: Path, dst: Path) -> dict:
    """Copy every DICOM file of ``src`` with new Study/Series/SOP/Frame-of-reference UIDs."""
    from pydicom import dcmread
    from pydicom.uid import generate_uid
    uid_map: dict[str, str] = {}
    dst.mkdir(parents=True, exist_ok=True)
    study = None
    files = sorted(p for p in src.rglob("*") if p.is_file() and p.suffix != ".json")
    for i, p in enumerate(files):
        ds = dcmread(p)
        for kw in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID"):
            if kw in ds:
                old = str(ds.data_element(kw).value)
                uid_map.setdefault(old, generate_uid())
                setattr(ds, kw, uid_map[old])
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        study = str(ds.StudyInstanceUID)
        ds.save_as(dst / f"{i:04d}.dcm", enforce_file_format=True)
    return {"study_uid": study, "dir": dst, "n": len(files)}


def run_senders(port: int, aec: str, groups: list[list[Path]]) -> dict:
    """One storescu process per group (each sends its studies one association per study dir)."""
    t0 = time.time()
    procs = []
    for g in groups:
        for_group = []
        for d in g:
            for_group.append(d)
        procs.append(subprocess.Popen(
            ["bash", "-c", " && ".join(f"{STORESCU} -aet SCANNER -aec {aec} +sd -nh 127.0.0.1 {port} {d}" for d in for_group)],
            env=node_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    outs = [p.communicate()[0].decode(errors="replace") for p in procs]
    wall = time.time() - t0
    failed = [o for p, o in zip(procs, outs) if p.returncode != 0]
    return {"wall_s": wall, "failed_senders": len(failed), "errors": [o[-500:] for o in failed]}


def peak_rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def descendant_pids(pid: int) -> list[int]:
    out, todo = [], child_pids(pid)
    while todo:
        c = todo.pop()
        out.append(c)
        todo += child_pids(c)
    return out


class RssSampler(threading.Thread):
    """Peak RSS (VmHWM) of a process and, separately, the largest of its child processes (forked
    analysis workers), sampled until stopped."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.peak_mb, self.child_peak_mb, self.stop_flag = pid, 0.0, 0.0, threading.Event()

    def run(self):
        while not self.stop_flag.is_set():
            v = peak_rss_mb(self.pid)
            if v:
                self.peak_mb = max(self.peak_mb, v)
            for c in descendant_pids(self.pid):   # workers, and their per-study analysis processes
                v = peak_rss_mb(c)
                if v:
                    self.child_peak_mb = max(self.child_peak_mb, v)
            self.stop_flag.wait(0.5)


def cpu_s(pid: int, reaped_children: bool = False) -> float:
    """User + system CPU seconds a process has used (all its threads), 0 when it is gone; with
    ``reaped_children`` also its children's that it has waited for (a worker's per-study analysis
    processes, ``[queue] study_process``)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        n = 4 if reaped_children else 2
        return sum(int(f) for f in fields[11:11 + n]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def machine_speed() -> dict:
    """What the latency figures depend on: the CPU's model and one core's pure-Python speed (ms for
    ``sum(range(10**6))``, best of 5; 29 ms on the 2.45 GHz EPYC of 2026-12-02's seventh session, where
    a 2-echo study took 2.5 x the worker CPU of the sixth session's machine: benchmarks/load.md)."""
    import timeit
    model = ""
    try:
        model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("model name")), "")
    except OSError:
        pass
    best = min(timeit.repeat("sum(range(10**6))", number=5, repeat=5)) / 5
    return {"cpu_model": model, "python_sum_range_1e6_ms": round(best * 1e3, 1)}


def split(items: list, k: int) -> list[list]:
    return [items[i::k] for i in range(k) if items[i::k]]


def start_storescp(out: Path) -> tuple[subprocess.Popen, int]:
    """dcmtk ``storescp`` (+B: bit-preserving, no fsync) receiving into a fresh ``out``, listening:
    (process, port)."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    port = free_port()
    scp = subprocess.Popen([STORESCP, "-aet", "STORESCP", "-od", str(out), "-uf", "+B", str(port)],
                           env=node_env(), stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    wait_port(port)
    return scp, port


def fresh_node(work: Path, tag: str, quiet_s: float, *, workers: int, **config) -> tuple[int, "Orthanc", Path, Path]:
    """An empty Orthanc (``work/orthanc<tag>``) and the config of a node with an empty state
    (``work/state<tag>``) delivering to it: (node port, Orthanc, state dir, config file)."""
    node_port = free_port()
    shutil.rmtree(work / f"orthanc{tag}", ignore_errors=True)
    orthanc = Orthanc(work / f"orthanc{tag}", node_port).start()
    state = work / f"state{tag}"
    shutil.rmtree(state, ignore_errors=True)
    cfg = write_config(work / f"node{tag}.toml", state, node_port, quiet_s=quiet_s, grace_s=2.0,
                       receive_processes=RECEIVE_PROCESSES,
                       workers=workers, retry_initial_s=1, retry_max_s=10, **config,
                       destinations={"orthanc": {"ae_title": "ORTHANC", "host": "127.0.0.1", "port": orthanc.dicom_port}})
    return node_port, orthanc, state, with_queue_settings(cfg)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--studies", type=int, default=9)
    ap.add_argument("--senders", type=int, default=4)
    ap.add_argument("--quiet-period", type=float, default=5.0)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--worker-type", default="process", choices=("thread", "process"))
    ap.add_argument("--six-echo", action="store_true", help="also a 6-echo study (720 instances) sent alone")
    ap.add_argument("--compare-workers", default="", help="comma list: the load again with these SQLite worker counts")
    ap.add_argument("--redis-workers", default="", help="comma list: the load in the Redis mode with these worker processes")
    ap.add_argument("--work", default=None, help="work dir (kept); default: a temp dir removed at the end")
    ap.add_argument("--timeout", type=float, default=3600)
    ap.add_argument("--qsm-latency", type=int, default=0, metavar="R",
                    help="only the idle latency with and without the QSM series, R studies each (module docstring)")
    ap.add_argument("--receive-only", action="store_true",
                    help="run only the receiving steps (storescp baseline, node receiving without analysis)")
    ap.add_argument("--receive-repeats", type=int, default=3, metavar="N",
                    help="storescp and the node receiving only, alternated N times; the medians are compared")
    ap.add_argument("--receive-processes", type=int, default=None, metavar="N",
                    help="[receive] processes of the node (default: the node's own default, one per core up to 4)")
    ap.add_argument("--echoes", type=int, default=2, help="echoes of the phantom study (2: 240 instances; 6: 720)")
    ap.add_argument("--idle-only", type=int, default=0, metavar="N",
                    help="only the idle-latency part: N studies sent one at a time to an idle node (each after "
                         "the previous one's results are in Orthanc); no storescp, no load")
    ap.add_argument("--no-speculative", action="store_true",
                    help="with --idle-only: the node's [queue] speculative = false (analysis only at completion)")
    ap.add_argument("--no-study-process", action="store_true",
                    help="with --idle-only: the node's [queue] study_process = false (each study analysed in the "
                         "worker process itself, not in a child forked per study)")
    ap.add_argument("--keep-freed-memory", action="store_true",
                    help="the node's [queue] keep_freed_memory = true (workers keep freed memory for the next study)")
    args = ap.parse_args(argv)
    global RECEIVE_PROCESSES, KEEP_FREED_MEMORY
    RECEIVE_PROCESSES = args.receive_processes
    KEEP_FREED_MEMORY = args.keep_freed_memory
    os.environ["TCP_NODELAY"] = "1"
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="bp-load-"))
    work.mkdir(parents=True, exist_ok=True)
    src = make_source(work, args.echoes)
    if args.idle_only:
        return idle_only(args, work, src)
    studies = []
    for i in range(2 * args.qsm_latency if args.qsm_latency else args.studies + 1):
        d = work / "studies" / f"s{i:02d}"
        meta = d / "meta.json"
        if meta.exists():
            studies.append(json.loads(meta.read_text()) | {"dir": d})
            continue
        info = copy_study(src, d / "dicom")
        studies.append({"study_uid": info["study_uid"], "n": info["n"], "dir": d})
        meta.write_text(json.dumps({"study_uid": info["study_uid"], "n": info["n"]}))
    if args.qsm_latency:
        code = qsm_latency(args, work, studies)
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
        return code
    load, idle = studies[:-1], studies[-1]
    n_load = sum(s["n"] for s in load)
    groups = split([s["dir"] / "dicom" for s in load], args.senders)
    report: dict = {"studies": len(load), "instances": n_load, "senders": len(groups),
                    "load_average_1min_start": round(os.getloadavg()[0], 1),
                    "rows_columns_bits": "512x512x16", "quiet_period_s": args.quiet_period,
                    "workers": args.workers, "worker_type": args.worker_type, "cpus": os.cpu_count(),
                    "machine": machine_speed()}

    # -- baseline: dcmtk storescp, and the node receiving only (no analysis workers), alternated -----
    # each is about a second of sending: one pair is noise (storescp alone moved 923-1594 img/s
    # between back-to-back runs, load.md "Seventeenth session"), so --receive-repeats pairs are run
    # and the medians compared
    warm_page_cache(s["dir"] / "dicom" for s in load)   # no timed run reads the senders' files from disk
    scp_runs, rx_runs = [], []
    for _ in range(max(args.receive_repeats, 1)):
        scp_runs.append(storescp_run(work, groups, n_load))
        rx_runs.append(node_receive_only_run(args, work, groups, n_load, load))
    report["storescp"] = median_run(scp_runs)
    report["node_receive_only"] = median_run(rx_runs)
    report["receive_pairs"] = [{"storescp_images_per_s": a["images_per_s"], "node_images_per_s": b["images_per_s"],
                                "ratio": round(b["images_per_s"] / a["images_per_s"], 2)}
                               for a, b in zip(scp_runs, rx_runs)]
    report["node_receive_only"]["ratio_to_storescp"] = round(
        report["node_receive_only"]["images_per_s"] / report["storescp"]["images_per_s"], 2)
    if args.receive_only:
        report["load_average_1min_end"] = round(os.getloadavg()[0], 1)
        print(json.dumps(report, indent=2))
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
        return 0

    # -- the node, same load, analysing and delivering to Orthanc ------------------------------
    node_port, orthanc, state, cfg = fresh_node(work, "", args.quiet_period, workers=args.workers)
    cfg.write_text(cfg.read_text().replace('workers = %d' % args.workers,
                                           'workers = %d\nworker_type = "%s"' % (args.workers, args.worker_type)))
    node = start_serve(cfg, node_port, work / "node.log", stand_in=False)  # the real pipeline
    sampler = RssSampler(node.pid)
    sampler.start()
    try:
        from plugin.service.state import StateLayout
        from plugin.service.status import collect
        layout = StateLayout(state)
        r = run_senders(node_port, "BPNODE", groups)
        spooled = sum(len(list((state / "spool" / s["study_uid"]).rglob("*.dcm"))) for s in load)
        report["node_receive"] = {"wall_s": round(r["wall_s"], 2), "images_per_s": round(n_load / r["wall_s"], 1),
                                  "spooled": spooled, "failed_senders": r["failed_senders"], "errors": r["errors"]}

        def all_done(n):
            st = collect(state)
            done = [s for s in st["studies"] if s["state"] in ("analysed", "failed")]
            return st if len(done) == n and not st["outbox"]["pending"] else None

        t_recv_end = time.time()
        st = wait_for(lambda: all_done(len(load)), args.timeout, interval_s=1.0, what="all studies analysed")
        report["node_drain_s_after_receive"] = round(time.time() - t_recv_end, 1)
        report["load_latency_s"] = latencies(layout, [s["study_uid"] for s in load])
        report["states"] = st["counts"]

        # -- idle latency: one study alone ------------------------------------------------------
        r = run_senders(node_port, "BPNODE", [[idle["dir"] / "dicom"]])
        wait_for(lambda: all_done(len(load) + 1), args.timeout, interval_s=0.2, what="idle study analysed")
        report["idle_latency"] = latencies(layout, [idle["study_uid"]], detail=True)[0]
        sent = list(studies)
        if args.six_echo:   # the paper's protocol, alone: latency and the worker's peak RSS
            two = latencies(layout, [x["study_uid"] for x in load] + [idle["study_uid"]], detail=True)
            report["worker_peak_rss_mb_2echo"] = round(max([sampler.child_peak_mb] + [
                d["analysis_peak_rss_mib"] for d in two if d["analysis_peak_rss_mib"] is not None]), 1)
            six = prepared_study(make_source(work, echoes=6), work / "studies" / "six_echo")
            t_six = time.time()
            run_senders(node_port, "BPNODE", [[six["dir"] / "dicom"]])
            report["six_echo_send_s"] = round(time.time() - t_six, 2)
            wait_for(lambda: all_done(len(load) + 2), args.timeout, interval_s=0.2, what="6-echo study analysed")
            time.sleep(1.0)   # one more RSS sample
            d6 = latencies(layout, [six["study_uid"]], detail=True)[0]
            report["six_echo"] = d6 | {
                "instances": six["n"], "pixel_mb": round(pixel_mb(six["dir"] / "dicom"), 1),
                "worker_peak_rss_mb": round(max(sampler.child_peak_mb, d6["analysis_peak_rss_mib"] or 0.0), 1)}
            sent.append(six)
        # SR of every study in Orthanc
        missing = []
        for s in sent:
            series = orthanc.series_of(s["study_uid"])
            if not any(x["MainDicomTags"].get("Modality") == "SR" for x in series):
                missing.append(s["study_uid"])
        report["studies_without_sr_in_orthanc"] = missing
    finally:
        sampler.stop_flag.set()
        sampler.join()
        report["node_peak_rss_mb"] = round(sampler.peak_mb, 1)
        report["worker_peak_rss_mb"] = round(sampler.child_peak_mb, 1)
        stop_proc(node)
        orthanc.stop()
    for n in [int(x) for x in args.compare_workers.split(",") if x.strip()]:
        report.setdefault("compare_workers", []).append(
            analysing_run(work, f"sqlite{n}", groups, load, args.quiet_period, args.timeout, workers=n))
    for n in [int(x) for x in args.redis_workers.split(",") if x.strip()]:
        report.setdefault("redis", []).append(
            analysing_run(work, f"redis{n}", groups, load, args.quiet_period, args.timeout, workers=n, redis=True))
    print(json.dumps(report, indent=2))
    print(markdown(report))
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def _sr_in_orthanc(orthanc, study_uid: str) -> bool:
    oid = orthanc.find_study(study_uid)
    return bool(oid) and any(s["MainDicomTags"].get("Modality") == "SR"
                             for s in orthanc.get(f"/studies/{oid}/series?expand"))


def qsm_latency(args, work: Path, studies: list[dict]) -> int:
    """Idle last-instance -> SR latency with and without the QSM series (``--qsm-latency R``)."""
    from plugin.service.state import StateLayout
    orthanc = Orthanc(work / "orthanc_qsm", free_port()).start()
    nodes: dict[str, tuple] = {}
    rows: list[dict] = []
    try:
        for setting in ("on", "off"):
            port = free_port()
            state = work / f"state_qsm_{setting}"
            shutil.rmtree(state, ignore_errors=True)
            cfg = write_config(work / f"node_qsm_{setting}.toml", state, port, quiet_s=args.quiet_period, grace_s=2.0,
                               receive_processes=RECEIVE_PROCESSES,
                               workers=1, retry_initial_s=1, retry_max_s=10,
                               destinations={"orthanc": {"ae_title": "ORTHANC", "host": "127.0.0.1",
                                                         "port": orthanc.dicom_port}})
            cfg.write_text(cfg.read_text() + f"\n[analysis]\nqsm_series = {'true' if setting == 'on' else 'false'}\n")
            node = start_serve(cfg, port, work / f"node_qsm_{setting}.log", stand_in=False)   # the real pipeline
            nodes[setting] = (node, port, StateLayout(state))
        queue = list(studies)
        for i in range(args.qsm_latency):
            for setting in (("on", "off") if i % 2 == 0 else ("off", "on")):
                study = queue.pop(0)
                _, port, layout = nodes[setting]
                uid = study["study_uid"]
                run_senders(port, "BPNODE", [[study["dir"] / "dicom"]])
                wait_for(lambda: _sr_in_orthanc(orthanc, uid), args.timeout, interval_s=0.1, what="SR in Orthanc")
                t_sr = time.time()
                wait_for(lambda: list(layout.outbox_sent.glob(f"{uid}-v*.json")) or None, args.timeout,
                         interval_s=0.2, what="results delivered")
                d = latencies(layout, [uid], detail=True)[0]
                last_in = max(p.stat().st_mtime for p in (layout.spool / uid).rglob("*.dcm"))
                d |= {"qsm_series": setting, "sr_in_orthanc_s": round(t_sr - last_in, 2),
                      "result_files": len((layout.result(uid, d["versions"]) or {}).get("result_files", []))}
                rows.append(d)
                print(json.dumps(d), flush=True)
    finally:
        for node, _, _ in nodes.values():
            stop_proc(node)
        orthanc.stop()

    def median(setting: str, key: str) -> float:
        values = sorted(r[key] for r in rows if r["qsm_series"] == setting and r[key] is not None)
        return values[len(values) // 2] if values else float("nan")

    keys = ("sr_in_orthanc_s", "total_s", "analysis_s", "delivery_s", "completion_wait_s", "result_files")
    print("| median over %d studies each | QSM series on | off | growth |" % args.qsm_latency)
    print("|---|---|---|---|")
    for key in keys:
        on, off = median("on", key), median("off", key)
        print(f"| {key} | {on} | {off} | {on - off:+.2f} |")
    return 0


def prepared_studies(work: Path, src: Path, names: list[str]) -> list[dict]:
    """Copies of the phantom study with fresh UIDs under ``work/studies/<name>`` (kept between runs)."""
    out = []
    for name in names:
        d = work / "studies" / name
        meta = d / "meta.json"
        if not meta.exists():
            info = copy_study(src, d / "dicom")
            meta.write_text(json.dumps({"study_uid": info["study_uid"], "n": info["n"]}))
        out.append(json.loads(meta.read_text()) | {"dir": d})
    return out


def warm_page_cache(dirs) -> None:
    """Read every file under ``dirs`` once: the senders' files in the page cache before
    the timed runs, so that no run, storescp's first one least of all, reads them from disk while
    the others find them cached. (The first storescp run of a session was 495-544 img/s against
    1,000-1,480 after it; whether the disk was the cause was not established.)"""
    for d in dirs:
        for f in Path(d).rglob("*"):
            if f.is_file():
                with open(f, "rb") as fh:
                    while fh.read(1 << 20):
                        pass


def storescp_run(work: Path, groups, n_load: int) -> dict:
    """dcmtk storescp receiving the load from the senders once."""
    out = work / "storescp_out"
    scp, port = start_storescp(out)
    sampler = RssSampler(scp.pid)
    sampler.start()
    r = run_senders(port, "STORESCP", groups)
    scp_cpu_ms = cpu_s(scp.pid) / n_load * 1e3
    sampler.stop_flag.set()
    sampler.join()
    n_scp = sum(1 for _ in out.rglob("*") if _.is_file())
    stop_proc(scp)
    shutil.rmtree(out, ignore_errors=True)
    return {"wall_s": round(r["wall_s"], 2), "images_per_s": round(n_load / r["wall_s"], 1),
            "received": n_scp, "peak_rss_mb": round(sampler.peak_mb, 1),
            "cpu_ms_per_image": round(scp_cpu_ms, 2), "failed_senders": r["failed_senders"]}


def node_receive_only_run(args, work: Path, groups, n_load: int, load: list) -> dict:
    """A fresh node without analysis workers receiving the load once (the receiver's own cost)."""
    node_port = free_port()
    state = work / "state_rx"
    shutil.rmtree(state, ignore_errors=True)
    cfg = write_config(work / "node_rx.toml", state, node_port, quiet_s=args.quiet_period, grace_s=2.0, workers=0,
                       receive_processes=RECEIVE_PROCESSES,
                       destinations={"orthanc": {"ae_title": "ORTHANC", "host": "127.0.0.1", "port": 9}})
    node = start_serve(cfg, node_port, work / "node_rx.log")
    wait_for(lambda: (state / "node.json").exists(), 120, what="the node and its receiver processes listening")
    sampler = RssSampler(node.pid)
    sampler.start()
    receivers = child_pids(node.pid)  # the receiver processes (CPU counted with the node's)
    cpu0 = cpu_s(node.pid) + sum(cpu_s(c) for c in receivers)
    r = run_senders(node_port, "BPNODE", groups)
    rx_cpu_ms = (cpu_s(node.pid) + sum(cpu_s(c) for c in receivers) - cpu0) / n_load * 1e3
    sampler.stop_flag.set()
    sampler.join()
    spooled = sum(len(list((state / "spool" / s["study_uid"]).rglob("*.dcm"))) for s in load)
    stop_proc(node)
    shutil.rmtree(state, ignore_errors=True)
    return {"wall_s": round(r["wall_s"], 2), "images_per_s": round(n_load / r["wall_s"], 1),
            "spooled": spooled, "peak_rss_mb": round(sampler.peak_mb, 1),
            "cpu_ms_per_image": round(rx_cpu_ms, 2), "receive_processes": RECEIVE_PROCESSES or "default",
            "failed_senders": r["failed_senders"]}


def median_run(runs: list[dict]) -> dict:
    """The run with the median images/s (the lower middle one of an even count), with every run's
    rate beside it."""
    ordered = sorted(runs, key=lambda r: r["images_per_s"])
    return dict(ordered[(len(ordered) - 1) // 2], runs_images_per_s=[r["images_per_s"] for r in runs])


def idle_only(args, work: Path, src: Path) -> int:
    """The idle-latency part alone: each study sent by one storescu to the idle node, the next one
    only once the previous one's results are accepted by Orthanc; per study the split of last
    instance -> SR in Orthanc, and the median of completion -> SR (queue + analysis + delivery)."""
    tag = "" if args.echoes == 2 else f"_{args.echoes}echoes"
    studies = prepared_studies(work, src, [f"idle{tag}{i:02d}" for i in range(args.idle_only)])
    node_port, orthanc, state, cfg = fresh_node(work, "_idle", args.quiet_period, workers=args.workers)
    if args.no_speculative:
        cfg.write_text(cfg.read_text().replace("[queue]\n", "[queue]\nspeculative = false\n", 1))
    if args.no_study_process:
        cfg.write_text(cfg.read_text().replace("[queue]\n", "[queue]\nstudy_process = false\n", 1))
    # retention off: on a shared disk under 10 % free it removed the analysed studies' records
    # while the benchmark waited for them (the wait then never ended)
    cfg.write_text(cfg.read_text() + "\n[retention]\nfree_space_watermark_percent = 0.0\n")
    node, rows = None, []
    try:
        node = start_serve(cfg, node_port, work / "node_idle.log", stand_in=False)
        from plugin.service.state import StateLayout
        from plugin.service.status import collect
        layout = StateLayout(state)

        def done(n):
            st = collect(state)
            finished = [s for s in st["studies"] if s["state"] in ("analysed", "failed")]
            return st if len(finished) == n and not st["outbox"]["pending"] else None

        for i, s in enumerate(studies):
            load_before = os.getloadavg()[0]
            workers = child_pids(node.pid)
            cpu_before = {pid: cpu_s(pid, reaped_children=True) for pid in workers}
            run_senders(node_port, "BPNODE", [[s["dir"] / "dicom"]])
            wait_for(lambda: done(i + 1), args.timeout, interval_s=0.1, what="idle study analysed")
            d = latencies(layout, [s["study_uid"]], detail=True)[0]
            # CPU the analysis worker process(es) used for this study (wall time follows the load)
            d["worker_cpu_s"] = round(sum(cpu_s(pid, reaped_children=True) - cpu_before.get(pid, 0.0)
                                          for pid in child_pids(node.pid)), 2)
            # completion -> the last result object (SR, SEG, summary cards, KOS, QSM series) delivered
            d["completion_to_all_results_s"] = round(d["total_s"] - d["completion_wait_s"], 2) if d["total_s"] else None
            d["load_average_1min"] = round(load_before, 1)
            d["sr_in_orthanc"] = any(x["MainDicomTags"].get("Modality") == "SR" for x in orthanc.series_of(s["study_uid"]))
            rows.append(d)
            time.sleep(1.0)   # the node idle again before the next study
    finally:
        if node is not None:
            stop_proc(node)
        orthanc.stop()
    def median_of(key: str):
        values = sorted(r[key] for r in rows if r.get(key) is not None)
        return values[len(values) // 2] if values else None
    # issue 15's figure is completion -> SR accepted by the archive; all results follow it
    report = {"idle_studies": rows, "completion_to_sr_accepted_s_median": median_of("completion_to_sr_accepted_s"),
              "completion_to_all_results_s_median": median_of("completion_to_all_results_s"), "cpus": os.cpu_count(),
              "machine": machine_speed()}
    print(json.dumps(report, indent=2))
    print("Speculative analysis (`[queue] speculative`, default on) starts at the association release and "
          "overlaps the completion grace: then `queue` is negative and `started before completion` says by "
          "how much; nothing is delivered before completion.")
    print("| study | last instance -> SR accepted s | = completion wait | + completion -> SR accepted s "
          "| completion -> all results s | queue | analysis | delivery after it | started before completion s "
          "| speculative | worker CPU s | analysis process peak RSS MiB | last instance -> all results s "
          "| load avg (1 min) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for i, r in enumerate(rows):
        print(f"| {i + 1} | {r['last_instance_to_sr_accepted_s']} | {r['completion_wait_s']} | "
              f"{r['completion_to_sr_accepted_s']} | {r['completion_to_all_results_s']} | {r['queue_wait_s']} | "
              f"{r['analysis_s']} | {r['delivery_s']} | {r['started_before_completion_s']} | "
              f"{', '.join(r['speculative']) or 'no'} | {r['worker_cpu_s']} | {r['analysis_peak_rss_mib']} | "
              f"{r['total_s']} | "
              f"{r['load_average_1min']} |")
    return 0 if all(r["sr_in_orthanc"] for r in rows) else 1


def sr_accepted_at(entry: dict) -> float | None:
    """When the destination accepted the SR of an outbox entry: its early C-STORE response (the
    entry's ``accepted_early`` times), else the entry's delivery."""
    early = entry.get("accepted_early") or {}
    srs = [f for f in entry["files"] if "/sr/" in f]
    if not srs:
        return None
    if isinstance(early, dict) and all(f in early for f in srs):
        return max(early[f] for f in srs)
    return entry.get("delivered")


def pixel_mb(d: Path) -> float:
    """MB (10^6 bytes) of stored pixel data in the DICOM files under ``d`` (from the headers)."""
    from dicom_io.read.files import stored_pixel_bytes
    return stored_pixel_bytes([d])[1] / 1e6


def analysing_run(work: Path, tag: str, groups: list[list[Path]], load: list[dict], quiet_s: float, timeout_s: float,
                  *, workers: int, redis: bool = False) -> dict:
    """The load on a fresh node analysing with the real pipeline and delivering to a fresh Orthanc:
    SQLite with ``workers`` embedded process workers, or (``redis``) a real redis-server, ``serve``
    receiving only and ``workers`` separate ``serve --worker --workers 1`` processes. Returns the
    wall time from the first instance sent to the last study's results accepted, studies/hour and
    the last instance -> SR latencies."""
    from plugin.service.state import StateLayout
    from plugin.service.status import collect
    node_port = free_port()
    shutil.rmtree(work / f"orthanc_{tag}", ignore_errors=True)
    orthanc = Orthanc(work / f"orthanc_{tag}", node_port).start()
    state = work / f"state_{tag}"
    shutil.rmtree(state, ignore_errors=True)
    procs, samplers, redis_proc = [], [], None
    try:
        extra = {}
        if redis:
            redis_proc, rport = start_redis(work / f"redis_{tag}")
            extra = {"backend": "redis", "redis_url": f"redis://127.0.0.1:{rport}/0"}
        cfg = write_config(work / f"node_{tag}.toml", state, node_port, quiet_s=quiet_s, grace_s=2.0,
                           receive_processes=RECEIVE_PROCESSES,
                           workers=0 if redis else workers, retry_initial_s=1, retry_max_s=10, **extra,
                           destinations={"orthanc": {"ae_title": "ORTHANC", "host": "127.0.0.1",
                                                     "port": orthanc.dicom_port}})
        with_queue_settings(cfg)
        procs.append(start_serve(cfg, node_port, work / f"node_{tag}.log", stand_in=False))
        if redis:
            procs += [start_serve(cfg, node_port, work / f"worker_{tag}_{i}.log", "--worker", "--workers", "1",
                                  stand_in=False) for i in range(workers)]
        samplers = [RssSampler(p.pid) for p in procs]
        for smp in samplers:
            smp.start()
        layout = StateLayout(state)
        t0 = time.time()
        r = run_senders(node_port, "BPNODE", groups)

        def all_done():
            st = collect(state)
            done = [x for x in st["studies"] if x["state"] in ("analysed", "failed")]
            return st if len(done) == len(load) and not st["outbox"]["pending"] else None

        st = wait_for(all_done, timeout_s, interval_s=0.5, what=f"{tag}: all studies analysed")
        last = max(json.loads(p.read_text())["delivered"] for p in layout.outbox_sent.glob("*.json"))
        wall = last - t0
        return {"tag": tag, "backend": "redis" if redis else "sqlite", "workers": workers,
                "receive_s": round(r["wall_s"], 2), "wall_s": round(wall, 1),
                "studies_per_hour": round(len(load) / wall * 3600, 1), "states": st["counts"],
                "load_latency_s": latencies(layout, [x["study_uid"] for x in load]),
                "worker_peak_rss_mb": round(max(x.child_peak_mb for x in samplers), 1),
                "workers_distinct": len({rr["worker"]["pid"] for rr in layout.runs()})}
    finally:
        for smp in samplers:
            smp.stop_flag.set()
        for p in procs:
            stop_proc(p)
        if redis_proc is not None:
            stop_proc(redis_proc)
        orthanc.stop()


def latencies(layout, study_uids: list[str], detail: bool = False) -> list | dict:
    """Last instance stored (newest spool file mtime) -> results accepted by the destination."""
    out = []
    for uid in study_uids:
        last_in = max(p.stat().st_mtime for p in (layout.spool / uid).rglob("*.dcm"))
        v = layout.versions(uid)[-1]
        m, r = layout.manifest(uid, v), layout.result(uid, v)
        sent = [json.loads(p.read_text()) for p in layout.outbox_sent.glob(f"{uid}-v*.json")]
        delivered = max(e["delivered"] for e in sent) if sent else None
        sr_at = [sr_accepted_at(e) for e in sent]
        sr_at = [t for t in sr_at if t is not None]
        d = {"versions": v, "completion_wait_s": round(m["created"] - last_in, 2),
             "completion_to_sr_accepted_s": round(min(sr_at) - m["created"], 2) if sr_at else None,
             "queue_wait_s": round(r["started"] - m["created"], 2) if r and "started" in r else None,
             "analysis_s": round(r["finished"] - r["started"], 2) if r and "started" in r else None,
             "delivery_s": round(delivered - r["finished"], 2) if delivered and r else None,
             "total_s": round(delivered - last_in, 2) if delivered else None,
             # the user's figure: last instance stored -> SR accepted by the destination
             "last_instance_to_sr_accepted_s": round(min(sr_at) - last_in, 2) if sr_at else None,
             # [queue] speculative: the analysis started at the association release, this long
             # before completion (then queue_wait_s is negative: the work overlapped the grace)
             "speculative": sorted(k for k in (r or {}).get("speculative", {}) if k in ("confirmed", "adopted")),
             "started_before_completion_s": round(m["created"] - r["started"], 2)
             if r and "started" in r and r["started"] < m["created"] else 0.0,
             # [queue] study_process: the study's own analysis process's peak RSS (wait4), MiB
             "analysis_peak_rss_mib": (r or {}).get("analysis_peak_rss_mib")}
        out.append(d)
    if detail:
        return out
    totals = sorted(d["total_s"] for d in out if d["total_s"] is not None)
    srs = sorted(d["last_instance_to_sr_accepted_s"] for d in out if d["last_instance_to_sr_accepted_s"] is not None)
    # min / median / max: last instance -> SR accepted (issue 15's figure); all_results_*: last
    # instance -> the last result object delivered (until 2026-12-02 the summary's min / median /
    # max were these, labelled "-> SR": benchmarks/load.md, seventh session)
    return {"min": srs[0], "median": _median(srs), "max": srs[-1],
            "all_results_min": totals[0], "all_results_median": _median(totals), "all_results_max": totals[-1],
            "analysis_s_median": _median([d["analysis_s"] for d in out if d["analysis_s"] is not None]),
            "analysis_peak_rss_mib_max": max((d["analysis_peak_rss_mib"] for d in out
                                              if d["analysis_peak_rss_mib"] is not None), default=None),
            "versions_max": max(d["versions"] for d in out)} if totals and srs else {}


def _median(xs: list) -> float:
    xs = sorted(xs)
    n = len(xs)
    return round(xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2, 2)


def _runs(run: dict) -> str:
    """" (median of a, b, c)" for a median over repeated runs, else the one run's time."""
    rates = run.get("runs_images_per_s") or []
    if len(rates) > 1:
        return f" (median of {len(rates)} runs: {', '.join(str(x) for x in rates)})"
    return f" ({run['wall_s']} s)"


def markdown(r: dict) -> str:
    il = r.get("idle_latency", {})
    ll = r.get("load_latency_s", {})
    return "\n".join([
        "| measure | dcmtk storescp | borderphase serve |",
        "|---|---|---|",
        f"| {r['instances']} instances (512x512 16-bit), {r['senders']} concurrent storescu | "
        f"{r['storescp']['images_per_s']} img/s{_runs(r['storescp'])} | "
        f"{r['node_receive']['images_per_s']} img/s ({r['node_receive']['wall_s']} s) while analysing "
        f"({_ratio(r['node_receive']['images_per_s'], r['storescp']['images_per_s'])} x) |",
        f"| same load, node receiving only (no analysis running) | | "
        f"{r['node_receive_only']['images_per_s']} img/s{_runs(r['node_receive_only'])} "
        f"({r['node_receive_only'].get('ratio_to_storescp')} x; pairs "
        f"{', '.join(str(p['ratio']) for p in r.get('receive_pairs', []))}), "
        f"peak RSS {r['node_receive_only']['peak_rss_mb']} MiB |",
        f"| received / acknowledged and durable | {r['storescp']['received']} | {r['node_receive']['spooled']} |",
        f"| peak RSS (VmHWM) | {r['storescp']['peak_rss_mb']} MiB | receiver {r['node_peak_rss_mb']} MiB"
        f" + analysis worker process {r.get('worker_peak_rss_mb')} MiB |",
        f"| idle study: last instance -> SR accepted by Orthanc | | {il.get('last_instance_to_sr_accepted_s')} s = completion "
        f"{il.get('completion_wait_s')} + completion -> SR accepted {il.get('completion_to_sr_accepted_s')} |",
        f"| idle study: last instance -> all results in Orthanc | | {il.get('total_s')} s = completion {il.get('completion_wait_s')}"
        f" + queue {il.get('queue_wait_s')} + analysis {il.get('analysis_s')} + delivery {il.get('delivery_s')} |",
        f"| under load: last instance -> SR accepted (min/median/max) | | {ll.get('min')} / {ll.get('median')} / {ll.get('max')} s"
        f" (median / idle = {_ratio(ll.get('median'), il.get('last_instance_to_sr_accepted_s'))}) |",
        f"| under load: last instance -> all results (min/median/max) | | {ll.get('all_results_min')} / "
        f"{ll.get('all_results_median')} / {ll.get('all_results_max')} s (median / idle = "
        f"{_ratio(ll.get('all_results_median'), il.get('total_s'))}) |",
        f"| studies ending analysed / without SR in Orthanc | | {r['states'].get('analysed')} / {len(r['studies_without_sr_in_orthanc'])} |",
    ] + extra_rows(r))


def _ratio(a, b) -> str:
    return f"{a / b:.2f}" if a is not None and b else "-"


def extra_rows(r: dict) -> list[str]:
    """Rows of ``--six-echo``, ``--compare-workers`` and ``--redis-workers``."""
    rows = []
    if "six_echo" in r:
        s = r["six_echo"]
        two = r.get("worker_peak_rss_mb_2echo")
        rows += [f"| worker peak RSS, 2-echo studies (120 MiB pixels) | | {two} MiB ({_ratio(two, 120.0)} x) |",
                 f"| 6-echo study ({s['instances']} instances, {s['pixel_mb']} MB pixels) alone: last instance -> SR accepted | | "
                 f"{s.get('last_instance_to_sr_accepted_s')} s = completion {s.get('completion_wait_s')} + completion -> SR "
                 f"accepted {s.get('completion_to_sr_accepted_s')} |",
                 f"| 6-echo study alone: last instance -> all results | | "
                 f"{s.get('total_s')} s = completion {s.get('completion_wait_s')} + queue {s.get('queue_wait_s')} + "
                 f"analysis {s.get('analysis_s')} + delivery {s.get('delivery_s')} |",
                 f"| worker peak RSS with the 6-echo study | | {s['worker_peak_rss_mb']} MiB "
                 f"({_ratio(s['worker_peak_rss_mb'], s['pixel_mb'] * 1e6 / 2 ** 20)} x its pixels) |"]
    for x in [{"backend": "sqlite", "workers": r["workers"], "main": True}] + r.get("compare_workers", []) + r.get("redis", []):
        if x.get("main"):
            ll = r.get("load_latency_s", {})
            rows.append(f"| sqlite, {x['workers']} worker(s): last instance -> SR (min/median/max) | | "
                        f"{ll.get('min')} / {ll.get('median')} / {ll.get('max')} s |")
            continue
        ll = x["load_latency_s"]
        rows.append(f"| {x['backend']}, {x['workers']} worker {'process(es)' if x['backend'] == 'redis' else '(s)'}: "
                    f"last instance -> SR (min/median/max); studies/hour | | {ll.get('min')} / {ll.get('median')} / "
                    f"{ll.get('max')} s; {x['studies_per_hour']} studies/h ({x['wall_s']} s for {r['studies']}; "
                    f"{x['workers_distinct']} worker(s) took work; peak RSS {x['worker_peak_rss_mb']} MiB) |")
    return rows


if __name__ == "__main__":
    sys.exit(main())
