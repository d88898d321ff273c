"""Node configuration: one TOML file (see ``example_config.toml`` beside this module).

The file's schema is the pydantic dataclasses below (one per table). Loading validates everything
up front and raises :class:`ConfigError` naming the file, the key path and the problem, one line
per problem (e.g. ``node.toml: [[rules]][2] "gre".match.series_description: not a valid regular
expression: ...``), so ``borderphase serve`` can exit with code 2 before opening a port. Unknown
keys are errors; values are never silently converted (``port = "104"`` is refused). Routing rules
use the same header-rule keys and matcher as the site's convention rules (:mod:`dicom_io.rules`).

Relative paths (``state_dir``, ``analysis.convention_rules``) are relative to the config file.
The sections are dataclasses: ``dataclasses.replace`` works on them (and validates again).
"""
from __future__ import annotations

import ipaddress
import os
import tomllib
from dataclasses import field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal, Optional

from pydantic import (Field, StrictBool, StrictFloat, StrictInt, StrictStr, TypeAdapter, ValidationError,
                      ValidationInfo, field_validator, model_validator)
from pydantic.dataclasses import dataclass

from dicom_io.convention import ConventionConfigError, load_rules
from dicom_io.rules import STRICT_TABLE, HeaderRule, KeyProblem, Regex, Strings, describe_errors, header_rule
from dicom_io.vocabulary import DEFAULT_SUMMARY_ENCODING, SUMMARY_ENCODING_NAMES

ACTIONS = ("analyse", "ignore")
MATCH_KEYS = ("modality", "manufacturer", "series_description", "image_type", "calling_ae", "called_ae")
_TABLES = ("rules",)   # arrays of tables, shown as [[rules]][n] in errors


class ConfigError(Exception):
    """A configuration problem, with the file and the key."""


def _from_file(path: StrictStr, info: ValidationInfo) -> Path:
    """A path from the file: ``~`` expanded, relative to the config file's folder."""
    p = Path(path).expanduser()
    base = (info.context or {}).get("base_dir") or Path.cwd()
    return p if p.is_absolute() else (Path(base) / p).resolve()


@dataclass(frozen=True, config=STRICT_TABLE)
class TlsConfig:
    cert_file: StrictStr
    key_file: StrictStr
    ca_file: Optional[StrictStr] = None
    require_client_cert: StrictBool = False
    # calling AE title -> the client certificate it must present: "sha256:<fingerprint hex>" or
    # "CN=<subject common name>"; when set, only the AE titles listed here may associate
    calling_ae_certificates: dict[StrictStr, StrictStr] = field(default_factory=dict)

    @field_validator("calling_ae_certificates")
    @classmethod
    def _certificates(cls, pins: dict[str, str]) -> dict[str, str]:
        from dicom_io.net.scp import parse_certificate_pin
        for ae, pin in pins.items():
            try:
                parse_certificate_pin(pin)
            except ValueError as exc:
                raise KeyProblem((ae,), str(exc)) from None
        return {ae.strip(): pin for ae, pin in pins.items()}

    @model_validator(mode="after")
    def _pins_need_client_certs(self) -> "TlsConfig":
        if self.calling_ae_certificates and not (self.require_client_cert and self.ca_file):
            raise KeyProblem(("calling_ae_certificates",),
                             "needs require_client_cert = true and ca_file (to verify the client certificates)")
        return self


@dataclass(frozen=True, config=STRICT_TABLE)
class NodeConfig:
    ae_title: StrictStr = "BORDERPHASE"
    host: StrictStr = "127.0.0.1"
    port: StrictInt = Field(11112, ge=0, le=65535)
    allowed_calling_ae_titles: Strings = ()
    allowed_networks: Strings = ()
    max_associations: StrictInt = Field(16, ge=1)
    # connections from one address (associated or still silent); a silent one is closed first
    max_connections_per_address: StrictInt = Field(12, ge=1)
    # connections that have not sent their A-ASSOCIATE-RQ yet; beyond this the oldest is closed
    max_pending_connections: StrictInt = Field(32, ge=1)
    # a connected peer must start its A-ASSOCIATE-RQ (TLS handshake included) within this (ARTIM)
    association_request_timeout_s: StrictFloat = Field(10.0, gt=0)
    # an established association that sends nothing for this long is aborted
    network_timeout_s: StrictFloat = Field(60.0, gt=0)
    min_free_mb: StrictFloat = Field(200.0, ge=0)   # below this free space a C-STORE is refused with 0xA700
    reserve_mb: StrictFloat = Field(8.0, ge=0)      # pre-allocated file released on ENOSPC (plugin/service/diskspace.py)
    reconcile_interval_s: StrictFloat = Field(30.0, gt=0)  # periodic requeue of accepted work (plugin/service/reconcile.py)
    tls: Optional[TlsConfig] = None

    @field_validator("ae_title")
    @classmethod
    def _ae_title(cls, ae: str) -> str:
        if not 0 < len(ae.strip()) <= 16:
            raise ValueError(f"must be 1-16 characters, got {ae!r}")
        return ae.strip()

    @field_validator("allowed_networks")
    @classmethod
    def _networks(cls, networks: tuple[str, ...]) -> tuple[str, ...]:
        for i, net in enumerate(networks):
            try:
                ipaddress.ip_network(net, strict=False)
            except ValueError as exc:
                raise KeyProblem((i,), str(exc)) from None
        return networks


