"""Unit tests of the node's pieces: config validation, routing, completion, spool durability."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from plugin.service.completion import CompletionTracker
from plugin.service.config import ConfigError, load_config, parse_config
from plugin.service.routing import SeriesFacts, route
from plugin.service.spool import Spool, SpoolFull, safe_uid
from plugin.service.state import Claim

EXAMPLE = Path(__file__).resolve().parents[1] / "plugin" / "service" / "example_config.toml"


def test_example_config_loads():
    cfg = load_config(EXAMPLE)
    assert cfg.node.ae_title == "BORDERPHASE" and cfg.completion.quiet_period_s == 10
    assert [r.action for r in cfg.rules] == ["ignore", "ignore", "analyse"]
    assert cfg.destinations["pacs"].port == 104


@pytest.mark.parametrize("doc, message", [
    ({}, "state_dir: required"),
    ({"state_dir": "/x", "node": {"port": 70000}}, "node.port: input should be less than or equal to 65535, got 70000"),
    ({"state_dir": "/x", "node": {"port": "104"}}, "node.port: input should be a valid integer, got '104'"),
    ({"state_dir": "/x", "node": {"ae_title": "A" * 17}}, "node.ae_title: must be 1-16 characters"),
    ({"state_dir": "/x", "queue": {"backend": "kafka"}}, "queue.backend: input should be 'sqlite' or 'redis', got 'kafka'"),
    ({"state_dir": "/x", "queue": {"keep_freed_memory": "yes"}},
     "queue.keep_freed_memory: input should be a valid boolean, got 'yes'"),
    ({"state_dir": "/x", "rules": [{"action": "analyse", "destinations": ["nowhere"]}]},
     "[[rules]][1].destinations: unknown destination 'nowhere' (define [destinations.nowhere])"),
    ({"state_dir": "/x", "rules": [{"name": "a"}, {"name": "b", "action": "delete"}]},
     "[[rules]][2] \"b\".action: input should be 'analyse' or 'ignore', got 'delete'"),
    ({"state_dir": "/x", "rules": [{"match": {"series_description": "("}}]},
     "[[rules]][1].match.series_description: not a valid regular expression: missing ), unterminated subpattern"),
    ({"state_dir": "/x", "rules": [{"match": {"colour": "red"}}]},
     "[[rules]][1].match.colour: unknown key (allowed: called_ae, calling_ae, image_type, manufacturer, modality, "
     "series_description)"),
    ({"state_dir": "/x", "rules": {"name": "x"}}, "[[rules]]: must be an array of tables ([[rules]])"),
    ({"state_dir": "/x", "node": {"allowed_networks": ["10.0.0.0/8", "10.0.0.300/8"]}},
     "node.allowed_networks[2]: '10.0.0.300/8' does not appear to be an IPv4 or IPv6 network"),
    ({"state_dir": "/x", "node": {"allowed_calling_ae_titles": [1]}},
     "node.allowed_calling_ae_titles: expected a string or a list of strings, got [1]"),
    ({"state_dir": "/x", "destinations": {"a": {"type": "dicom", "host": "h"}}},
     "destinations.a.ae_title: required for a DICOM destination"),
    ({"state_dir": "/x", "destinations": {"a": {"type": "stowrs", "url": "http://h", "name": "b"}}},
     "destinations.a.name: unknown key"),
    ({"state_dir": "/x", "routing": {"default_action": "analyse"}}, "routing.default_action: only 'ignore'"),
    ({"state_dir": "/x", "completion": {"quiet_period_s": 0}}, "completion.quiet_period_s: input should be greater than 0"),
    ({"state_dir": "/x", "node": {"tls": {"cert_file": "c"}}}, "node.tls.key_file: required"),
    ({"state_dir": "/x", "analysis": {"convention_rules": "/nonexistent/site.toml"}},
     "analysis.convention_rules: /nonexistent/site.toml: cannot read convention rules"),
    ({"state_dir": "/x", "source": "y"}, "source: unknown key"),
    ({"state_dir": "/x", "analysis": {"callable": "plugin.pipeline:analyze_paths"}},
     "analysis.callable: removed: the node runs plugin.pipeline.analyze_paths itself; delete this line"),
])
def test_config_errors_name_the_source_key_and_problem(doc, message):
    with pytest.raises(ConfigError) as exc:
        parse_config(doc, source="node.toml")
    assert str(exc.value).startswith(f"node.toml: {message}")


def test_config_reports_every_problem_at_once(tmp_path):
    bad = tmp_path / "node.toml"
    bad.write_text('state_dir = "s"\n[node]\nport = "104"\n[queue]\nworkerz = 2\n')
    with pytest.raises(ConfigError) as exc:
        load_config(bad)
    assert str(exc.value).splitlines() == [
        f"{bad}: node.port: input should be a valid integer, got '104'",
        f"{bad}: queue.workerz: unknown key (allowed: backend, blas_threads, keep_freed_memory, malloc_hugepages, name, redis_url, speculative, study_process, worker_nice, worker_type, workers)"]


def test_convention_rules_are_checked_on_load_relative_to_the_config(tmp_path):
    (tmp_path / "site.toml").write_text('[[rule]]\nname = "x"\nconvention = "left-handed"\nvendor = "GE"\n')
    cfg_path = tmp_path / "node.toml"
    cfg_path.write_text('state_dir = "state"\n[analysis]\nconvention_rules = "site.toml"\n')
    cfg = load_config(cfg_path)
    assert cfg.state_dir == tmp_path / "state" and cfg.analysis.convention_rules == str(tmp_path / "site.toml")
    (tmp_path / "site.toml").write_text('[[rule]]\nname = "x"\nconvention = "sideways"\nvendor = "GE"\n')
    with pytest.raises(ConfigError) as exc:
        load_config(cfg_path)
    assert str(exc.value).startswith(f"{cfg_path}: analysis.convention_rules: {tmp_path / 'site.toml'}: "
                                     f"[[rule]][1] \"x\".convention: input should be")


def test_config_sections_are_dataclasses_replace_validates_again():
    from dataclasses import replace
    cfg = load_config(EXAMPLE)
    more = replace(cfg, queue=replace(cfg.queue, workers=3))
    assert more.queue.workers == 3 and more.source == cfg.source and more.destinations["pacs"].name == "pacs"
    with pytest.raises(ValueError):
        replace(cfg.queue, workers=-1)


def test_config_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("state_dir = ")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)


def test_routing_first_match_wins():
    cfg = load_config(EXAMPLE)
    gre = SeriesFacts("1.2", modality="MR", manufacturer="SIEMENS", series_description="SWI_Images",
                      image_type=("ORIGINAL", "PRIMARY", "M"))
    assert route(cfg, gre).action == "analyse" and route(cfg, gre).destinations == ("pacs",)
    dwi = SeriesFacts("1.3", modality="MR", series_description="ep2d_diff_trace")
    d = route(cfg, dwi)
    assert d.action == "ignore" and "diffusion" in d.reason
    t1 = SeriesFacts("1.4", modality="MR", series_description="t1_mprage")
    assert route(cfg, t1).reason == "no routing rule matched"
    assert route(cfg, SeriesFacts("1.5", modality="SR")).rule == "our own results"


def test_routing_never_analyses_our_own_result_series():
    """The QSM series is an MR image series: a rule matching every MR series (as a site may write)
    must still not take borderphase's own results back into an analysis (the Orthanc plugin did)."""
    cfg = parse_config({"state_dir": "/x", "rules": [{"name": "every MR", "match": {"modality": "MR"}}]})
    qsm = SeriesFacts("1.6", modality="MR", manufacturer="borderphase", series_description="borderphase QSM (ppm)")
    d = route(cfg, qsm)
    assert d.action == "ignore" and "own result" in d.reason
    assert route(cfg, SeriesFacts("1.7", modality="MR", manufacturer="SIEMENS")).action == "analyse"


