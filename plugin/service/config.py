"""Node configuration: one TOML file (see ``example_config.toml`` beside this module).

Loading validates everything up front and raises :class:`ConfigError` naming the key and the
problem, so ``borderphase serve`` can exit with code 2 before opening a port.
"""
from __future__ import annotations

import re
import sys

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ACTIONS = ("analyse", "ignore")
MATCH_KEYS = ("modality", "manufacturer", "series_description", "image_type", "calling_ae", "called_ae")


class ConfigError(Exception):
    """A configuration problem, with the file and the key."""


@dataclass(frozen=True)
class TlsConfig:
    cert_file: str
    key_file: str
    ca_file: str | None = None
    require_client_cert: bool = False


@dataclass(frozen=True)
class NodeConfig:
    ae_title: str = "BORDERPHASE"
    host: str = "127.0.0.1"
    port: int = 11112
    allowed_calling_ae_titles: tuple[str, ...] = ()
    allowed_networks: tuple[str, ...] = ()
    max_associations: int = 16
    min_free_mb: float = 200.0
    tls: TlsConfig | None = None


@dataclass(frozen=True)
class CompletionConfig:
    quiet_period_s: float = 10.0
    release_grace_s: float = 2.0


@dataclass(frozen=True)
class QueueConfig:
    backend: str = "sqlite"  # sqlite | redis
    redis_url: str = "redis://127.0.0.1:6379/0"
    name: str = "borderphase"
    workers: int = 1  # embedded consumer threads inside `serve`; 0 = external workers only
    worker_type: str = "process"  # process | thread (huey worker types)
    worker_nice: int = 10  # CPU niceness of process workers (receiving has priority)


@dataclass(frozen=True)
class AnalysisConfig:
    callable: str = "plugin.pipeline:analyze_paths"
    convention_rules: str | None = None
    lease_s: float = 3600.0


@dataclass(frozen=True)
class DispatchConfig:
    retry_initial_s: float = 5.0
    retry_max_s: float = 300.0
    timeout_s: float = 30.0


@dataclass(frozen=True)
class Destination:
    name: str
    kind: str  # dicom | stowrs
    ae_title: str = ""
    host: str = ""
    port: int = 0
    calling_ae_title: str = ""
    url: str = ""
    username: str | None = None
    password: str | None = None
    tls_ca_file: str | None = None  # DICOM TLS to this destination (verify its certificate with this CA)
    tls_cert_file: str | None = None  # our client certificate, when the destination requires one
    tls_key_file: str | None = None

    def describe(self) -> str:
        return self.url if self.kind == "stowrs" else f"{self.ae_title}@{self.host}:{self.port}"

    def as_dict(self) -> dict:
        d = dict(self.__dict__)
        d.pop("password", None)
        return d


@dataclass(frozen=True)
class RoutingRule:
    name: str
    action: str
    match: dict[str, Any]
    destinations: tuple[str, ...] = ()
    reason: str = ""


@dataclass(frozen=True)
class Config:
    state_dir: Path
    node: NodeConfig = field(default_factory=NodeConfig)
    completion: CompletionConfig = field(default_factory=CompletionConfig)
    queue: QueueConfig = field(default_factory=QueueConfig)
    analysis: AnalysisConfig = field(default_factory=AnalysisConfig)
    dispatch: DispatchConfig = field(default_factory=DispatchConfig)
    destinations: dict[str, Destination] = field(default_factory=dict)
    rules: tuple[RoutingRule, ...] = ()
    default_action: str = "ignore"
    default_reason: str = "no routing rule matched"
    source: str = "<defaults>"


def _get(section: dict, key: str, typ, default, where: str):
    if key not in section:
        return default
    value = section[key]
    if typ is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, typ) or isinstance(value, bool) and typ is not bool:
        raise ConfigError(f"{where}.{key}: expected {typ.__name__}, got {value!r}")
    return value


def _strs(section: dict, key: str, where: str) -> tuple[str, ...]:
    value = section.get(key, [])
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where}.{key}: expected a string or a list of strings")
    return tuple(value)


def _check_unknown(section: dict, allowed: set[str], where: str) -> None:
    unknown = set(section) - allowed
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}")


