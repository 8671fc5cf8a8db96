"""Linear CKA against the kernel (HSIC) form, the block class tokens against open_clip's own pooling, and the
protocol through the runner (a fine-tune equal to its base is 1.0 at every block)."""

import dataclasses

import numpy as np
import pytest
import torch

from overspec.config.model import CombineTerm, ModelSpec
from overspec.config.run import RunConfig
from overspec.errors import InputError
from overspec.models import load_model
from overspec.models.blocks import block_class_tokens
from overspec.protocols.cka import linear_cka
from overspec.runner import run_study


def hsic_cka(x: np.ndarray, y: np.ndarray) -> float:
    """CKA from Kornblith et al.'s kernel form: HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)), K = X Xᵀ, L = Y Yᵀ."""
    n = x.shape[0]
    h = np.eye(n) - np.ones((n, n)) / n
    k, l = h @ (x @ x.T) @ h, h @ (y @ y.T) @ h
    return float(np.sum(k * l) / np.sqrt(np.sum(k * k) * np.sum(l * l)))


def test_linear_cka_equals_the_kernel_form_and_has_its_invariances():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 6))
    y = x @ rng.standard_normal((6, 9)) + 0.5 * rng.standard_normal((40, 9))
    assert linear_cka(x, y) == pytest.approx(hsic_cka(x, y), rel=1e-10)
    rotation = np.linalg.qr(rng.standard_normal((6, 6)))[0]
    assert linear_cka(x, 3.0 * x @ rotation + 7.0) == pytest.approx(1.0, abs=1e-12)
    assert linear_cka(x, rng.standard_normal((40, 6))) < 0.5
    with pytest.raises(InputError, match="same n"):
        linear_cka(x, y[:10])


def test_block_class_tokens_end_where_open_clip_pools(tmp_path, micro_checkpoint):
    encoder = load_model(ModelSpec(name="m", architecture="micro-clip", weights=str(micro_checkpoint)),
                         cache_dir=tmp_path)
    images = torch.randn(5, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        tokens = block_class_tokens(encoder, images)
        visual = encoder.module.visual
        pooled = visual.ln_post(tokens[:, -1]) @ visual.proj
        expected = encoder.encode_image(images)
    assert tokens.shape == (5, len(visual.transformer.resblocks), 32)
    torch.testing.assert_close(pooled, expected, rtol=1e-5, atol=1e-5)


def test_cka_units_compare_each_fine_tune_with_its_base(tmp_path, csv_dataset, micro_checkpoint, micro_config_file):
    data_root, entry = csv_dataset
    state = torch.load(micro_checkpoint, weights_only=True)
    torch.save({k: v + 0.2 * torch.randn_like(v) if k.startswith("visual.transformer") and v.is_floating_point()
                else v for k, v in state.items()}, tmp_path / "tuned.pt")
    base = ModelSpec(name="micro", config_file=str(micro_config_file), weights=str(micro_checkpoint))
    tuned = dataclasses.replace(base, name="tuned", weights=str(tmp_path / "tuned.pt"), base="micro",
                                specialisation="fr")
    same = dataclasses.replace(base, name="same", base="micro", specialisation="fr",
                               combine=(CombineTerm("tuned", 0.0),))
    orphan = dataclasses.replace(tuned, name="orphan", base="elsewhere")
    config = RunConfig(name="k", models=(base, tuned, same, orphan), datasets=("test-colours",),
                       dataset_files=(str(entry),), data_root=str(data_root), output_dir=str(tmp_path / "runs"),
                       cache_dir=str(tmp_path / "cache"), progress=False,
                       protocols={"zero_shot": {"enabled": False}, "linear_probe": {"enabled": False},
                                  "cka": {"max_images": 10}})
    result = run_study(config)
    cka = {(r.model, r.metric): r for r in result.records if r.protocol == "cka"}
    assert {m for m, _ in cka} == {"tuned", "same"}
    assert all(cka[("same", f"cka[{b}]")].value == pytest.approx(1.0, abs=1e-9) for b in range(1))
    moved = cka[("tuned", "cka[0]")]
    assert moved.value < 0.999 and moved.n == 10 and moved.extra["block"] == 0
    assert cka[("tuned", "cka_mean")].value == pytest.approx(moved.value)
    assert result.skipped == [("orphan__test-colours__cka",
                               "orphan is not a fine-tune of a model of this run: block-wise CKA not applicable")]
    from overspec.report.build import build_report

    report = (build_report(tmp_path / "runs" / "k") / "report.md").read_text()
    section = report[report.index("## Where it happens"):]
    assert f"- tuned: block 0 ({moved.value:.3f})" in section and "| same | test-colours | 1.000 |" in section
    summary = (tmp_path / "runs" / "k" / "summary.md").read_text()
    assert "## cka — where it happens: linear CKA per block" in summary and "| micro |" not in summary
    again = run_study(config)
    assert again.computed == []
    bumped = run_study(dataclasses.replace(config, protocols={**config.protocols, "cka": {"max_images": 12}}))
    assert sorted(bumped.computed) == ["same__test-colours__cka", "tuned__test-colours__cka"]
