"""The script Orthanc's Python plugin loads (Orthanc configuration: ``"PythonScript"``).

Two lines of Orthanc configuration enable borderphase (see ``orthanc.example.json``)::

    "Plugins": ["/usr/share/orthanc/plugins/libOrthancPython.so"],
    "PythonScript": "/path/to/plugin/archive_plugin/entry.py"

Orthanc's embedded interpreter (Debian 12: Python 3.11, ``libpython3.11``) must be able to import
borderphase's dependencies (huey, pydantic, pydicom...): install borderphase into that Python, or
give Orthanc's service ``PYTHONPATH`` naming the site-packages of a Python 3.11 environment that
holds it. The optional ``"Borderphase"`` section is described in :mod:`.settings`.

What runs where: Orthanc's change thread calls :func:`on_change`, which only enqueues (a SQLite
insert) on ``STABLE_STUDY``; on ``ORTHANC_STARTED`` a short thread reconciles unfinished work
and starts the Huey consumer threads; on ``ORTHANC_STOPPED`` they stop and running analyses are
killed (the versions stay unfinished and run again at the next start). Python ``logging`` from
the plugin, the pipeline and Huey goes to Orthanc's log (INFO to ``LogInfo``, WARNING to
``LogWarning``, ERROR to ``LogError``); DEBUG records, which may name patients, are dropped.
"""
import json
import logging
import sys
import threading
from pathlib import Path

import orthanc

_HERE = Path(__file__).resolve().parent
# orthanc-python puts the script's folder on sys.path; its files are modules of the package, not
# top-level modules, so take it off, and make sure the package's root is importable.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
if str(_HERE.parents[1]) not in sys.path:
    sys.path.append(str(_HERE.parents[1]))

from plugin.archive_plugin.analysis import stop_children  # noqa: E402
from plugin.archive_plugin.orthanc_reader import OrthancApiError  # noqa: E402
from plugin.archive_plugin.queueing import PluginContext, make_queue, reconcile  # noqa: E402
from plugin.archive_plugin.records import PluginState  # noqa: E402
from plugin.archive_plugin.settings import load_settings  # noqa: E402
from plugin.archive_plugin.status_route import status_document  # noqa: E402
from plugin.service.config import ConfigError  # noqa: E402

STATUS_ROUTE = "/borderphase/status"


class OrthancLogHandler(logging.Handler):
    """Python logging -> Orthanc's log; DEBUG (possible PHI) is not forwarded."""

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno < logging.INFO:
            return
        try:
            text = self.format(record)
        except Exception:
            text = str(record.msg)
        if record.levelno >= logging.ERROR:
            orthanc.LogError(text)
        elif record.levelno >= logging.WARNING:
            orthanc.LogWarning(text)
        else:
            orthanc.LogInfo(text)


class EmbeddedApi:
    """Orthanc's REST API from inside the process (no HTTP, no credentials)."""

    def get(self, path: str) -> bytes:
        try:
            return bytes(orthanc.RestApiGet(path))
        except orthanc.OrthancException as exc:
            raise OrthancApiError(f"GET {path}: {exc}") from None

    def post(self, path: str, body: bytes) -> bytes:
        try:
            return bytes(orthanc.RestApiPost(path, body))
        except orthanc.OrthancException as exc:
            raise OrthancApiError(f"POST {path}: {exc}") from None


def _install_logging() -> None:
    handler = OrthancLogHandler()
    handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    for name in ("plugin", "dicom_io", "huey"):
        logger = logging.getLogger(name)
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


class BorderphasePlugin:
    def __init__(self, settings) -> None:
        self.ctx = PluginContext(settings, EmbeddedApi(), PluginState(settings.work_dir))
        self.queue = make_queue(self.ctx)
        self.consumer = None
        self.lock = threading.Lock()

    def start(self) -> None:
        try:
            counts = reconcile(self.ctx, self.queue)
            if any(counts.values()):
                orthanc.LogWarning(f"borderphase: restart reconciliation queued {counts}")
        except Exception as exc:  # the archive keeps running; say why
            orthanc.LogError(f"borderphase: reconciliation at start-up failed: {type(exc).__name__}: {exc}")
        with self.lock:
            self.consumer = self.queue.consumer(self.ctx.settings.workers)
            self.consumer.start()
        orthanc.LogWarning(f"borderphase: plugin running, work dir {self.ctx.state.root}, "
                           f"{self.ctx.settings.workers} worker(s), analysis with {self.ctx.settings.python}")

    def stop(self) -> None:
        with self.lock:
            if self.consumer is not None:
                self.consumer.stop(graceful=False)
                self.consumer = None
        stop_children()

    def on_change(self, change_type, level, resource_id) -> None:
        try:
            if change_type == orthanc.ChangeType.STABLE_STUDY:
                self.queue.enqueue(resource_id)
            elif change_type == orthanc.ChangeType.ORTHANC_STARTED:
                threading.Thread(target=self.start, name="borderphase-start", daemon=True).start()
            elif change_type == orthanc.ChangeType.ORTHANC_STOPPED:
                self.stop()
        except Exception as exc:  # never an exception into Orthanc's change thread
            orthanc.LogError(f"borderphase: change {change_type} of {resource_id} not handled: "
                             f"{type(exc).__name__}: {exc}")

    def on_status(self, output, uri, **request) -> None:
        if request.get("method") != "GET":
            output.SendMethodNotAllowed("GET")
            return
        doc = status_document(self.ctx.state, self.queue.queued_studies())
        output.AnswerBuffer(json.dumps(doc, indent=1), "application/json")


def _register() -> None:
    _install_logging()
    try:
        settings = load_settings(json.loads(orthanc.GetConfiguration()))
    except ConfigError as exc:
        orthanc.LogError(f"borderphase: plugin disabled: {exc}")
        return
    instance = BorderphasePlugin(settings)
    orthanc.RegisterOnChangeCallback(instance.on_change)
    orthanc.RegisterRestCallback(STATUS_ROUTE, instance.on_status)
    globals()["PLUGIN"] = instance


_register()
