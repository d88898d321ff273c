"""Errors that name the file and the problem (never a bare traceback for bad input)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


class DicomInputError(Exception):
    """A DICOM input that cannot be used, with the path and a plain-language reason."""

    def __init__(self, path: str | Path | None, problem: str):
        self.path = str(path) if path is not None else None
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path else problem)


@dataclass(frozen=True)
class FileProblem:
    """One unreadable or skipped file, as reported in ``inspect``'s ``errors`` list."""

    path: str
    reason: str

    def as_dict(self) -> dict:
        return {"path": self.path, "reason": self.reason}
