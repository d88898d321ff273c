"""What the reading commands (``inspect``, ``conformance``) check before they start: that every
input path exists, and the site's phase-convention rules file, if one is given. Each problem is
printed as one line naming the command, and the command exits 2 (usage/config error)."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional, Sequence


class InputRefused(Exception):
    """Printed already; the command returns :attr:`exit_code`."""

    exit_code = 2


def checked_inputs(command: str, paths: Sequence, rules_path: Optional[Path]):
    """The loaded convention rules (or None), after checking that every path exists; raises
    :class:`InputRefused` after printing the reason."""
    missing = [str(p) for p in paths if not Path(p).exists()]
    if missing:
        print(f"borderphase {command}: no such file or directory: {', '.join(missing)}", file=sys.stderr)
        raise InputRefused
    if rules_path is None:
        return None
    from dicom_io.convention import ConventionConfigError, load_rules
    try:
        return load_rules(rules_path)
    except ConventionConfigError as exc:  # names the file, the key and the problem
        print(f"borderphase {command}: convention rules: {exc}", file=sys.stderr)
        raise InputRefused from None
