"""`--explain`: which of a model's attributes a result file gets as columns.

QualiCLIP's 7 antonym-pair probabilities (their mean is the score); BPCLIP's 6 quality
dimensions, and with `--explain all` also its 40 adjective similarities.
"""

from __future__ import annotations

import argparse

from iqart.train.models.prompts import QUALITY_ADJECTIVES, attribute_names
from iqart.train.models.zoo import ModelCard

CHOICES = ("main", "all")


def add_explain_argument(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--explain",
        nargs="?",
        const="main",
        choices=CHOICES,
        help="also write the attributes the score is made of, one column each: QualiCLIP's 7 antonym-pair "
        "probabilities (sharp_image, noise_free_image, ...; their mean is the score), BPCLIP's 6 quality "
        "dimensions (sharpness, noise, colour, exposure, artifacts, overall); `--explain all` adds BPCLIP's 40 "
        "adjective similarities. `iqart list` names each model's attributes",
    )


def explained_columns(card: ModelCard, choice: str | None) -> tuple[str, ...]:
    """The attribute columns `--explain choice` gives for this model (none without --explain)."""
    if choice is None:
        return ()
    names = attribute_names(card.family)
    if card.family == "bpclip" and choice == "main":
        return tuple(names[: len(QUALITY_ADJECTIVES)])
    return tuple(names)
