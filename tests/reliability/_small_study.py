"""``overspec run CONFIG`` on a miniature of the embedded world, for tests that run the study in a subprocess.

The whole default pipeline runs (world generation, tiny-CLIP pretraining, fine-tuning, evaluation, report); only
its sizes shrink: a few dozen images per dataset and biometric benchmark, a few pretraining steps. The fine-tune
sizes come from the config's ``finetune.overrides``.

Usage: ``python tests/reliability/_small_study.py CONFIG [overspec run flags]``
"""

from __future__ import annotations

import sys
from dataclasses import replace

from overspec.cli.main import main
from overspec.world import biometric, general, pretrain

SMALL_BIOMETRIC = biometric.WorldSizes(pairs=40, ijb_subjects=6, mad_subjects=(10, 6), mad_morph_pairs=(10, 6),
                                       pad_subjects=(3, 2, 3), pad_frames=2, fr_identities=4, fr_images=3)


def shrink_world() -> None:
    """Make this process's embedded world tiny (datasets, biometric benchmarks, pretraining)."""
    general.WORLD_DATASETS.update({name: replace(spec, n_train=20, n_test=10)
                                   for name, spec in general.WORLD_DATASETS.items()})
    defaults = list(biometric.ensure_biometric_world.__defaults__)
    defaults[-1] = SMALL_BIOMETRIC
    biometric.ensure_biometric_world.__defaults__ = tuple(defaults)
    pretrain.RECIPES.update({size: pretrain.TrainingRecipe(steps=6, batch_size=16, warmup=2)
                             for size in pretrain.TINY_CLIPS})


if __name__ == "__main__":
    shrink_world()
    sys.exit(main(["run", *sys.argv[1:]]))