@dataclass(frozen=True, config=STRICT_TABLE)
class StorageConfig:
    """Who may read what the node writes (see :mod:`plugin.service.permissions`)."""

    group: Optional[StrictStr] = None   # None: files 0600 / dirs 0700; a group: 0640 / 0750, that group

    @field_validator("group")
    @classmethod
    def _group(cls, group: Optional[str]) -> Optional[str]:
        from plugin.service.permissions import check_group
        return None if group is None else check_group(group)


@dataclass(frozen=True, config=STRICT_TABLE)
class CompletionConfig:
    quiet_period_s: StrictFloat = Field(10.0, gt=0)
    release_grace_s: StrictFloat = Field(2.0, ge=0)


def default_workers() -> int:
    """Analysis workers when the config names none: the CPU cores this process may use minus one
    (left to receiving), at least 1."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):   # not Linux
        cores = os.cpu_count() or 1
    return max(1, cores - 1)


def default_receive_processes() -> int:
    """Receiving processes when the config names none: one per CPU core this process may use, at
    most 4 (each holds its own Python interpreter, about 100 MB)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):   # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, 4))


@dataclass(frozen=True, config=STRICT_TABLE)
class ReceiveConfig:
    """How many processes receive C-STOREs on ``[node] port``: the node accepts each connection and
    hands it round-robin to itself or one of ``processes - 1`` receiver processes (see
    :mod:`plugin.service.receivers`). 1 = the node's own process only. ``[node]
    max_associations`` applies per process."""

    processes: StrictInt = Field(default_factory=default_receive_processes, ge=1, le=64)


@dataclass(frozen=True, config=STRICT_TABLE)
class QueueConfig:
    backend: Literal["sqlite", "redis"] = "sqlite"
    redis_url: StrictStr = "redis://127.0.0.1:6379/0"
    name: StrictStr = "borderphase"
    # analysis workers inside `serve` (default: cores - 1, at least 1); 0 = external workers only
    workers: StrictInt = Field(default_factory=default_workers, ge=0)
    worker_type: Literal["process", "thread"] = "process"  # huey worker types
    worker_nice: StrictInt = 10           # CPU niceness of process workers (receiving has priority)
    # BLAS (OpenBLAS) threads in each analysis worker; 0 = the library's default (one per core).
    # Its threads busy-wait around every threaded call: with the dipole fit's tall products on BLAS
    # that doubled a study's CPU beside a second worker (plugin/service/cputhreads.py, benchmarks/load.md)
    blas_threads: StrictInt = Field(1, ge=0)
    # back the analysis processes' malloc with transparent huge pages (glibc >= 2.35: `serve` starts
    # itself again with GLIBC_TUNABLES glibc.malloc.hugetlb=1, which the forked workers inherit):
    # a study's page faults halved, completion -> SR about 0.3 s sooner, peak memory unchanged (plugin/service/memory.py)
    malloc_hugepages: StrictBool = True
    # analysis workers keep the memory a study frees for the next one instead of returning it to the
    # system: no page faults for the next study's arrays (2-echo study: completion -> SR median 1.87 ->
    # 1.39 s on a 2-core VM), but the worker's resident size stays at its peak between studies
    # and that peak is ~12 % higher (368 -> 412 MiB; plugin/service/memory.py, benchmarks/load.md)
    keep_freed_memory: StrictBool = False
    # each study analysed in a child forked from the (warm) worker process: every study peaks where a
    # worker's first does (later studies ~15-20 MiB higher in a long-lived worker), and a crash or the
    # out-of-memory killer fails that study only. With process workers that return their freed memory
    # (not with keep_freed_memory) (plugin/service/isolation.py)
    study_process: StrictBool = True
    # start a study's analysis at its association release, into a staging folder, and deliver it
    # only once completion confirms the same instances (plugin/service/speculation.py)
    speculative: StrictBool = True


