"""DICOMweb STOW-RS client (PS3.18 10.5): POST multipart/related; type="application/dicom".

Plain ``urllib``: the multipart body is simple enough that no extra dependency is needed.
"""
from __future__ import annotations

import base64
import json
import ssl
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from dicom_io.net.scu import SendError


@dataclass(frozen=True)
class StowDestination:
    url: str  # e.g. http://host:8042/dicom-web/studies
    username: str | None = None
    password: str | None = None
    timeout_s: float = 60.0
    verify_tls: bool = True


def build_multipart(paths: Sequence[Path]) -> tuple[bytes, str]:
    """Body and Content-Type for a STOW-RS request carrying ``paths`` as application/dicom parts."""
    boundary = f"borderphase-{uuid.uuid4().hex}"
    chunks: list[bytes] = []
    for p in paths:
        chunks.append(f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode())
        chunks.append(Path(p).read_bytes())
        chunks.append(b"\r\n")
    chunks.append(f"--{boundary}--\r\n".encode())
    ctype = f'multipart/related; type="application/dicom"; boundary={boundary}'
    return b"".join(chunks), ctype


def stow_files(dest: StowDestination, paths: Sequence[str | Path]) -> dict:
    """POST ``paths``; raise :class:`SendError` unless the server stored them all (200)."""
    body, ctype = build_multipart([Path(p) for p in paths])
    req = urllib.request.Request(dest.url, data=body, method="POST",
                                 headers={"Content-Type": ctype, "Accept": "application/dicom+json"})
    if dest.username:
        token = base64.b64encode(f"{dest.username}:{dest.password or ''}".encode()).decode()
        req.add_header("Authorization", f"Basic {token}")
    ctx = None if dest.verify_tls else ssl._create_unverified_context()
    try:
        with urllib.request.urlopen(req, timeout=dest.timeout_s, context=ctx) as rsp:
            text = rsp.read().decode("utf-8", "replace")
            code = rsp.status
    except urllib.error.HTTPError as exc:
        raise SendError(f"STOW-RS {dest.url} answered HTTP {exc.code}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise SendError(f"STOW-RS {dest.url} unreachable: {exc}") from exc
    if code != 200:  # 202 = some failed (PS3.18 10.5.3)
        raise SendError(f"STOW-RS {dest.url} answered HTTP {code} (not every instance stored)")
    try:
        return json.loads(text) if text else {}
    except ValueError:
        return {}
