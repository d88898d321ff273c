"""A small archive stand-in: a Storage SCP that files what it receives under
``<root>/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm`` (used by ``borderphase demo``
and by tests that need a destination without Orthanc)."""
from __future__ import annotations

from pathlib import Path

from dicom_io.net.scp import STATUS_OUT_OF_RESOURCES, STATUS_SUCCESS, ReceivedInstance, StorageSCP

from plugin.service.spool import Spool


class ArchiveStandIn:
    def __init__(self, root: Path, ae_title: str = "ARCHIVE", host: str = "127.0.0.1", port: int = 0):
        self.spool = Spool(Path(root))
        self.scp = StorageSCP(ae_title, host, port, self._store)

    def _store(self, inst: ReceivedInstance) -> int:
        try:
            self.spool.store_file(inst.study_instance_uid, inst.series_instance_uid, inst.sop_instance_uid,
                                 inst.path)
        except OSError:
            return STATUS_OUT_OF_RESOURCES
        return STATUS_SUCCESS

    def start(self) -> "ArchiveStandIn":
        self.scp.start()
        return self

    @property
    def port(self) -> int:
        return self.scp.port

    def stop(self) -> None:
        self.scp.stop()

    def files(self, study_uid: str | None = None) -> list[Path]:
        root = self.spool.root / study_uid if study_uid else self.spool.root
        return sorted(p for p in root.rglob("*.dcm") if ".tmp" not in p.parts)
