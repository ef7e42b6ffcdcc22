import pytest
import torch

from iqart.train.models.zoo import MissingWeightsError, build_model, get_card, list_models, load_model, resolve_weights

EXPECTED = {"qualiclip", "bpclip-nr", "bpclip-fr", "qualiclip-tiny", "bpclip-nr-tiny", "bpclip-fr-tiny"}


def test_zoo_lists_every_model_with_its_card():
    assert set(list_models()) == EXPECTED
    for name in EXPECTED:
        card = get_card(name)
        assert card.task == ("fr" if name.startswith("bpclip-fr") else "nr")
        assert card.score_range == (0.0, 1.0) and card.higher_better and not card.lower_better
        assert card.backbone == ("tiny" if name.endswith("-tiny") else "RN50")
        assert card.resize.kind == ("native" if card.family == "qualiclip" else "fixed")
    assert get_card("qualiclip").official_url.endswith("qualiclip.pth")


def test_unknown_model_names_the_choices():
    with pytest.raises(ValueError, match="unknown model 'nope'; available: qualiclip"):
        get_card("nope")


@pytest.mark.parametrize("name", ["bpclip-nr", "bpclip-fr"])  # no public weights, no demo weights
def test_missing_weights_say_how_to_get_them(name, tmp_path, monkeypatch):
    monkeypatch.setenv("IQART_HOME", str(tmp_path))
    with pytest.raises(MissingWeightsError, match="--weights FILE"):
        resolve_weights(name)


@pytest.mark.parametrize("name", ["qualiclip-tiny", "bpclip-nr-tiny", "bpclip-fr-tiny"])
def test_tiny_models_resolve_to_their_committed_demo_weights(name, tmp_path, monkeypatch):
    monkeypatch.setenv("IQART_HOME", str(tmp_path))
    card = get_card(name)
    assert resolve_weights(name) == card.demo_weights and card.demo_weights.stat().st_size < 8 * 2**20
    model = load_model(name)  # the file holds every key the model needs, at the right shapes
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_explicit_weights_win(tmp_path):
    assert resolve_weights("qualiclip", tmp_path / "mine.pth") == tmp_path / "mine.pth"


def test_cached_official_weights_are_used_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("IQART_HOME", str(tmp_path))
    cached = tmp_path / "weights" / "qualiclip.pth"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"x")
    assert resolve_weights("qualiclip") == cached


@pytest.mark.parametrize("name", sorted(n for n in EXPECTED if n.endswith("-tiny")))
def test_build_is_seeded(name):
    a, b = build_model(name, seed=3).state_dict(), build_model(name, seed=3).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    c = build_model(name, seed=4).state_dict()
    assert any(not torch.equal(a[k], c[k]) for k in a)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["bpclip-nr", "bpclip-fr"])
def test_rn50_bpclip_builds_and_scores(name, random_images):
    model = build_model(name)
    images = random_images(1, 224, 224)
    with torch.no_grad():
        scores = model(images, images) if get_card(name).task == "fr" else model(images)
    assert scores.shape == (1,) and torch.isfinite(scores).all()
