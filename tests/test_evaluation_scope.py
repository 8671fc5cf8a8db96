"""What a run plans: biometric benchmarks per model under ``biometric_scope``, and preprocessing controls on or off."""

from __future__ import annotations

import pytest

from overspec.config.model import CombineTerm, ModelSpec
from overspec.config.run import RunConfig
from overspec.data.biometric.benchmarks import biometric_registry
from overspec.errors import InputError
from overspec.evaluation import model_tasks, planned_run
from overspec.protocols.base import resolve_settings

BENCHMARKS = ["world-lfw", "world-ijbc", "world-mad", "world-pad-OCI-to-M"]
BASE = ModelSpec(name="b")
FR = ModelSpec(name="b-fr", base="b", specialisation="fr")
MAD = ModelSpec(name="b-mad", base="b", specialisation="mad")
PAD = ModelSpec(name="b-pad", base="b", specialisation="pad")
MAD_HALF = ModelSpec(name="b-mad@0.5", base="b", specialisation="mad", combine=(CombineTerm(MAD, 0.5),))
MERGED = ModelSpec(name="b-merged-fr+pad", combine=(CombineTerm(FR, 1.0), CombineTerm(PAD, 1.0)))
SPECS = [BASE, FR, MAD, PAD, MAD_HALF, MERGED]


def _benchmarks_per_model(scope: str) -> dict[str, set[str]]:
    config = RunConfig(biometric_scope=scope)
    units = planned_run(config, resolve_settings({}), SPECS, [], BENCHMARKS)
    seen: dict[str, set[str]] = {spec.name: set() for spec in SPECS}
    for planned in units:
        seen[planned.spec.name].add(planned.target.name)
    return seen


def test_the_benchmark_kinds_exist_as_the_scope_names_them():
    assert [biometric_registry().get(name).kind for name in BENCHMARKS] == ["verification", "ijb", "mad", "pad"]


def test_every_model_meets_every_benchmark_by_default():
    assert RunConfig().biometric_scope == "all"
    assert all(names == set(BENCHMARKS) for names in _benchmarks_per_model("all").values())


def test_own_scope_gives_each_model_its_own_tasks_benchmarks_and_a_base_all_of_them():
    assert _benchmarks_per_model("own") == {
        "b": set(BENCHMARKS),
        "b-fr": {"world-lfw", "world-ijbc"},
        "b-mad": {"world-mad"},
        "b-pad": {"world-pad-OCI-to-M"},
        "b-mad@0.5": {"world-mad"},
        "b-merged-fr+pad": {"world-lfw", "world-ijbc", "world-pad-OCI-to-M"},
    }


def test_model_tasks_reads_a_specialisation_or_the_terms_of_a_combination():
    assert model_tasks(BASE) == () and model_tasks(MAD_HALF) == ("mad",)
    assert model_tasks(MERGED) == ("fr", "pad")
    assert model_tasks(ModelSpec(name="m", combine=(CombineTerm("b-pad", 1.0),))) == ()  # unresolved: no task known


def test_an_unknown_scope_is_refused_naming_the_key():
    with pytest.raises(InputError, match="biometric_scope must be one of"):
        RunConfig(biometric_scope="mine")


def test_general_units_do_not_depend_on_the_scope():
    config = RunConfig(biometric_scope="own")
    units = planned_run(config, resolve_settings({}), SPECS, ["world-colours"], [])
    assert {planned.spec.name for planned in units} == {spec.name for spec in SPECS}