def test_routing_image_type_and_ae():
    cfg = parse_config({"state_dir": "/x", "destinations": {"a": {"ae_title": "A", "host": "h", "port": 1}},
                        "rules": [{"name": "phase from scanner1", "match": {"image_type": ["P"], "calling_ae": ["MR1"],
                                                                             "manufacturer": "ge|philips"},
                                   "destinations": ["a"]}]})
    s = SeriesFacts("1", modality="MR", manufacturer="GE MEDICAL SYSTEMS", image_type=("ORIGINAL", "PRIMARY", "P"),
                    calling_ae="MR1")
    assert route(cfg, s).action == "analyse"
    assert route(cfg, SeriesFacts("1", manufacturer="GE", image_type=("M",), calling_ae="MR1")).action == "ignore"
    assert route(cfg, SeriesFacts("1", manufacturer="GE", image_type=("P",), calling_ae="MR2")).action == "ignore"
    assert route(cfg, SeriesFacts("1", manufacturer="SIEMENS", image_type=("P",), calling_ae="MR1")).action == "ignore"


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_completion_quiet_period_and_release_hint():
    clock = Clock()
    tr = CompletionTracker(quiet_period_s=10, release_grace_s=2, clock=clock)
    tr.instance_arrived("A", association_id=1)
    tr.instance_arrived("B", association_id=2)
    clock.t = 5
    assert tr.due() == []
    tr.association_ended(1)  # A's only association released
    clock.t = 6.9
    assert tr.due() == []
    clock.t = 7.1
    assert tr.due() == ["A"]
    clock.t = 9.9
    assert tr.due() == []
    clock.t = 10.1  # B: quiet period, association still open
    assert tr.due() == ["B"]
    tr.instance_arrived("A", association_id=3)  # reopen
    assert tr.pending() == ["A"]


