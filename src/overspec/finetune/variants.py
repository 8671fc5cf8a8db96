"""Fine-tune variants: a recipe with extra overrides, made on a study's bases like the study's own fine-tunes.

A :class:`FinetuneVariant` is a recipe plus overrides (for the sweep's regularised points: ``regularise.distill=…``
and ``regularise.l2sp=…`` of :mod:`overspec.finetune.regularise`, ``lora.rank=…``; any recipe key). It is
fine-tuned on every base that the study fine-tuned for the same task, under the study's recipe profile and overrides
and on the same training data, and named ``<base>-<label>``. The fine-tunes are cached as the study's are:
``<cache>/finetune/<base>/<recipe>-<profile>-<key>``, the key made of the resolved recipe, the base's spec and the
data named, so a second call reuses them and other settings never meet them.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from overspec.config.model import ModelSpec
from overspec.config.run import RunConfig
from overspec.config.typed import ConfigError, check_path_component, from_dict, load_yaml
from overspec.errors import InputError

__all__ = ["FinetuneVariant", "parse_variant", "tuned_bases", "variant_config", "variant_specs"]


@dataclass(frozen=True)
class FinetuneVariant:
    """A recipe and the overrides that make the variant; ``label`` (default: the recipe and the overridden values,
    e.g. ``froundation-distill1``) names the fine-tune ``<base>-<label>``."""

    recipe: str
    overrides: tuple[str, ...]
    label: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "overrides", tuple(self.overrides))
        if not self.overrides:
            raise InputError(f"fine-tune variant of {self.recipe!r}: give at least one override "
                             "(e.g. regularise.distill=1); without one it is the study's own fine-tune")
        bad = [item for item in self.overrides if "=" not in item or not item.partition("=")[0].strip()]
        if bad:
            raise InputError(f"fine-tune variant of {self.recipe!r}: expected key=value overrides, got {bad}")
        if not self.label:
            object.__setattr__(self, "label", "-".join([Path(self.recipe).stem, *map(_short, self.overrides)]))
        check_path_component(self.label, "fine-tune variant label")


def _short(override: str) -> str:
    """``regularise.distill=1`` → ``distill1`` (the last key part and the value)."""
    key, _, value = override.partition("=")
    return key.strip().split(".")[-1] + value.strip()


def parse_variant(text: str) -> FinetuneVariant:
    """Return the variant of ``RECIPE:KEY=VALUE[,KEY=VALUE...]`` (e.g. ``froundation:regularise.distill=1``)."""
    recipe, sep, rest = text.partition(":")
    if not sep or not recipe.strip() or not rest.strip():
        raise InputError(f"fine-tune variant: expected RECIPE:KEY=VALUE[,KEY=VALUE...], got {text!r}")
    return FinetuneVariant(recipe.strip(), tuple(part.strip() for part in rest.split(",") if part.strip()))


def variant_config(config: RunConfig, variant: FinetuneVariant):
    """The variant's fine-tune config: its recipe under the study's profile, the study's overrides, then its own
    (a bad key or value names the variant)."""
    from overspec.finetune.recipes import load_recipe

    try:
        return load_recipe(variant.recipe, profile=config.finetune.profile or None,
                           overrides=(*config.finetune.overrides, *variant.overrides))
    except (ValueError, FileNotFoundError, KeyError) as exc:
        raise ConfigError(f"fine-tune variant {variant.label!r} ({variant.recipe} with "
                          f"{', '.join(variant.overrides)}): {exc}") from None


def variant_specs(config: RunConfig, models: Sequence[ModelSpec], variants: Sequence[FinetuneVariant], *,
                  max_bases: int = 0) -> list[ModelSpec]:
    """Fine-tune (or reuse) every variant on each base of ``models`` that has a fine-tune of the variant's task (on
    the first ``max_bases`` such bases in model order when positive); return their specs, each named
    ``<base>-<label>`` with that base and task."""
    if not variants:
        return []
    from overspec.finetune.schedule import FinetuneJob, finetune_folder, made_jobs
    from overspec.workers import independent_workers

    configs = {variant: variant_config(config, variant) for variant in variants}
    tuned = {(spec.base, spec.specialisation) for spec in models if spec.base and not spec.combine}
    named, jobs = [], []
    for base in tuned_bases(models, max_bases):
        for variant, recipe_config in configs.items():
            if (base.name, recipe_config.task) not in tuned:
                continue
            data, world_root = _training_data(config, variant.recipe)
            jobs.append(FinetuneJob(base, variant.recipe, recipe_config, data, world_root,
                                    finetune_folder(config, base, variant.recipe, recipe_config)))
            named.append(variant)
    with _torch_threads(config.threads):
        made = made_jobs(config, jobs, independent_workers(config))
    out = []
    for job, variant in zip(jobs, named):
        spec = from_dict(ModelSpec, load_yaml(made[job.folder]), where=str(made[job.folder]))
        out.append(dataclasses.replace(spec, name=f"{job.base.name}-{variant.label}",
                                       description=f"{job.base.name} fine-tuned with {variant.recipe}, "
                                                   f"{', '.join(variant.overrides)}"))
    return out


def tuned_bases(models: Sequence[ModelSpec], max_bases: int = 0) -> list[ModelSpec]:
    """The bases among ``models`` that some fine-tune of ``models`` names, in model order (the first ``max_bases``
    when positive)."""
    named = {spec.base for spec in models if spec.base and not spec.combine}
    bases = [spec for spec in models if not spec.base and not spec.combine and spec.name in named]
    return bases[:max_bases] if max_bases > 0 else bases


def _training_data(config: RunConfig, recipe: str) -> tuple[str, Path | None]:
    """What a recipe's fine-tunes train on, as a :class:`~overspec.finetune.schedule.FinetuneJob` takes it: the
    configured path, or ``"world"`` with the root of the run's prepared world (its seed's)."""
    named = config.finetune.data.get(recipe, "world" if config.world else None)
    if named is None:
        raise InputError(f"finetune.data has no training data for recipe {recipe!r} (and world is off)")
    if named != "world" or not config.world:
        return str(named), None
    from overspec.world import default_root, prepare

    root = Path(config.data_root).expanduser() if config.data_root else default_root(config.cache_path)
    return "world", prepare(root, config.seed)


@contextlib.contextmanager
def _torch_threads(threads: int) -> Iterator[None]:
    """Run torch on ``threads`` CPU threads inside the block (0: leave torch's setting), as the study's fine-tunes."""
    if not threads:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)