@dataclass(frozen=True, config=STRICT_TABLE)
class AnalysisConfig:
    convention_rules: Optional[StrictStr] = None   # site rules file (checked when the config is read)
    lease_s: StrictFloat = Field(3600.0, gt=0)
    qsm_series: StrictBool = True                  # store the QSM map as the "borderphase QSM (ppb)" MR series
    # how the summary images are stored: JPEG-LS Lossless (4-9 x smaller), or uncompressed for an
    # archive that refuses JPEG-LS (dicom_io.results.summary.SUMMARY_ENCODINGS)
    summary_encoding: Literal[SUMMARY_ENCODING_NAMES] = DEFAULT_SUMMARY_ENCODING   # type: ignore[valid-type]

    @model_validator(mode="before")
    @classmethod
    def _removed_keys(cls, data: Any) -> Any:
        if isinstance(data, dict) and "callable" in data:
            raise KeyProblem(("callable",), "removed: the node runs plugin.pipeline.analyze_paths itself; "
                                            "delete this line")
        return data

    @field_validator("convention_rules")
    @classmethod
    def _rules_file(cls, path: Optional[str], info: ValidationInfo) -> Optional[str]:
        if path is None:
            return None
        resolved = _from_file(path, info)
        try:
            load_rules(resolved)
        except ConventionConfigError as exc:
            raise ValueError(str(exc)) from None
        return str(resolved)


@dataclass(frozen=True, config=STRICT_TABLE)
class ConventionConfig:
    # strong data evidence (veins along B0) against the header's convention: use the data's
    # (data) or keep the header's (header); either way the result says so (plugin.method.dataconvention)
    on_conflict: Literal["data", "header"] = "data"


@dataclass(frozen=True, config=STRICT_TABLE)
class DispatchConfig:
    retry_initial_s: StrictFloat = Field(5.0, gt=0)
    retry_max_s: StrictFloat = Field(300.0, gt=0)
    timeout_s: StrictFloat = Field(30.0, gt=0)


@dataclass(frozen=True, config=STRICT_TABLE)
class RetentionConfig:
    """``[retention]`` (plugin/service/retention.py): what may be removed once delivered. Only studies
    whose every version is final and whose every result was delivered are ever removed; failed studies
    and undelivered results never are."""

    max_age_days: Optional[StrictFloat] = Field(None, ge=0)   # remove delivered studies this old (None: keep)
    free_space_watermark_percent: Optional[StrictFloat] = Field(10.0, ge=0, le=100)  # clean oldest first below this
    free_space_watermark_gb: Optional[StrictFloat] = Field(None, ge=0)
    interval_s: StrictFloat = Field(60.0, gt=0)


@dataclass(frozen=True, config=STRICT_TABLE)
class MetricsConfig:
    """``[metrics]`` (plugin/service/metrics.py): a Prometheus endpoint; off unless ``port`` is set
    (0: any free port, written to node.json); loopback only unless ``host`` says otherwise."""

    port: Optional[StrictInt] = Field(None, ge=0, le=65535)
    host: StrictStr = "127.0.0.1"


@dataclass(frozen=True, config=STRICT_TABLE)
class Destination:
    """A ``[destinations.NAME]`` table: a DICOM AE (C-STORE) or a STOW-RS endpoint."""

    type: Literal["dicom", "stowrs"] = "dicom"
    ae_title: StrictStr = ""
    host: StrictStr = ""
    port: StrictInt = Field(0, ge=0, le=65535)
    calling_ae_title: StrictStr = ""     # default: node.ae_title
    url: StrictStr = ""
    username: Optional[StrictStr] = None
    password: Optional[StrictStr] = None
    tls_ca_file: Optional[StrictStr] = None  # DICOM TLS to this destination (verify its certificate with this CA)
    tls_cert_file: Optional[StrictStr] = None  # our client certificate, when the destination requires one
    tls_key_file: Optional[StrictStr] = None
    name: str = Field("", init=False)     # the table's name, set by Config

    @model_validator(mode="before")
    @classmethod
    def _required_for_type(cls, data: Any) -> Any:
        if isinstance(data, dict):
            kind = data.get("type", "dicom")
            needed = {"dicom": ("ae_title", "host", "port"), "stowrs": ("url",)}.get(kind, ())
            for key in needed:
                if key not in data:
                    what = "a DICOM" if kind == "dicom" else "a STOW-RS"
                    raise KeyProblem((key,), f"required for {what} destination")
        return data

    @property
    def kind(self) -> str:
        return self.type

    def describe(self) -> str:
        return self.url if self.kind == "stowrs" else f"{self.ae_title}@{self.host}:{self.port}"

    def as_dict(self) -> dict:
        d = {k: v for k, v in self.__dict__.items() if k not in ("password", "type")}
        d["kind"] = self.kind
        return d


