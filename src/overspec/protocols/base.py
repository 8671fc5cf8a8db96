"""What a protocol is: one registered entry that declares its settings, needs, units, run function and report section.

The runner, the terminal summary and the report loop over :data:`PROTOCOLS`; nothing else spells a protocol's name.
Adding a protocol is one module that defines a :class:`Protocol` and registers it (``PROTOCOLS.register``), plus a
lazy line in :func:`_register_builtin_protocols` when it ships with overspec. The runner hashes each unit's declared
settings into its unit key, so changing a setting recomputes exactly the units that depend on it.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from overspec.config.typed import ConfigError, from_dict
from overspec.registry import Registry

__all__ = ["GENERAL", "Needs", "Protocol", "PROTOCOLS", "ReportColumn", "ReportGroup", "ReportSection", "UnitOutput",
           "UnitPlan",
           "enabled", "ordered_protocols", "planned_units", "protocol_of_unit", "reported_units", "resolve_settings",
           "settings_dict", "Switch", "unregistered_units"]

#: The target of protocols that run on general-vision datasets (biometric protocols target benchmark kinds).
GENERAL = "general"


@dataclass(frozen=True)
class Needs:
    """What a unit needs beyond the test features; a model or dataset that cannot provide it skips the unit."""

    text_tower: bool = False
    train_split: bool = False
    head: bool = False
    task: str = ""  # the task a general dataset must declare in its catalog entry ("zero_shot", "linear_probe")
    evaluate_on: str = "test"  # the split role scored; "all" falls back to "test" where a dataset has no such role
    base: bool = False  # the unit compares a fine-tune with its base: both models' features are gathered
    inputs: str = ""  # the kind of inputs gathered when not the target's own (e.g. "blocks")
    sample: int = 0  # at most this many images of the scored split, drawn with the run's seed (0: all)


@dataclass(frozen=True)
class UnitPlan:
    """One unit of a protocol on one target: its record name, what it needs, the settings its results depend on
    (hashed into its unit key) and how a sentence names it ("linear probe": why a unit was skipped)."""

    name: str
    needs: Needs
    settings: Mapping[str, Any] = field(default_factory=dict)
    label: str = ""


@dataclass(frozen=True)
class UnitOutput:
    """What a unit computed: record rows (split, metric, value, n, split_fingerprint, extra) and per-sample arrays."""

    rows: list[dict]
    predictions: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass(frozen=True)
class ReportColumn:
    """A column of the biometric tables: the first present of ``metrics``, labelled, with its direction."""

    metrics: tuple[str, ...]
    label: str
    higher_is_better: bool = True


@dataclass(frozen=True)
class ReportGroup:
    """Columns shown in one cell as "a/b/c" under one label (Table C's "APCER@BPCER 1 / 10 / 20 %")."""

    label: str
    columns: tuple[ReportColumn, ...]
    higher_is_better: bool = True


@dataclass(frozen=True)
class ReportSection:
    """How a protocol's records are reported.

    General protocols get one accuracy table per unit (``metric``), with GELO when ``gelo`` is set (the study's
    protocols). Biometric protocols get ``columns`` in the biometric tables, the first of which is the headline
    the terminal summary shows. ``rule`` names the decision rules behind the numbers (thresholds, operating points),
    as the dry run prints them. A general protocol whose numbers are not accuracies (``accuracy=False``: CKA
    similarities) is kept out of the accuracy tables and shown as plain numbers.
    """

    title: str
    metric: str = "acc1"
    gelo: bool = False
    columns: tuple[ReportColumn, ...] = ()
    rule: str = ""
    accuracy: bool = True  # general units: an accuracy (tables in percent, averages, GELO) or another kind of number


@dataclass(frozen=True)
class NoSettings:
    """The settings of a protocol that has none."""


@dataclass(frozen=True)
class Switch:
    """The settings of a protocol whose only choice is whether it runs."""

    enabled: bool = True


class Protocol(abc.ABC):
    """Base of every protocol entry: subclasses set the class attributes and implement :meth:`units` and :meth:`run`.

    ``targets`` names what the protocol runs on: :data:`GENERAL` datasets, or biometric benchmark kinds
    (``verification``, ``ijb``, ``mad``, ``pad``). ``settings_type`` is a frozen dataclass read from the run config's
    ``protocols.<name>`` mapping; its ``enabled`` field, when present, switches the protocol off.
    """

    name: ClassVar[str]
    targets: ClassVar[tuple[str, ...]]
    settings_type: ClassVar[type] = NoSettings
    report: ClassVar[ReportSection]
    order: ClassVar[int] = 100

    @abc.abstractmethod
    def units(self, settings: Any, target: str) -> list[UnitPlan]:
        """The units this protocol runs on one dataset or benchmark of kind ``target`` under ``settings``."""

    @abc.abstractmethod
    def run(self, unit: UnitPlan, inputs: Any, settings: Any) -> UnitOutput:
        """Compute one unit from its typed inputs (features, labels, pairs...); never from the runner's state."""

    def unit_order(self, name: str) -> tuple:
        """Sort key of one of this protocol's unit names in tables (registration order first)."""
        return (self.order, name)

    def owns(self, unit_name: str) -> bool:
        """Whether ``unit_name`` (a record's ``protocol``) is one of this protocol's units."""
        return unit_name == self.name

    def columns(self, kind: str) -> tuple[ReportColumn, ...]:
        """The biometric-table columns of this protocol's units on a benchmark of ``kind``."""
        return self.report.columns

    def set_groups(self, kind: str) -> tuple[ReportGroup, ...]:
        """The column groups of the per-attack-set table of this protocol's units on a benchmark of ``kind``.

        Its rows come from records carrying ``extra["attack_type"]`` with metric ``<metric>[<attack type>]``;
        none by default (no such table).
        """
        return ()

    def headline(self, unit_name: str) -> tuple[str, str, bool] | None:
        """(metric, label, higher is better) of the one column the terminal summary shows for a biometric unit."""
        columns = self.columns(unit_name.partition("/")[0])
        if not columns:
            return None
        return columns[0].metrics[0], columns[0].label, columns[0].higher_is_better

    def in_findings(self, unit_name: str) -> bool:
        """Whether a unit's general table enters the study's GELO findings and figures."""
        return self.report.gelo


PROTOCOLS: Registry[Protocol] = Registry("protocol")


def enabled(settings: Any) -> bool:
    """Whether a protocol's settings leave it switched on (settings without ``enabled`` always are)."""
    return bool(getattr(settings, "enabled", True))


def resolve_settings(protocols: Mapping[str, Any], where: str = "protocols") -> dict[str, Any]:
    """Every registered protocol's typed settings from the config's ``protocols`` mapping (defaults elsewhere).

    Unknown protocol names and unknown or ill-typed settings are a :class:`ConfigError` naming ``protocols.<name>``.
    """
    for name in protocols:
        if name not in PROTOCOLS:
            raise ConfigError(f"{where}: {PROTOCOLS.unknown_message(name)}")
    resolved = {}
    for name in PROTOCOLS.names():
        entry = PROTOCOLS.get(name)
        given = protocols.get(name) or {}
        if not isinstance(given, Mapping):
            raise ConfigError(f"{where}.{name}: expected a mapping of settings, got {type(given).__name__}")
        resolved[name] = from_dict(entry.settings_type, dict(given), where=f"{where}.{name}")
    return resolved


def ordered_protocols() -> list[Protocol]:
    """The registered protocols in report order (builtins first, in the study's order)."""
    return sorted((PROTOCOLS.get(n) for n in PROTOCOLS.names()), key=lambda p: (p.order, p.name))


def planned_units(settings: Mapping[str, Any], target: str) -> list[tuple[Protocol, UnitPlan]]:
    """The enabled units of every protocol that applies to a dataset or benchmark of kind ``target``."""
    return [(protocol, plan) for protocol in ordered_protocols() if target in protocol.targets
            and enabled(settings[protocol.name]) for plan in protocol.units(settings[protocol.name], target)]


def protocol_of_unit(unit_name: str) -> Protocol | None:
    """The registered protocol that owns a record's ``protocol`` value, or None (a protocol not loaded here)."""
    return next((p for p in ordered_protocols() if p.owns(unit_name)), None)


def reported_units(unit_names: Iterable[str]) -> list[tuple[str, Protocol]]:
    """The distinct unit names owned by a registered protocol, each with it, in report order."""
    owned = [(name, protocol) for name in dict.fromkeys(unit_names) if (protocol := protocol_of_unit(name))]
    return sorted(owned, key=lambda pair: pair[1].unit_order(pair[0]))


def unregistered_units(unit_names: Iterable[str]) -> list[str]:
    """The distinct unit names no registered protocol owns (records of a protocol not loaded in this process)."""
    return [name for name in dict.fromkeys(unit_names) if protocol_of_unit(name) is None]


def settings_dict(settings: Any, keys: Sequence[str] | None = None) -> dict[str, Any]:
    """The plain-data form of a settings dataclass (only ``keys`` when given), as hashed into unit keys."""
    data = {f.name: _plain(getattr(settings, f.name)) for f in dataclasses.fields(settings)}
    data.pop("enabled", None)
    return data if keys is None else {k: data[k] for k in keys}


def _plain(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def _register_builtin_protocols() -> None:
    """The protocols overspec ships: imported on first use, so listing them costs nothing."""
    for name, target in (("zero_shot", "overspec.protocols.general:ZERO_SHOT"),
                         ("linear_probe", "overspec.protocols.general:LINEAR_PROBE"),
                         ("clip_benchmark_probe", "overspec.protocols.clip_benchmark_probe:CLIP_BENCHMARK_PROBE"),
                         ("verification", "overspec.protocols.biometric:VERIFICATION"),
                         ("ijb", "overspec.protocols.biometric:IJB"),
                         ("attack", "overspec.protocols.biometric:ATTACK"),
                         ("cka", "overspec.protocols.cka:CKA_PROTOCOL")):
        PROTOCOLS.register_lazy(name, target)


_register_builtin_protocols()
