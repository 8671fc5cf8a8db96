import pytest

from overspec.config.typed import ConfigError
from overspec.finetune.recipes import (ScheduleSettings, apply_overrides, config_hash, for_architecture, load_recipe,
                                       recipe_names)
from overspec.finetune.trainer import lr_factor


def test_shipped_recipes_carry_the_published_hyper_parameters():
    assert recipe_names() == ["foundpad", "froundation", "madation"]
    fr, mad, pad = (load_recipe(n) for n in ("froundation", "madation", "foundpad"))
    assert (fr.task, fr.lora.rank, fr.lora.alpha, fr.lora.dropout, fr.lora.targets) == ("fr", 16, 32.0, 0.25, ("q", "v"))
    assert (fr.head.kind, fr.head.scale, fr.head.margin, fr.batch_size) == ("cosface", 64.0, 0.3, 512)
    assert (fr.optim.lr_adapter, fr.optim.lr_head, fr.optim.weight_decay, fr.optim.grad_clip) == (1e-4, 1e-4, 0.05, 5.0)
    assert (fr.schedule.kind, fr.schedule.period_mult, fr.schedule.min_lr) == ("cosine_restarts", 2, 1e-6)
    assert (mad.lora.rank, mad.lora.alpha, mad.lora.dropout, mad.optim.lr_adapter, mad.optim.lr_head) == (
        2, 4.0, 0.4, 1e-5, 1e-4)
    assert (mad.head.kind, mad.head.loss, mad.schedule.kind, mad.batch_size, mad.balanced) == (
        "binary", "bce", "constant", 256, False)
    assert (pad.lora.rank, pad.lora.alpha, pad.lora.dropout, pad.optim.lr_adapter, pad.optim.lr_head) == (
        8, 8.0, 0.4, 1e-6, 1e-3)
    assert pad.balanced and pad.batch_size == 512 and all(c.lora.rslora for c in (fr, mad, pad))


def test_world_profile_and_overrides_apply_in_order():
    world = load_recipe("froundation", profile="world", overrides=("steps=7", "lora.rank=4"))
    assert (world.steps, world.lora.rank, world.batch_size, world.lora.dropout) == (7, 4, 64, 0.25)
    assert world.lora.alpha == 32.0 and world.head.kind == "cosface"  # untouched keys keep the profile / recipe
    assert world.train_transform.resize == 32 and len(world.train_transform.augment) == 2  # sections merge
    assert config_hash(world) != config_hash(load_recipe("froundation", profile="world"))


#: Training images of the embedded world's fine-tuning sets (FR identity folders, MAD train after the 20 % dev
#: carve, PAD sources O, C, I).
WORLD_TRAIN_IMAGES = {"fr": 480, "mad": 189, "pad": 288}


def _ratios(values):
    return [v / values[0] for v in values]


def test_world_profiles_keep_the_published_ratios_under_common_factors():
    names = ("froundation", "madation", "foundpad")
    published = [load_recipe(n) for n in names]
    world = [load_recipe(n, profile="world") for n in names]
    for group in ("lr_adapter", "lr_head"):
        assert _ratios([getattr(c.optim, group) for c in world]) == pytest.approx(
            _ratios([getattr(c.optim, group) for c in published]))
    lr_factor = world[0].optim.lr_adapter / published[0].optim.lr_adapter
    assert all(w.optim.lr_head / p.optim.lr_head == pytest.approx(lr_factor) for w, p in zip(world, published))
    assert world[0].schedule.min_lr / published[0].schedule.min_lr == pytest.approx(lr_factor)
    assert len({w.batch_size / p.batch_size for w, p in zip(world, published)}) == 1
    for w, p in zip(world, published):
        assert (w.lora, w.head, w.schedule.kind, w.balanced) == (p.lora, p.head, p.schedule.kind, p.balanced)
    epochs = [w.steps * w.batch_size / WORLD_TRAIN_IMAGES[w.task] for w in world]
    assert epochs == pytest.approx([18.0] * 3, abs=0.2)  # one epoch count (published: 40 each)
    fr, fr_published = world[0], published[0]
    warm_epochs = fr_published.schedule.warmup_steps * fr_published.batch_size / 501_195 * 18 / 40  # CASIA epochs
    steps_per_epoch = WORLD_TRAIN_IMAGES["fr"] / fr.batch_size
    assert abs(fr.schedule.warmup_steps - warm_epochs * steps_per_epoch) < 1
    assert fr.schedule.period == fr.schedule.warmup_steps and fr.schedule.period_mult == 2


def test_madation_vit_l_variant_is_chosen_by_the_base_architecture():
    mad = load_recipe("madation", profile="world")
    large = for_architecture(mad, "ViT-L-14-quickgelu")
    assert (large.lora.alpha, large.lora.dropout, large.lora.rank, large.variant) == (8.0, 0.2, 2, "ViT-L-14")
    assert large.to_dict()["variant"] == "ViT-L-14" and large.steps == mad.steps
    assert config_hash(large) != config_hash(mad)
    for other in ("ViT-B-16-quickgelu", "ViT-L-140", "", "tiny-s"):
        assert for_architecture(mad, other) == mad
    assert for_architecture(large, "ViT-L-14") == large
    assert for_architecture(load_recipe("froundation"), "ViT-L-14-quickgelu").variant == ""


def test_a_bad_variant_is_refused_when_the_recipe_loads(tmp_path):
    recipe = tmp_path / "mine.yaml"
    recipe.write_text("task: mad\nsteps: 3\nbatch_size: 4\nhead: {kind: binary}\n"
                      "variants: {ViT-L-14: {lora: {rnak: 3}}}\n")
    with pytest.raises(ConfigError, match=r"variants.ViT-L-14.*unknown key 'rnak'"):
        load_recipe(recipe)


def test_unknown_keys_and_names_are_clear_errors():
    with pytest.raises(ConfigError, match="did you mean 'rank'"):
        load_recipe("madation", overrides=("lora.rnak=3",))
    with pytest.raises(ConfigError, match="did you mean 'madation'"):
        load_recipe("madatoin")
    with pytest.raises(ConfigError, match="no profile 'cloud'"):
        load_recipe("madation", profile="cloud")
    with pytest.raises(ConfigError, match="head.kind"):
        load_recipe("madation", overrides=("head.kind=cosface",))
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides({}, ["steps"])


def test_schedules_hand_values():
    cos = ScheduleSettings(kind="cosine", warmup_steps=2, warmup_factor=0.0)
    assert [lr_factor(cos, s, 12) for s in (0, 1, 2, 7, 12)] == pytest.approx([0.0, 0.5, 1.0, 0.5, 0.0])
    sgdr = ScheduleSettings(kind="cosine_restarts", warmup_steps=1, period=2, period_mult=2)
    # t = 0, 1 of period 2; restart: t = 0..3 of period 4; restart at period 8
    expected = [1.0, 0.5, 1.0, 0.5 * (1 + 2**-0.5), 0.5, 0.5 * (1 - 2**-0.5), 1.0]
    assert [lr_factor(sgdr, s, 20) for s in range(1, 8)] == pytest.approx(expected)
    step = ScheduleSettings(kind="step", period=3, gamma=0.5)
    assert [lr_factor(step, s, 10) for s in (0, 2, 3, 6)] == pytest.approx([1.0, 1.0, 0.5, 0.25])
    assert lr_factor(ScheduleSettings(), 5, 10) == 1.0
