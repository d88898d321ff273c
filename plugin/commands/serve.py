"""``borderphase serve --config FILE``: run the DICOM node (receiver + embedded workers), or with
``--worker`` only a queue worker (multi-machine mode: point several at the same Redis queue)."""
from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from plugin.service.worker import AnalysisFn

LOG = logging.getLogger("borderphase.serve")


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("serve", help="run the DICOM node (C-STORE SCP, queue workers, dispatch)")
    p.add_argument("--config", required=True, help="TOML config (see plugin/service/example_config.toml)")
    p.add_argument("--worker", action="store_true",
                   help="run only a queue worker (no receiver), e.g. on another machine with queue.backend=redis")
    p.add_argument("--workers", type=int, default=None, help="override [queue] workers")
    p.set_defaults(run=run)


def run(args) -> int:
    from plugin.pipeline import analyze_paths
    return run_with(args, analyse=analyze_paths)


def _restart_with_malloc_hugepages(config) -> None:
    """Exec this same command again with glibc's malloc backed by huge pages
    (:func:`plugin.service.memory.with_malloc_hugepages`; ``[queue] malloc_hugepages``), before
    any thread, socket or worker exists; the forked analysis workers inherit it. Nothing happens
    where it does not apply or is set already (so the exec'ed command goes on), or if the exec fails."""
    from plugin.service.memory import with_malloc_hugepages
    if not config.queue.malloc_hugepages or threading.active_count() > 1:
        return
    env = with_malloc_hugepages(os.environ)
    if env is None:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(sys.executable, sys.orig_argv, env)
    except OSError as exc:   # the node runs on without it
        LOG.warning("could not restart with glibc.malloc.hugetlb=1 (%s): malloc uses 4 KiB pages", exc)


def run_with(args, *, analyse: AnalysisFn) -> int:
    """``serve`` with the analysis given by a parameter: the command passes the pipeline
    (:func:`plugin.pipeline.analyze_paths`); tests pass a small stand-in."""
    from plugin.service.config import ConfigError, load_config
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"borderphase serve: {exc}", file=sys.stderr)
        return 2
    _restart_with_malloc_hugepages(config)
    if logging.getLogger().level > logging.INFO:
        logging.getLogger().setLevel(logging.INFO)
    if getattr(args, "verbose", 0) < 2:  # pynetdicom logs every request at INFO; -vv to see them
        logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    if args.worker:
        from plugin.service import permissions
        from plugin.service.queue import make_queue, run_consumer
        permissions.apply(config.state_dir, config.storage.group)  # results written here: same modes
        queue = make_queue(config, analyse=analyse)
        n = args.workers if args.workers is not None else max(config.queue.workers, 1)
        consumer = run_consumer(queue, n, config.queue.worker_type, config.queue.worker_nice, embedded=False,
                                blas_threads=config.queue.blas_threads,
                                keep_memory=config.queue.keep_freed_memory)
        LOG.info("queue worker on %s backend (%d %s worker(s))", config.queue.backend, n, config.queue.worker_type)
        consumer.run()
        return 0

    from dataclasses import replace

    from plugin.service.node import Node
    if args.workers is not None:
        config = replace(config, queue=replace(config.queue, workers=args.workers))
    try:
        node = Node(config, analyse=analyse)
        node.start()
    except OSError as exc:
        print(f"borderphase serve: cannot start: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()

    def _stop(signum, frame):
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    LOG.info("node %s listening on %s:%d, state in %s", config.node.ae_title, config.node.host, node.scp.port,
             config.state_dir)
    try:
        node.run(stop)
    finally:
        node.stop()
    return 0