def test_completion_release_waits_for_all_associations():
    clock = Clock()
    tr = CompletionTracker(quiet_period_s=10, release_grace_s=1, clock=clock)
    tr.instance_arrived("A", 1)
    tr.instance_arrived("A", 2)
    tr.association_ended(1)
    clock.t = 3
    assert tr.due() == []  # association 2 still open
    tr.association_ended(2)
    clock.t = 3.5
    assert tr.due() == []  # grace counts from the last release
    clock.t = 4.1
    assert tr.due() == ["A"]


def test_completion_names_a_released_study_once_per_release_for_speculation():
    clock = Clock()
    tr = CompletionTracker(quiet_period_s=10, release_grace_s=2, clock=clock)
    tr.instance_arrived("A", 1)
    tr.instance_arrived("A", 2)
    tr.association_ended(1)
    assert tr.released() == []          # association 2 still open
    tr.association_ended(2)
    assert tr.released() == ["A"] and tr.released() == []   # once per release
    assert tr.due() == []               # still not complete: the grace runs
    tr.instance_arrived("A", 3)         # a late instance re-arms it
    assert tr.released() == []
    tr.association_ended(3)
    clock.t = 1.0
    assert tr.released() == ["A"]
    clock.t = 3.1
    assert tr.due() == ["A"] and tr.released() == []


def test_speculative_start_is_on_by_default_and_can_be_switched_off(tmp_path):
    cfg = tmp_path / "node.toml"
    cfg.write_text('state_dir = "s"\n')
    assert load_config(cfg).queue.speculative is True
    cfg.write_text('state_dir = "s"\n[queue]\nspeculative = false\n')
    assert load_config(cfg).queue.speculative is False
    cfg.write_text('state_dir = "s"\n[queue]\nspeculative = "yes"\n')
    with pytest.raises(ConfigError, match="queue.speculative"):
        load_config(cfg)


def test_spool_store_is_durable_and_deduplicates(tmp_path):
    sp = Spool(tmp_path / "spool")
    out = sp.store("1.2.3", "1.2.3.4", "1.2.3.4.5", b"x" * 1000)
    assert out.new and out.path.read_bytes() == b"x" * 1000
    assert out.path == tmp_path / "spool" / "1.2.3" / "1.2.3.4" / "1.2.3.4.5.dcm"
    assert not sp.store("1.2.3", "1.2.3.4", "1.2.3.4.5", b"x" * 1000).new
    changed = sp.store("1.2.3", "1.2.3.4", "1.2.3.4.5", b"y" * 1000)  # a new version, the earlier kept
    assert changed.new and changed.version == 2 and changed.previous == out.path
    assert changed.path.name == "1.2.3.4.5.v2.dcm" and out.path.read_bytes() == b"x" * 1000
    assert not sp.store("1.2.3", "1.2.3.4", "1.2.3.4.5", b"y" * 1000).new
    assert sp.instances("1.2.3") == ["1.2.3.4/1.2.3.4.5.v2.dcm"]
    assert list(sp.tmp.iterdir()) == []


def test_spool_uid_cannot_escape(tmp_path):
    assert safe_uid("../../etc/passwd").startswith("x")
    assert safe_uid("1.2.840.10008") == "1.2.840.10008"
    sp = Spool(tmp_path / "spool")
    p = sp.store("../..", "a/b", "c", b"1").path
    assert tmp_path / "spool" in p.parents


