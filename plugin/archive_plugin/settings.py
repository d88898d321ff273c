"""The plugin's settings: the ``Borderphase`` section of Orthanc's own configuration file.

Everything is optional; enabling the plugin takes only Orthanc's two lines (``Plugins`` with the
Python plugin and ``PythonScript`` naming :mod:`plugin.archive_plugin.entry`)::

    "Borderphase": {
      "Config": "/etc/borderphase/plugin.toml",   // the node's TOML schema: [[rules]], [analysis], [queue]
      "WorkDir": "/var/lib/orthanc/borderphase",  // default: <StorageDirectory>/borderphase
      "Python": "/opt/borderphase/bin/python3",   // runs the analysis; default: python3 on PATH
      "Workers": 1                                // analysis threads (each runs one child process)
    }

Without ``Config`` the rules are those of ``plugin_config.example.toml`` beside this module.
The TOML file is read by :func:`plugin.service.config.parse_config`, so it is validated exactly
like the node's (errors name the file and the key); its ``state_dir`` is the work directory
unless ``WorkDir`` is given. ``[node]``, ``[completion]``, ``[dispatch]`` and destinations mean
nothing inside Orthanc (results always go back into the study they came from).
"""
from __future__ import annotations

import shutil
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from plugin.service.config import Config, ConfigError, parse_config

DEFAULT_CONFIG = Path(__file__).with_name("plugin_config.example.toml")
SECTION = "Borderphase"
_KEYS = ("Config", "WorkDir", "Python", "Workers")


@dataclass(frozen=True)
class PluginSettings:
    config: Config          # rules, convention rules, queue; ``config.state_dir`` is the work directory
    python: str             # the interpreter that runs the analysis child
    workers: int = 1

    @property
    def work_dir(self) -> Path:
        return Path(self.config.state_dir)


def load_settings(orthanc_config: dict[str, Any]) -> PluginSettings:
    """Settings from Orthanc's parsed configuration; raises :class:`ConfigError` naming the problem."""
    section = orthanc_config.get(SECTION, {})
    if not isinstance(section, dict):
        raise ConfigError(f"Orthanc configuration: {SECTION!r} must be an object")
    unknown = sorted(set(section) - set(_KEYS))
    if unknown:
        raise ConfigError(f"Orthanc configuration: {SECTION}.{unknown[0]}: unknown key (known: {', '.join(_KEYS)})")
    toml_path = Path(section.get("Config") or DEFAULT_CONFIG)
    try:
        doc = tomllib.loads(toml_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{SECTION}.Config: {toml_path}: no such file") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{toml_path}: cannot read: {exc}") from None
    if section.get("WorkDir") or "Config" not in section:
        storage = Path(orthanc_config.get("StorageDirectory") or "OrthancStorage")
        doc["state_dir"] = str(Path(section.get("WorkDir") or storage / "borderphase").resolve())
    config = parse_config(doc, source=str(toml_path), base_dir=toml_path.parent.resolve())
    if config.queue.backend != "sqlite":
        raise ConfigError(f"{toml_path}: [queue].backend: only \"sqlite\" inside Orthanc "
                          "(the plugin's worker threads consume the queue of this Orthanc)")
    python = section.get("Python") or shutil.which("python3") or "/usr/bin/python3"
    workers = section.get("Workers", 1)
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise ConfigError(f"Orthanc configuration: {SECTION}.Workers: must be an integer >= 1, got {workers!r}")
    return PluginSettings(config=config, python=str(python), workers=workers)
