"""One origin for the viewer test: the prebuilt OHIF app served as static files, and Orthanc's
DICOMweb (and Orthanc Explorer) passed through, so the browser never makes a cross-origin or
internet request.

- ``/dicom-web/...``, ``/app/...``, ``/instances/...``, ``/series/...``, ``/studies/...``,
  ``/patients/...``, ``/system`` and the other Orthanc REST roots go to Orthanc on loopback, with
  the client's Host header so the DICOMweb plugin writes BulkDataURIs on this origin.
- ``/app-config.js`` is the test's own OHIF configuration (data source = this origin's DICOMweb).
- Any other path is a file of OHIF's ``dist/``; unknown paths get ``index.html`` (OHIF is a
  single-page app: ``/viewer?StudyInstanceUIDs=...`` is routed in the browser).

Run in a thread by :func:`serve` (the test) or as ``python ohif_server.py DIST ORTHANC_PORT PORT``.
"""
from __future__ import annotations

import http.client
import mimetypes
import sys
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ORTHANC_ROOTS = ("/dicom-web/", "/app/", "/instances", "/series", "/studies", "/patients", "/system",
                 "/tools", "/wado", "/statistics", "/plugins", "/changes", "/jobs", "/modalities",
                 "/peers", "/queries")
HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
              "transfer-encoding", "upgrade", "content-length"}
EXTRA_TYPES = {".wasm": "application/wasm", ".mjs": "text/javascript", ".js": "text/javascript",
               ".json": "application/json", ".woff2": "font/woff2", ".svg": "image/svg+xml"}


def app_config_js() -> str:
    """OHIF configuration: one DICOMweb data source on this origin (Orthanc behind the proxy),
    no study list tours, no internet. Same-origin relative roots need no CORS."""
    return """window.config = {
  routerBasename: '/',
  extensions: [],
  modes: [],
  customizationService: {},
  showStudyList: true,
  maxNumberOfWebWorkers: 2,
  showWarningMessageForCrossOrigin: false,
  showCPUFallbackMessage: false,
  showLoadingIndicator: true,
  strictZSpacingForVolumeViewport: true,
  investigationalUseDialog: { option: 'never' },
  showErrorDetails: 'always',
  defaultDataSourceName: 'orthanc',
  dataSources: [{
    namespace: '@ohif/extension-default.dataSourcesModule.dicomweb',
    sourceName: 'orthanc',
    configuration: {
      friendlyName: 'Orthanc (loopback, throw-away)',
      name: 'orthanc',
      wadoUriRoot: '/wado',
      qidoRoot: '/dicom-web',
      wadoRoot: '/dicom-web',
      qidoSupportsIncludeField: false,
      imageRendering: 'wadors',
      thumbnailRendering: 'wadors',
      enableStudyLazyLoad: true,
      supportsFuzzyMatching: false,
      supportsWildcard: true,
      staticWado: false,
      singlepart: 'bulkdata,video',
      bulkDataURI: { enabled: true, relativeResolution: 'studies' },
      omitQuotationForMultipartRequest: true,
    },
  }],
};
"""


@dataclass(frozen=True)
class Site:
    dist: Path
    orthanc_port: int


def make_handler(site: Site) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt: str, *args) -> None:  # quiet: the test reads the browser, not this log
            pass

        def do_GET(self) -> None:
            self._route()

        def do_HEAD(self) -> None:
            self._route()

        def do_POST(self) -> None:
            self._route()

        def _route(self) -> None:
            path = self.path.split("?", 1)[0]
            if path.startswith(ORTHANC_ROOTS):
                self._proxy()
            elif path == "/app-config.js":
                self._send(200, app_config_js().encode(), "text/javascript")
            else:
                self._static(path)

        def _send(self, status: int, body: bytes, content_type: str, headers: dict | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _static(self, path: str) -> None:
            root = site.dist.resolve()
            candidate = (root / path.lstrip("/")).resolve()
            if root not in candidate.parents or not candidate.is_file():
                candidate = root / "index.html"  # single-page app route
            ctype = EXTRA_TYPES.get(candidate.suffix) or mimetypes.guess_type(candidate.name)[0]
            self._send(200, candidate.read_bytes(), ctype or "application/octet-stream")

        def _proxy(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
            conn = http.client.HTTPConnection("127.0.0.1", site.orthanc_port, timeout=120)
            try:
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                passed = {k: v for k, v in resp.getheaders()
                          if k.lower() not in HOP_BY_HOP and k.lower() != "content-type"}
                self._send(resp.status, data, resp.getheader("Content-Type", "application/octet-stream"), passed)
            finally:
                conn.close()

    return Handler


def serve(dist: Path, orthanc_port: int, port: int = 0) -> tuple[ThreadingHTTPServer, int]:
    """Start the server in a daemon thread on 127.0.0.1; returns it and its port (``shutdown()`` stops it)."""
    if not (dist / "index.html").is_file():
        raise FileNotFoundError(f"{dist}: no index.html (OHIF dist not unpacked: run npm ci in tests/viewer)")
    server = ThreadingHTTPServer(("127.0.0.1", port), make_handler(Site(dist, orthanc_port)))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="ohif-server", daemon=True).start()
    return server, server.server_address[1]


if __name__ == "__main__":
    srv, bound = serve(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else 0)
    print(f"http://127.0.0.1:{bound}/", flush=True)
    threading.Event().wait()
