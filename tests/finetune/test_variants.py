"""Fine-tune variants: parsing, labels, validation naming the variant, and the study's profile under their overrides."""

import pytest

from overspec.config.run import FinetuneRunConfig, RunConfig
from overspec.errors import InputError
from overspec.finetune.variants import FinetuneVariant, parse_variant, tuned_bases, variant_config, variant_specs


def test_a_variant_is_parsed_and_labelled_by_its_recipe_and_values():
    variant = parse_variant("froundation: regularise.distill=1, lora.rank=2")
    assert variant == FinetuneVariant("froundation", ("regularise.distill=1", "lora.rank=2"))
    assert variant.label == "froundation-distill1-rank2"
    assert FinetuneVariant("madation", ("regularise.l2sp=0.1",), label="mad-l2sp").label == "mad-l2sp"
    for text in ("froundation", "froundation:", ":lora.rank=2"):
        with pytest.raises(InputError, match="expected RECIPE:KEY=VALUE"):
            parse_variant(text)
    with pytest.raises(InputError, match="give at least one override"):
        FinetuneVariant("madation", ())
    with pytest.raises(InputError, match=r"expected key=value overrides, got \['lora.rank'\]"):
        FinetuneVariant("madation", ("lora.rank",))
    with pytest.raises(InputError, match="label must not contain '/'"):
        FinetuneVariant("madation", ("regularise.l2sp=1",), label="a/b")


def test_a_variant_takes_the_study_profile_and_overrides_then_its_own():
    config = RunConfig(finetune=FinetuneRunConfig(profile="world", overrides=("steps=7", "lora.rank=3")))
    resolved = variant_config(config, FinetuneVariant("madation", ("lora.rank=1", "regularise.distill=2")))
    assert (resolved.steps, resolved.batch_size, resolved.lora.rank, resolved.regularise.distill) == (7, 32, 1, 2.0)
    with pytest.raises(InputError, match=r"fine-tune variant 'madation-l2sp-3'.*regularise\.l2sp must be"):
        variant_config(config, FinetuneVariant("madation", ("regularise.l2sp=-3",)))
    with pytest.raises(InputError, match=r"fine-tune variant 'madation-lr1'.*unknown key 'lr'"):
        variant_config(config, FinetuneVariant("madation", ("optim.lr=1",)))


def test_no_variant_is_made_for_a_base_without_a_fine_tune_of_its_task():
    from overspec.config.model import ModelSpec

    base = ModelSpec(name="b", architecture="micro-clip")
    fr = ModelSpec(name="b-fr", architecture="micro-clip", base="b", specialisation="fr")
    assert variant_specs(RunConfig(), [base, fr], [FinetuneVariant("madation", ("regularise.l2sp=1",))]) == []
    assert variant_specs(RunConfig(), [base, fr], []) == []


def test_variants_go_on_the_first_bases_that_have_fine_tunes():
    from overspec.config.model import CombineTerm, ModelSpec

    a, b, c = (ModelSpec(name=n, architecture="micro-clip") for n in "abc")
    tuned = [ModelSpec(name=f"{n}-fr", architecture="micro-clip", base=n, specialisation="fr") for n in "ca"]
    merged = ModelSpec(name="m", architecture="micro-clip", combine=(CombineTerm(tuned[0], 1.0),), base="b")
    models = [a, b, c, *tuned, merged]
    assert tuned_bases(models) == [a, c]
    assert tuned_bases(models, max_bases=1) == [a]
    assert tuned_bases(models, max_bases=5) == [a, c]
