"""Shared fixtures (helpers that are not fixtures live in tests/helpers.py).

Every test runs with its own random seed: torch's, NumPy's and Python's global generators are
seeded with it, `random_images` and `rng` draw from it, and a failing test's report names it
(`IQART_TEST_SEED=S` replays that test's inputs)."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from iqart.train.models.zoo import build_model
from tests.helpers import SEED_VARIABLE, draw_seed, scramble, structured_noise, write_scrambled_weights

SEED = pytest.StashKey[int]()


@pytest.fixture(autouse=True)
def random_seed(request) -> int:
    """This test's seed, with the global generators seeded by it (so bare torch.randn calls are
    reproducible too); recorded for the failure report."""
    seed = draw_seed()
    request.node.stash[SEED] = seed
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return seed


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.failed and SEED in item.stash:
        seed = item.stash[SEED]
        report.sections.append(
            ("random seed", f"this test ran with seed {seed}; replay it with {SEED_VARIABLE}={seed}")
        )
    return report


@pytest.fixture
def rng(random_seed) -> np.random.Generator:
    """A NumPy generator seeded with this test's seed."""
    return np.random.default_rng(random_seed)


@pytest.fixture
def random_images(random_seed):
    """Factory: random_images(n, h, w) -> CLIP-normalised-scale float images, each call new
    content drawn from one generator seeded with this test's seed."""
    generator = torch.Generator().manual_seed(random_seed)
    return lambda n, height, width: structured_noise(n, height, width, generator)


@pytest.fixture
def scrambled():
    """Factory: scrambled(name, seed=0) -> a tiny zoo model whose scores depend on the input."""
    return lambda name, seed=0: scramble(build_model(name, seed=seed), seed)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """Factory: weights(name, seed=0) -> the weight file of scrambled(name, seed), written once
    per module."""
    folder, made = tmp_path_factory.mktemp("weights"), {}

    def make(name: str, seed: int = 0):
        if (name, seed) not in made:
            made[name, seed] = write_scrambled_weights(folder, name, seed)
        return made[name, seed]

    return make


@pytest.fixture(scope="module")
def iqart_home(tmp_path_factory):
    """One artifact cache per test module, as $IQART_HOME: each model is exported once, as in
    real use, and nothing touches the user's cache. Set before anything starts that inherits
    the environment (Ray workers)."""
    with pytest.MonkeyPatch.context() as patch:
        home = tmp_path_factory.mktemp("iqart_home")
        patch.setenv("IQART_HOME", str(home))
        yield home


@pytest.fixture(scope="module")
def ray_cluster(iqart_home):
    """A local Ray on this machine's 2 CPUs for one test module (starting it costs seconds), started
    after $IQART_HOME is set so that its workers inherit it."""
    ray = pytest.importorskip("ray", reason="Ray is not installed: pip install -e '.[ray]' (the dev extra includes it)")
    ray.init(address="local", num_cpus=2, include_dashboard=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield
    ray.shutdown()