def parse_config(doc: dict, *, source: str = "<dict>", base_dir: Path | None = None) -> Config:
    base_dir = base_dir or Path.cwd()
    _check_unknown(doc, {"state_dir", "node", "completion", "queue", "analysis", "dispatch",
                         "destinations", "rules", "routing"}, "top level")
    if "state_dir" not in doc:
        raise ConfigError("state_dir: required (where the spool, queue, results and outbox live)")
    state_dir = Path(str(doc["state_dir"])).expanduser()
    if not state_dir.is_absolute():
        state_dir = (base_dir / state_dir).resolve()

    n = doc.get("node", {})
    _check_unknown(n, {"ae_title", "host", "port", "allowed_calling_ae_titles", "allowed_networks",
                       "max_associations", "min_free_mb", "tls"}, "node")
    tls = None
    if "tls" in n:
        t = n["tls"]
        _check_unknown(t, {"cert_file", "key_file", "ca_file", "require_client_cert"}, "node.tls")
        for k in ("cert_file", "key_file"):
            if k not in t:
                raise ConfigError(f"node.tls.{k}: required when [node.tls] is present")
        tls = TlsConfig(t["cert_file"], t["key_file"], t.get("ca_file"), bool(t.get("require_client_cert", False)))
    ae = _get(n, "ae_title", str, "BORDERPHASE", "node")
    if not 0 < len(ae.strip()) <= 16:
        raise ConfigError(f"node.ae_title: must be 1-16 characters, got {ae!r}")
    port = _get(n, "port", int, 11112, "node")
    if not 0 <= port <= 65535:
        raise ConfigError(f"node.port: {port} is not a TCP port")
    node = NodeConfig(
        ae_title=ae.strip(), host=_get(n, "host", str, "127.0.0.1", "node"), port=port,
        allowed_calling_ae_titles=_strs(n, "allowed_calling_ae_titles", "node"),
        allowed_networks=_strs(n, "allowed_networks", "node"),
        max_associations=_get(n, "max_associations", int, 16, "node"),
        min_free_mb=_get(n, "min_free_mb", float, 200.0, "node"), tls=tls)
    import ipaddress
    for net in node.allowed_networks:
        try:
            ipaddress.ip_network(net, strict=False)
        except ValueError as exc:
            raise ConfigError(f"node.allowed_networks: {exc}") from None

    c = doc.get("completion", {})
    _check_unknown(c, {"quiet_period_s", "release_grace_s"}, "completion")
    completion = CompletionConfig(_get(c, "quiet_period_s", float, 10.0, "completion"),
                                  _get(c, "release_grace_s", float, 2.0, "completion"))
    if completion.quiet_period_s <= 0 or completion.release_grace_s < 0:
        raise ConfigError("completion: quiet_period_s must be > 0 and release_grace_s >= 0")

    q = doc.get("queue", {})
    _check_unknown(q, {"backend", "redis_url", "name", "workers", "worker_type", "worker_nice"}, "queue")
    queue = QueueConfig(_get(q, "backend", str, "sqlite", "queue"),
                        _get(q, "redis_url", str, "redis://127.0.0.1:6379/0", "queue"),
                        _get(q, "name", str, "borderphase", "queue"),
                        _get(q, "workers", int, 1, "queue"),
                        _get(q, "worker_type", str, "process", "queue"),
                        _get(q, "worker_nice", int, 10, "queue"))
    if queue.backend not in ("sqlite", "redis"):
        raise ConfigError(f"queue.backend: 'sqlite' or 'redis', got {queue.backend!r}")
    if queue.worker_type not in ("thread", "process"):
        raise ConfigError(f"queue.worker_type: 'thread' or 'process', got {queue.worker_type!r}")

    a = doc.get("analysis", {})
    _check_unknown(a, {"callable", "convention_rules", "lease_s"}, "analysis")
    analysis = AnalysisConfig(_get(a, "callable", str, "plugin.pipeline:analyze_paths", "analysis"),
                              _get(a, "convention_rules", str, None, "analysis"),
                              _get(a, "lease_s", float, 3600.0, "analysis"))
    if ":" not in analysis.callable:
        raise ConfigError(f"analysis.callable: 'module:function', got {analysis.callable!r}")

    d = doc.get("dispatch", {})
    _check_unknown(d, {"retry_initial_s", "retry_max_s", "timeout_s"}, "dispatch")
    dispatch = DispatchConfig(_get(d, "retry_initial_s", float, 5.0, "dispatch"),
                              _get(d, "retry_max_s", float, 300.0, "dispatch"),
                              _get(d, "timeout_s", float, 30.0, "dispatch"))

    dests: dict[str, Destination] = {}
    for name, dd in doc.get("destinations", {}).items():
        where = f"destinations.{name}"
        if not isinstance(dd, dict):
            raise ConfigError(f"{where}: expected a table")
        _check_unknown(dd, {"type", "ae_title", "host", "port", "calling_ae_title", "url",
                            "username", "password", "tls_ca_file", "tls_cert_file", "tls_key_file"}, where)
        kind = dd.get("type", "dicom")
        if kind == "dicom":
            for k in ("ae_title", "host", "port"):
                if k not in dd:
                    raise ConfigError(f"{where}.{k}: required for a DICOM destination")
            dests[name] = Destination(name, kind, ae_title=_get(dd, "ae_title", str, "", where),
                                      host=_get(dd, "host", str, "", where), port=_get(dd, "port", int, 0, where),
                                      calling_ae_title=_get(dd, "calling_ae_title", str, node.ae_title, where),
                                      tls_ca_file=dd.get("tls_ca_file"), tls_cert_file=dd.get("tls_cert_file"),
                                      tls_key_file=dd.get("tls_key_file"))
        elif kind == "stowrs":
            if "url" not in dd:
                raise ConfigError(f"{where}.url: required for a STOW-RS destination")
            dests[name] = Destination(name, kind, url=_get(dd, "url", str, "", where),
                                      username=dd.get("username"), password=dd.get("password"))
        else:
            raise ConfigError(f"{where}.type: 'dicom' or 'stowrs', got {kind!r}")

    r = doc.get("routing", {})
    _check_unknown(r, {"default_action", "default_reason"}, "routing")
    default_action = _get(r, "default_action", str, "ignore", "routing")
    if default_action not in ("ignore",):
        raise ConfigError("routing.default_action: only 'ignore' (analysing needs a rule with destinations)")
    rules = []
    raw_rules = doc.get("rules", [])
    if not isinstance(raw_rules, list):
        raise ConfigError("rules: expected an array of tables ([[rules]])")
    for i, rr in enumerate(raw_rules):
        where = f"rules[{i}]"
        _check_unknown(rr, {"name", "action", "match", "destinations", "reason"}, where)
        name = rr.get("name", f"rule{i + 1}")
        action = rr.get("action", "analyse")
        if action == "analyze":
            action = "analyse"
        if action not in ACTIONS:
            raise ConfigError(f"{where}.action: one of {ACTIONS}, got {action!r}")
        match = rr.get("match", {})
        _check_unknown(match, set(MATCH_KEYS), f"{where}.match")
        for key in ("manufacturer", "series_description"):
            if key in match:
                try:
                    re.compile(match[key])
                except re.error as exc:
                    raise ConfigError(f"{where}.match.{key}: bad regular expression: {exc}") from None
        dnames = _strs(rr, "destinations", where)
        for dn in dnames:
            if dn not in dests:
                raise ConfigError(f"{where}.destinations: unknown destination {dn!r} (define [destinations.{dn}])")
        rules.append(RoutingRule(name=name, action=action, match=dict(match), destinations=dnames,
                                 reason=rr.get("reason", "")))
    return Config(state_dir=state_dir, node=node, completion=completion, queue=queue, analysis=analysis,
                  dispatch=dispatch, destinations=dests, rules=tuple(rules), default_action=default_action,
                  default_reason=_get(r, "default_reason", str, "no routing rule matched", "routing"),
                  source=source)


def load_config(path: str | Path) -> Config:
    """Read and validate a TOML config file; raise :class:`ConfigError` on any problem."""
    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    try:
        return parse_config(doc, source=str(path), base_dir=path.parent.resolve())
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