def test_spool_full_and_write_failure(tmp_path):
    sp = Spool(tmp_path / "spool", min_free_mb=1e12)
    with pytest.raises(SpoolFull):
        sp.store("1", "2", "3", b"x")
    sp2 = Spool(tmp_path / "spool2")
    sp2.tmp.rmdir()
    sp2.tmp.write_text("not a directory")  # every temp write fails
    with pytest.raises(OSError):
        sp2.store("1", "2", "3", b"x")
    assert not (tmp_path / "spool2" / "1" / "2" / "3.dcm").exists()


def test_spool_clean_tmp(tmp_path):
    sp = Spool(tmp_path / "spool")
    (sp.tmp / ".partial.tmp").write_bytes(b"half")
    assert sp.clean_tmp() == 1 and list(sp.tmp.iterdir()) == []


def test_claim_is_exclusive_and_stale_claims_are_taken_over(tmp_path):
    p = tmp_path / "v0001.claim"
    a, b = Claim(p, 3600), Claim(p, 3600)
    assert a.acquire() and not b.acquire()
    a.release()
    assert b.acquire()
    b.release()
    # a claim by a dead process on this host is stale
    p.write_text('{"host": "%s", "pid": 999999, "start": "1", "time": 1e12}' % os.uname().nodename)
    assert Claim(p, 3600).acquire()


def test_scp_address_whitelist_and_echo():
    from dicom_io.net.scp import AccessPolicy, StorageSCP
    from dicom_io.net.scu import DicomDestination, echo
    for networks, expected in ((("10.0.0.0/8",), False), (("127.0.0.0/8",), True)):
        scp = StorageSCP("NODE", "127.0.0.1", 0, lambda inst: 0, policy=AccessPolicy((), networks))
        scp.start()
        try:
            assert echo(DicomDestination("NODE", "127.0.0.1", scp.port, timeout_s=5)) is expected
            # an address outside the networks is refused at TCP accept, before any A-ASSOCIATE-RQ
            assert scp.counters["refused_connections"] == (0 if expected else 1)
            assert scp.counters["refused_associations"] == 0
        finally:
            scp.stop()


def test_scp_accepts_compressed_and_unknown_storage_classes(tmp_path):
    """Compressed transfer syntaxes and private SOP classes are received and stored as sent."""
    from pydicom import dcmread
    from pydicom.uid import RLELossless

    from dicom_io.net.scu import DicomDestination, send_files
    from node_helpers import make_mr_study
    from plugin.service.archive import ArchiveStandIn
    study = make_mr_study(tmp_path / "in", n_slices=1, components=("M", "P"))
    rle, private = study["files"]
    ds = dcmread(rle)
    ds.compress(RLELossless)
    ds.save_as(rle)
    ds = dcmread(private)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.3.12.2.1107.5.9.1"  # a vendor's private class
    ds.save_as(private)
    archive = ArchiveStandIn(tmp_path / "archive").start()
    try:
        send_files(DicomDestination("ARCHIVE", "127.0.0.1", archive.port, timeout_s=10), [rle, private])
        got = {str(dcmread(p).SOPInstanceUID): dcmread(p) for p in archive.files()}
    finally:
        archive.stop()
    a = got[str(dcmread(rle).SOPInstanceUID)]
    assert a.file_meta.TransferSyntaxUID == RLELossless and a.pixel_array.shape == (32, 32)
    assert got[str(dcmread(private).SOPInstanceUID)].SOPClassUID == "1.3.12.2.1107.5.9.1"


def test_one_node_per_state_dir(tmp_path):
    from node_helpers import free_port
    from plugin.service.node import Node
    cfg = parse_config({"state_dir": str(tmp_path / "state"), "node": {"port": free_port()},
                        "queue": {"workers": 0}})
    a = Node(cfg)
    a.start()
    try:
        b = Node(parse_config({"state_dir": str(tmp_path / "state"), "node": {"port": free_port()},
                               "queue": {"workers": 0}}))
        with pytest.raises(OSError, match="already running"):
            b.start()
    finally:
        a.stop()


