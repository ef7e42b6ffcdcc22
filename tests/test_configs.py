"""The committed training configs (train/configs/) still load: each is the recipe of a demo weight
file, and a renamed setting or a moved starting file would otherwise surface only when someone
spends half an hour retraining."""

from __future__ import annotations

from pathlib import Path

import pytest

from iqart.train.config import load_config
from iqart.train.models.zoo import get_card
from iqart.train.train_bpclip import BPCLIPTrainConfig
from iqart.train.train_qualiclip import QualiCLIPTrainConfig

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "train" / "configs").glob("*.toml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda path: path.stem)
def test_committed_config_loads_and_its_starting_files_exist(path):
    trainer = QualiCLIPTrainConfig if path.stem.startswith("qualiclip") else BPCLIPTrainConfig
    config = load_config(trainer, path)  # unknown keys and bad values raise
    assert config.model == path.stem, f"{path.name} trains {config.model}, not the model it is named after"
    assert get_card(config.model).demo_weights.is_file(), f"{config.model} has no committed demo weights"
    for field in ("init", "init_encoder", "teacher"):
        start = getattr(config, field, "")
        assert not start or (REPO / start).is_file(), f"{path.name}: {field} = {start!r} is not in the repository"


def test_every_demo_model_has_its_config():
    assert {path.stem for path in CONFIGS} == {"qualiclip-tiny", "bpclip-nr-tiny", "bpclip-fr-tiny"}
