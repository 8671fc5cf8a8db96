"""LoRA fine-tuning of CLIP image towers for biometrics: FRoundation (FR), MADation (MAD), FoundPAD (PAD) recipes.

``finetune(load_recipe("froundation", profile="world"), "tiny-s", "world", out_dir, cache_dir=...)`` trains and
returns the ``model.yaml`` of the fine-tuned model, loadable with ``register_preset_file`` + ``load_model``.
"""

from overspec.finetune.heads import BinaryLinearHead, MarginHead
from overspec.finetune.recipes import FinetuneConfig, load_recipe, recipe_names
from overspec.finetune.run import TrainingData, finetune, training_data
from overspec.finetune.trainer import Trainer

__all__ = ["BinaryLinearHead", "MarginHead", "FinetuneConfig", "load_recipe", "recipe_names", "TrainingData",
           "finetune", "training_data", "Trainer"]
