"""CLIP_benchmark's linear probe as a named protocol: an AdamW-trained linear head with a weight-decay search.

Follows ``clip_benchmark/metrics/linear_probe.py`` as summarised in ``shared/reference/general-eval.md`` §5.2 and
§6: L2-normalised post-projection features, a ``torch.nn.Linear`` head trained with AdamW (weight decay on weight
and bias), a cosine learning-rate schedule without warm-up stepped per mini-batch, mean cross-entropy, shuffled
mini-batches (the last one partial), defaults lr 0.1, 10 epochs, batch size 64. The weight decay is searched on a
validation split carved from train: a 97-point log grid 1e-6 ... 1e2, its 7 coarse points first, then left / peak /
right around the peak with spans 8, 4, 2, 1, the first strictly better accuracy in visit order winning; the head is
then retrained on train + val and scored on test.

Differences: the head has one output per class of the dataset, not the largest training label + 1 (§5.2 item 5;
each record's ``extra`` says so); every training is seeded with the run's seed through its own generator
(initialisation and shuffling) and is deterministic on CPU, so a weight decay the search revisits is scored once,
not retrained (CLIP_benchmark reseeds each retraining, which gives the same head); training runs in float32 on CPU
or GPU (CLIP_benchmark: CUDA only, under autocast); the validation split is overspec's stratified seeded one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from overspec.protocols._classification import classification_metrics, per_sample_predictions
from overspec.protocols._sampling import stratified_split
from overspec.protocols.base import GENERAL, Needs, Protocol, ReportSection, UnitOutput, UnitPlan, settings_dict
from overspec.protocols.general import _predictions, _rows
from overspec.protocols.inputs import ClassificationInputs

__all__ = ["CLIP_BENCHMARK_PROBE", "ClipBenchmarkProbeSettings", "HeadTraining", "clip_benchmark_probe",
           "search_weight_decay", "train_head", "weight_decay_grid"]

CONVENTION = "CLIP_benchmark linear probe (AdamW, cosine, wd search)"


@dataclass(frozen=True)
class ClipBenchmarkProbeSettings:
    """CLIP_benchmark's probe hyper-parameters (its command-line defaults) and weight-decay grid; off by default."""

    enabled: bool = False
    lr: float = 0.1
    epochs: int = 10
    batch_size: int = 64
    val_fraction: float = 0.2
    wd_min: float = 1e-6
    wd_max: float = 1e2
    wd_points: int = 97
    wd_coarse: int = 7
    wd_spans: tuple[int, ...] = (8, 4, 2, 1)

    def __post_init__(self) -> None:
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"epochs and batch_size must be >= 1, got {self.epochs} and {self.batch_size}")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if not 0 < self.wd_min < self.wd_max:
            raise ValueError(f"need 0 < wd_min < wd_max, got {self.wd_min} and {self.wd_max}")
        if self.wd_coarse < 2 or self.wd_points < self.wd_coarse or (self.wd_points - 1) % (self.wd_coarse - 1):
            raise ValueError(f"wd_coarse={self.wd_coarse} points must split the {self.wd_points}-point grid evenly")
        if not self.wd_spans or min(self.wd_spans) < 1:
            raise ValueError(f"wd_spans must be positive integers, got {list(self.wd_spans)}")


@dataclass(frozen=True)
class HeadTraining:
    """How one head is trained: CLIP_benchmark's optimiser settings plus the seed of its generator."""

    lr: float
    epochs: int
    batch_size: int
    seed: int
    device: str = "cpu"


def weight_decay_grid(settings: ClipBenchmarkProbeSettings) -> np.ndarray:
    """Return the log grid of weight decays (``np.logspace(-6, 2, 97)`` by default, as CLIP_benchmark)."""
    return np.logspace(math.log10(settings.wd_min), math.log10(settings.wd_max), settings.wd_points)


def search_weight_decay(
    n_grid: int, n_coarse: int, spans: Sequence[int], score: Callable[[int], float]
) -> tuple[int, list[int]]:
    """Return the chosen grid index and every index visited in order, by CLIP_benchmark's ``tune_weight_decay``.

    The evenly spaced coarse points first, then ``[peak - span, peak, peak + span]`` (clipped to the grid) for each
    span. Within a round the first strictly better accuracy wins, starting from index 0 and accuracy 0, as its
    ``find_peak`` does (so a round of zero accuracies returns index 0).
    """
    step = (n_grid - 1) // (n_coarse - 1)
    visited: list[int] = []

    def peak_of(indices: Sequence[int]) -> int:
        best, best_score = 0, 0.0
        for index in indices:
            visited.append(index)
            accuracy = score(index)
            if accuracy > best_score:
                best, best_score = index, accuracy
        return best

    peak = peak_of(range(0, n_grid, step))
    for span in spans:
        peak = peak_of([max(peak - span, 0), peak, min(peak + span, n_grid - 1)])
    return peak, visited


def _initial_head(n_features: int, n_classes: int, generator: torch.Generator) -> torch.nn.Linear:
    """Return a ``torch.nn.Linear`` with PyTorch's default initialisation drawn from ``generator`` (the global
    random state is left alone)."""
    head = torch.nn.utils.skip_init(torch.nn.Linear, n_features, n_classes)
    bound = 1.0 / math.sqrt(n_features)
    with torch.no_grad():
        torch.nn.init.kaiming_uniform_(head.weight, a=math.sqrt(5), generator=generator)
        head.bias.uniform_(-bound, bound, generator=generator)
    return head


