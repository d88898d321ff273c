"""The Storage SCP's associations wait on events, not on 1 ms polls (dicom_io.net.prompt_io).

pynetdicom's own acceptor threads wake about 1,000 times a second each while an association is
idle; ours wait in ``select`` / on the DIMSE queue for up to ``IDLE_WAIT_S``. These tests fail if
the request handler stops being used (e.g. a pynetdicom upgrade that no longer calls
``_create_association``) or if the DUL goes back to polling, and check that an answer still
leaves at once (the wake-up on a queued response works)."""
from __future__ import annotations

import time

from pynetdicom import AE, evt
from pynetdicom.sop_class import Verification

import dicom_io.net.prompt_io as prompt_io
from dicom_io.net.prompt_io import PromptAssociationSocket
from dicom_io.net.scp import StorageSCP


def test_idle_association_wakes_rarely_and_answers_at_once(monkeypatch):
    calls = {"ready": 0}
    original = PromptAssociationSocket.ready

    def counting(self):
        calls["ready"] += 1
        return original.fget(self)

    monkeypatch.setattr(PromptAssociationSocket, "ready", property(counting))
    seen = []
    scp = StorageSCP("BPNODE", "127.0.0.1", 0, on_instance=lambda inst: 0)
    scp.start()
    try:
        scp._server.bind(evt.EVT_C_ECHO, lambda event: seen.append(
            (type(event.assoc.dul.socket), type(event.assoc.dul.to_provider_queue))) or 0)
        ae = AE(ae_title="TESTSCU")
        ae.add_requested_context(Verification)
        assoc = ae.associate("127.0.0.1", scp.port, ae_title="BPNODE")
        assert assoc.is_established
        try:
            before = calls["ready"]
            time.sleep(1.0)  # idle: pynetdicom's DUL would poll its socket ~1,000 times
            idle_wakeups = calls["ready"] - before
            t0 = time.perf_counter()
            status = assoc.send_c_echo()
            echo_s = time.perf_counter() - t0
        finally:
            assoc.release()
    finally:
        scp.stop()
    assert seen == [(PromptAssociationSocket, prompt_io._WakeQueue)]  # a queued answer wakes the DUL
    assert status.Status == 0x0000
    assert idle_wakeups <= 3 / prompt_io.IDLE_WAIT_S  # ~50 expected; polling would be ~1,000
    # the response is sent when it is queued, not at the DUL's next timeout (generous for a loaded host)
    assert echo_s < 1.0