def test_dispatch_backoff_doubles_up_to_the_cap():
    from plugin.service.dispatch import backoff_s
    cfg = parse_config({"state_dir": "/x", "dispatch": {"retry_initial_s": 5, "retry_max_s": 60}})
    assert [backoff_s(cfg, n) for n in range(1, 7)] == [5, 10, 20, 40, 60, 60]


def test_previous_srs_come_from_the_latest_earlier_analysed_version(tmp_path):
    """A reopened study's new SR supersedes the SR of the latest earlier version that was
    analysed (a failed version in between has no SR to supersede)."""
    from plugin.service.spool import atomic_write_json
    from plugin.service.state import StateLayout
    from plugin.service.worker import previous_srs

    layout = StateLayout(tmp_path)
    for version, state in ((1, "analysed"), (2, "analysed"), (3, "failed")):
        atomic_write_json(layout.manifest_path("s", version), {"version": version})
        layout.write_result("s", version, {"state": state})
        if state == "analysed":
            sr_dir = layout.results_dir("s", version) / "sr"
            sr_dir.mkdir(parents=True)
            (sr_dir / f"sr-v{version}.dcm").write_bytes(b"")
    assert [p.name for p in previous_srs(layout, "s", 4)] == ["sr-v2.dcm"]
    assert [p.name for p in previous_srs(layout, "s", 2)] == ["sr-v1.dcm"]
    assert previous_srs(layout, "s", 1) == []


def test_serve_and_status_exit_2_with_every_config_problem(tmp_path, capsys):
    from plugin.cli import main
    bad = tmp_path / "node.toml"
    bad.write_text('state_dir = "s"\n[analysis]\ncallable = "plugin.pipeline:analyze_paths"\n'
                   '[[rules]]\nname = "gre"\nmatch.series_description = "(swi"\n')
    for command in ("serve", "status"):
        assert main([command, "--config", str(bad)]) == 2
        err = capsys.readouterr().err
        assert f"{bad}: analysis.callable: removed" in err
        assert f'{bad}: [[rules]][1] "gre".match.series_description: not a valid regular expression' in err
    assert not (tmp_path / "s").exists()     # refused before anything was created


@pytest.mark.parametrize("cores, expected", [(1, 1), (2, 1), (8, 7)])
def test_workers_default_to_cores_minus_one_at_least_one(monkeypatch, cores, expected):
    """Without ``[queue] workers`` the node runs one analysis worker per core but one (left to
    receiving), at least one; a configured number (0 included) is kept."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    assert parse_config({"state_dir": "/x"}).queue.workers == expected
    assert parse_config({"state_dir": "/x", "queue": {"workers": 0}}).queue.workers == 0
    assert load_config(EXAMPLE).queue.workers == expected   # the example leaves it to the default


def test_a_retried_task_of_a_study_removed_since_does_nothing(tmp_path):
    """A version's analysis task retried (ClaimBusy while its speculation ran) after the study was
    analysed, delivered and removed by retention: no manifest any more. It must neither fail (huey
    would retry it 10,000 times) nor bring back an empty study folder through its claim (retention
    then counted it as a pending study)."""
    from dataclasses import replace

    from plugin.service.state import StateLayout
    from plugin.service.worker import analyse_version
    cfg = replace(load_config(EXAMPLE), state_dir=str(tmp_path / "state"))
    StateLayout(cfg.state_dir).create()
    assert analyse_version(cfg, "1.2.3.4", 1, enqueue_delivery=lambda eid: None) == "gone"
    assert not StateLayout(cfg.state_dir).study_dir("1.2.3.4").exists()


def test_malloc_hugepages_tunable_is_added_once_and_only_where_glibc_has_it():
    """plugin.service.memory.with_malloc_hugepages: glibc >= 2.35 gets glibc.malloc.hugetlb=1 beside the
    site's other tunables; an older glibc, another C library or a hugetlb value already set: nothing."""
    from plugin.service.memory import with_malloc_hugepages
    env = with_malloc_hugepages({"PATH": "/bin"}, version=(2, 36))
    assert env == {"PATH": "/bin", "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}
    kept = with_malloc_hugepages({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}, version=(2, 36))
    assert kept["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"
    assert with_malloc_hugepages(kept, version=(2, 36)) is None            # the exec'ed command goes on
    assert with_malloc_hugepages({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}, version=(2, 38)) is None
    assert with_malloc_hugepages({}, version=(2, 31)) is None