def train_head(
    x: torch.Tensor, y: torch.Tensor, n_classes: int, weight_decay: float, training: HeadTraining
) -> torch.nn.Linear:
    """Train a linear head by AdamW with a per-step cosine schedule (no warm-up) on mean cross-entropy."""
    generator = torch.Generator().manual_seed(training.seed)
    head = _initial_head(x.shape[1], n_classes, generator).to(training.device)
    optimizer = torch.optim.AdamW(head.parameters(), lr=training.lr, weight_decay=weight_decay)
    n_batches = math.ceil(len(x) / training.batch_size)
    total, step = training.epochs * n_batches, 0
    for _ in range(training.epochs):
        order = torch.randperm(len(x), generator=generator).to(x.device)
        for batch in order.split(training.batch_size):
            optimizer.param_groups[0]["lr"] = 0.5 * (1 + math.cos(math.pi * step / total)) * training.lr
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(head(x[batch]), y[batch]).backward()
            optimizer.step()
            step += 1
    return head


def _logits(head: torch.nn.Linear, x: torch.Tensor) -> np.ndarray:
    """Return the head's (N, K) logits as a float64 array."""
    with torch.no_grad():
        return head(x).double().cpu().numpy()


@dataclass
class _ValidationScorer:
    """Validation top-1 of the head trained on the fit rows at each grid index, each index trained once."""

    x: torch.Tensor
    y: torch.Tensor
    fit: torch.Tensor
    val: torch.Tensor
    n_classes: int
    grid: np.ndarray
    training: HeadTraining
    scores: dict[int, float] = field(default_factory=dict)

    def __call__(self, index: int) -> float:
        """Return (training on first use) the validation accuracy at ``grid[index]``."""
        if index not in self.scores:
            head = train_head(self.x[self.fit], self.y[self.fit], self.n_classes, float(self.grid[index]),
                              self.training)
            predicted = _logits(head, self.x[self.val]).argmax(axis=1)
            self.scores[index] = float(np.mean(predicted == self.y[self.val].cpu().numpy()))
        return self.scores[index]


def _normalised(x: np.ndarray, device: str) -> torch.Tensor:
    """Return float32 features L2-normalised per row, as CLIP_benchmark's featurizer returns them."""
    return torch.nn.functional.normalize(torch.as_tensor(np.asarray(x), dtype=torch.float32), dim=-1).to(device)


def clip_benchmark_probe(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    n_classes: int,
    settings: ClipBenchmarkProbeSettings,
    *,
    seed: int = 0,
    device: str = "cpu",
) -> dict[str, object]:
    """Return test metrics, per-sample predictions and the search's record of CLIP_benchmark's probe."""
    train_y, test_y = np.asarray(train_y, dtype=np.int64), np.asarray(test_y, dtype=np.int64)
    for name, labels in (("train", train_y), ("test", test_y)):
        if len(labels) and (labels.min() < 0 or labels.max() >= n_classes):
            raise ValueError(f"{name} labels must lie in [0, {n_classes}), got [{labels.min()}, {labels.max()}]")
    x, y = _normalised(train_x, device), torch.as_tensor(train_y, device=device)
    training = HeadTraining(settings.lr, settings.epochs, settings.batch_size, seed, device)
    fit_idx, val_idx = stratified_split(train_y, settings.val_fraction, seed)
    grid = weight_decay_grid(settings)
    score = _ValidationScorer(x, y, torch.as_tensor(fit_idx, device=device), torch.as_tensor(val_idx, device=device),
                              n_classes, grid, training)
    best, visited = search_weight_decay(len(grid), settings.wd_coarse, settings.wd_spans, score)
    head = train_head(x, y, n_classes, float(grid[best]), training)
    logits = _logits(head, _normalised(test_x, device))
    return {**classification_metrics(logits, test_y), "predictions": per_sample_predictions(logits, test_y),
            "weight_decay": float(grid[best]), "val_acc1": score(best), "visited": visited,
            "n_trainings": len(score.scores) + 1, "n_train": int(len(fit_idx)), "n_val": int(len(val_idx))}


class ClipBenchmarkProbe(Protocol):
    """CLIP_benchmark's AdamW linear probe with its weight-decay search, next to overspec's L-BFGS probe."""

    name = "clip_benchmark_probe"
    targets = (GENERAL,)
    settings_type = ClipBenchmarkProbeSettings
    report = ReportSection("CLIP_benchmark probe", gelo=True)
    order = 25

    def units(self, settings: ClipBenchmarkProbeSettings, target: str) -> list[UnitPlan]:
        """One unit per dataset with a training split, keyed by every hyper-parameter."""
        needs = Needs(train_split=True, task="linear_probe")
        return [UnitPlan(self.name, needs, settings_dict(settings), "CLIP_benchmark probe")]

    def run(self, unit: UnitPlan, inputs: ClassificationInputs, settings: ClipBenchmarkProbeSettings) -> UnitOutput:
        """Search the weight decay, train on train + val, score the test split."""
        train, test = inputs.train, inputs.test
        n_classes = len(test.split.classnames)
        result = clip_benchmark_probe(train.x, train.labels, test.x, test.labels, n_classes, settings,
                                      seed=inputs.seed, device=inputs.device)
        extra = {"convention": CONVENTION, "weight_decay": result["weight_decay"], "epochs": settings.epochs,
                 "lr": settings.lr, "batch_size": settings.batch_size, "n_trainings": result["n_trainings"],
                 "val_acc1": result["val_acc1"], "n_train": result["n_train"], "n_val": result["n_val"],
                 "seed": inputs.seed, "n_classes": n_classes,
                 "output_classes": "the dataset's class count (CLIP_benchmark: largest training label + 1)",
                 "features": "post-projection, L2-normalised", "skipped_images": train.skipped + test.skipped}
        return UnitOutput(_rows(result, test, extra), _predictions(result, test))


CLIP_BENCHMARK_PROBE = ClipBenchmarkProbe()
