"""Named training recipes: sets of `TrainingConfig` settings that explicit settings override.

Each recipe is measured in docs/results.md, with the command that reproduces it; the
settings were chosen on validation rows of IMDB's train split, never on a test split.
"""

from collections import namedtuple

from kgemma.training.config import TrainingConfig

Recipe = namedtuple("Recipe", ["summary", "settings"])

# cpu-10min's settings, which cpu-hour scales up.
CPU_10MIN_SETTINGS = {
    "dtype": "bfloat16",
    "lora_layers": 4,
    "lora_targets": "all",
    "sequence_length": 512,
    "truncation": "head_tail",
    "pooling": "last",
    "epochs": 1,
    "learning_rate": 5e-4,
    "schedule": "cosine",
    "warmup_steps": 20,
    "backbone_layers": 14,
    "max_examples": 2000,
}

RECIPES = {
    # TrainingConfig's defaults are the fine-tuning report's recipe.
    "report": Recipe(
        "the fine-tuning report's: LoRA r8/alpha 16 on query and value of every block, AdamW 2e-4, 3 epochs", {}
    ),
    # Chosen on 1,000 validation rows of the train split (docs/results.md, "the search"):
    # at 2,000 training rows, last-token pooling beat mean pooling (91.3% against 89.0%,
    # both with LoRA on every projection), and every projection beat query/value (89.0%
    # against 88.0%). The first 14 of Gemma 3 270M's 18 blocks scored level with all 18
    # (92.0% against 91.3%) for 0.70x the prefix pass, so the recipe drops the top 4 and
    # puts LoRA on the 4 below them, over a cached prefix; 512 tokens head+tail read the
    # whole of most reviews. 2,000 rows is what a 2-core AVX512-BF16 CPU (no AMX) trains
    # in 8.5 to 9.5 minutes, prefix pass included.
    "cpu-10min": Recipe(
        "about 10 minutes on 2 cores: bfloat16, the first 14 blocks with LoRA on every projection of the "
        "top 4, 512 tokens head+tail, last-token pooling, 1 epoch of 2,000 rows",
        CPU_10MIN_SETTINGS,
    ),
    # The second search batch (docs/results.md) found no lever beyond noise at 2,000 rows:
    # rank 16, a 1e-3 learning rate, a second epoch, no head dropout, LoRA on the top 8
    # blocks (91.9% for twice the upper-block time). So the hour buys rows: cpu-10min's
    # settings on the 12,000 rows such a CPU trains in 50 to 58 minutes (0.25 to 0.29 s a row
    # between runs E4 and E3).
    "cpu-hour": Recipe(
        "about 60 minutes on 2 cores: the cpu-10min recipe on 12,000 rows",
        {**CPU_10MIN_SETTINGS, "max_examples": 12000},
    ),
}


def recipe_settings(name):
    """The settings a named recipe changes from `TrainingConfig`'s defaults."""
    if name not in RECIPES:
        raise ValueError(f"Unknown recipe {name!r}; choose one of {sorted(RECIPES)}.")
    return dict(RECIPES[name].settings)


def recipe_config(name, **overrides):
    """A `TrainingConfig` for a named recipe, with `overrides` taking precedence.

    Args:
        name: a key of `RECIPES` (`"report"`: the fine-tuning report's
            hyperparameters, which are `TrainingConfig`'s defaults).
        **overrides: any `TrainingConfig` field.

    Example:
    ```python
    from kgemma.training import recipe_config

    config = recipe_config("report", max_examples=400, epochs=1)
    config.lora_rank, config.max_examples
    # (8, 400)
    ```
    """
    return TrainingConfig.from_dict({**recipe_settings(name), **overrides})