@dataclass(frozen=True, config=STRICT_TABLE)
class RouteMatch:
    """A rule's ``match`` keys (see :mod:`plugin.service.routing`); none: every series."""

    modality: Optional[Strings] = None
    manufacturer: Optional[Regex] = None        # searched without regard to case
    series_description: Optional[Regex] = None
    image_type: Optional[Strings] = None
    calling_ae: Optional[Strings] = None
    called_ae: Optional[Strings] = None

    @cached_property
    def header_rule(self) -> HeaderRule:
        return header_rule({k: getattr(self, k) for k in MATCH_KEYS}, ignore_case=("manufacturer",))


@dataclass(frozen=True, config=STRICT_TABLE)
class RoutingRule:
    name: StrictStr = ""                        # default: rule<position>
    action: Literal["analyse", "ignore"] = "analyse"
    match: RouteMatch = field(default_factory=RouteMatch)
    destinations: Strings = ()
    reason: StrictStr = ""

    @field_validator("action", mode="before")
    @classmethod
    def _spelling(cls, action: Any) -> Any:
        return "analyse" if action == "analyze" else action


@dataclass(frozen=True, config=STRICT_TABLE)
class RoutingConfig:
    default_action: StrictStr = "ignore"
    default_reason: StrictStr = "no routing rule matched"

    @field_validator("default_action")
    @classmethod
    def _only_ignore(cls, action: str) -> str:
        if action != "ignore":
            raise ValueError(f"only 'ignore' (analysing needs a rule with destinations), got {action!r}")
        return action


@dataclass(frozen=True, config=STRICT_TABLE)
class Config:
    state_dir: Path
    node: NodeConfig = field(default_factory=NodeConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    completion: CompletionConfig = field(default_factory=CompletionConfig)
    receive: ReceiveConfig = field(default_factory=ReceiveConfig)
    queue: QueueConfig = field(default_factory=QueueConfig)
    analysis: AnalysisConfig = field(default_factory=AnalysisConfig)
    convention: ConventionConfig = field(default_factory=ConventionConfig)
    dispatch: DispatchConfig = field(default_factory=DispatchConfig)
    destinations: dict[str, Destination] = field(default_factory=dict)
    rules: tuple[RoutingRule, ...] = ()
    routing: RoutingConfig = field(default_factory=RoutingConfig)
    retention: RetentionConfig = field(default_factory=RetentionConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    source: str = Field("<defaults>", exclude=True)   # the file it came from (not a key of the file)

    @model_validator(mode="before")
    @classmethod
    def _document(cls, data: Any) -> Any:
        if isinstance(data, dict):
            if "source" in data:
                raise KeyProblem(("source",), "unknown key")
            if "state_dir" not in data:
                raise KeyProblem(("state_dir",), "required (where the spool, queue, results and outbox live)")
        return data

    @field_validator("state_dir", mode="before")
    @classmethod
    def _state_dir(cls, path: Any, info: ValidationInfo) -> Any:
        return _from_file(path, info) if isinstance(path, str) else path

    @model_validator(mode="after")
    def _cross_references(self) -> "Config":
        for name, dest in self.destinations.items():
            object.__setattr__(dest, "name", name)
            if not dest.calling_ae_title and dest.kind == "dicom":
                object.__setattr__(dest, "calling_ae_title", self.node.ae_title)
        for i, rule in enumerate(self.rules):
            if not rule.name:
                object.__setattr__(rule, "name", f"rule{i + 1}")
            for dn in rule.destinations:
                if dn not in self.destinations:
                    raise KeyProblem(("rules", i, "destinations"),
                                     f"unknown destination {dn!r} (define [destinations.{dn}])")
        if self.dispatch.retry_max_s < self.dispatch.retry_initial_s:
            raise KeyProblem(("dispatch", "retry_max_s"), "must be >= retry_initial_s")
        return self

    @property
    def default_action(self) -> str:
        return self.routing.default_action

    @property
    def default_reason(self) -> str:
        return self.routing.default_reason


_CONFIG = TypeAdapter(Config)


def parse_config(doc: dict, *, source: str = "<dict>", base_dir: Path | None = None) -> Config:
    """Validate a parsed TOML document; relative paths are relative to ``base_dir`` (default: the
    working directory). Raises :class:`ConfigError` naming ``source``, the key path and the problem."""
    try:
        config = _CONFIG.validate_python(doc, context={"base_dir": base_dir or Path.cwd()})
    except ValidationError as exc:
        raise ConfigError(describe_errors(exc, Config, doc, file=source, tables=_TABLES)) from None
    object.__setattr__(config, "source", source)
    return config


def load_config(path: str | Path) -> Config:
    """Read and validate a TOML config file; raise :class:`ConfigError` on any problem."""
    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return parse_config(doc, source=str(path), base_dir=path.parent.resolve())
