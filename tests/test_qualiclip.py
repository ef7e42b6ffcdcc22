import pytest
import torch
import torch.nn.functional as F

from iqart.train.models.checkpoints import CheckpointError, read_state_dict
from iqart.train.models.clip_backbone import build_clip, encode_prompts
from iqart.train.models.prompts import antonym_prompts
from iqart.train.models.qualiclip import QualiCLIP
from iqart.train.models.zoo import load_model
from tests.helpers import full_attention_pool_token0, scramble


def official_score(visual, prompts_features, images):
    """The official QualiCLIP formula, written independently of iqart.train.models.qualiclip."""
    x = visual.stem(images)
    x = visual.layer4(visual.layer3(visual.layer2(visual.layer1(x))))
    features = F.normalize(full_attention_pool_token0(visual.attnpool, x), dim=-1)
    logits = (100.0 * features @ prompts_features.T).reshape(images.shape[0], -1, 2)
    return logits.softmax(dim=-1)[..., 0].mean(dim=1)


@pytest.fixture
def model(scrambled):
    return scrambled("qualiclip-tiny", seed=1)


def test_reproduces_official_formula_to_float32_rounding(model, random_images):
    images = random_images(3, 224, 160)
    with torch.no_grad():
        ours, official = model(images), official_score(model.visual, model.prompts_features, images)
    assert torch.isfinite(ours).all()
    torch.testing.assert_close(ours, official, rtol=0, atol=2e-6)
    assert len(set(ours.tolist())) == 3, "scores must depend on the image for this test to mean anything"


@pytest.mark.parametrize("h,w", [(224, 224), (96, 320), (257, 131), (32, 32)])
def test_any_input_size(model, random_images, h, w):
    with torch.no_grad():
        scores = model(random_images(2, h, w))
    assert scores.shape == (2,)
    assert torch.isfinite(scores).all() and (scores >= 0).all() and (scores <= 1).all()


def test_batch_scores_equal_single_scores(model, random_images):
    images = random_images(5, 128, 96)
    with torch.no_grad():
        batched = model(images)
        single = torch.cat([model(images[i : i + 1]) for i in range(5)])
    torch.testing.assert_close(batched, single, rtol=0, atol=1e-6)


def test_deterministic(model, random_images):
    images = random_images(2, 160, 160)
    with torch.no_grad():
        assert torch.equal(model(images), model(images))
    rebuilt = scramble(QualiCLIP("tiny", seed=1), 1)
    with torch.no_grad():
        assert torch.equal(rebuilt(images), model(images))


def test_prompt_features_are_normalised_text_embeddings():
    model = QualiCLIP("tiny", seed=5)
    clip = build_clip("tiny", seed=5)
    torch.testing.assert_close(model.prompts_features, encode_prompts(clip, antonym_prompts()))
    torch.testing.assert_close(model.prompts_features.norm(dim=-1), torch.ones(14))


def official_layout(model, with_text_tower=True):
    """A checkpoint in the key layout of the released qualiclip.pth."""
    clip = build_clip(model.backbone, seed=9)
    clip.visual.load_state_dict(model.visual.state_dict())
    source = clip.state_dict() if with_text_tower else {f"visual.{k}": v for k, v in model.visual.state_dict().items()}
    state = {f"clip_model.{k}": v.clone() for k, v in source.items()}
    state["prompts_features"] = model.prompts_features.clone()
    return state


@pytest.mark.parametrize("with_text_tower", [True, False])
def test_loads_official_layout(model, random_images, tmp_path, with_text_tower):
    path = tmp_path / "qualiclip.pth"
    torch.save(official_layout(model, with_text_tower), path)
    loaded = load_model("qualiclip-tiny", path)
    images = random_images(2, 96, 128)
    with torch.no_grad():
        torch.testing.assert_close(loaded(images), model(images), rtol=0, atol=0)


def test_loads_plain_clip_state_dict_and_encodes_prompts(random_images, tmp_path):
    clip = build_clip("tiny", seed=11)
    state = clip.state_dict()
    state["input_resolution"] = torch.tensor(224)  # OpenAI's files carry these scalars
    path = tmp_path / "clip.pt"
    torch.save(state, path)
    loaded = load_model("qualiclip-tiny", path)
    torch.testing.assert_close(loaded.prompts_features, encode_prompts(clip, antonym_prompts()))
    for key, value in clip.visual.state_dict().items():
        assert torch.equal(loaded.visual.state_dict()[key], value), key


def test_missing_keys_are_named(model, tmp_path):
    state = official_layout(model)
    del state["clip_model.visual.layer1.0.conv1.weight"]
    torch.save(state, tmp_path / "broken.pth")
    with pytest.raises(CheckpointError, match=r"broken\.pth.*missing key\(s\): layer1\.0\.conv1\.weight"):
        load_model("qualiclip-tiny", tmp_path / "broken.pth")


def test_shape_mismatch_is_named(model, tmp_path):
    state = official_layout(model)
    state["prompts_features"] = torch.randn(12, 256)
    torch.save(state, tmp_path / "wrong.pth")
    with pytest.raises(
        CheckpointError, match=r"shape mismatch.*prompts_features \(model \(14, 256\), file \(12, 256\)\)"
    ):
        load_model("qualiclip-tiny", tmp_path / "wrong.pth")


def test_rn50_checkpoint_does_not_fit_tiny_model(tmp_path):
    state = {f"clip_model.visual.{k}": v for k, v in build_clip("RN50").visual.state_dict().items()}
    state["prompts_features"] = torch.randn(14, 1024)
    torch.save(state, tmp_path / "rn50.pth")
    with pytest.raises(CheckpointError, match="does not fit the model"):
        load_model("qualiclip-tiny", tmp_path / "rn50.pth")


def test_truncated_and_foreign_files_are_rejected(model, tmp_path):
    good = tmp_path / "good.pth"
    torch.save(official_layout(model), good)
    data = good.read_bytes()
    (tmp_path / "truncated.pth").write_bytes(data[: len(data) // 2])
    (tmp_path / "text.pth").write_text("not a checkpoint")
    (tmp_path / "empty.pth").write_bytes(b"")
    for name, reason in [
        ("truncated.pth", "truncated or wrong format"),
        ("text.pth", "truncated or wrong format"),
        ("empty.pth", "empty file"),
        ("absent.pth", "no such weight file"),
    ]:
        with pytest.raises(CheckpointError, match=reason) as info:
            read_state_dict(tmp_path / name)
        assert name in str(info.value)


def test_unrelated_state_dict_is_rejected(tmp_path):
    torch.save({"weight": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a QualiCLIP checkpoint"):
        load_model("qualiclip-tiny", tmp_path / "other.pt")


def test_rn50_scores_a_native_resolution_image(random_images):
    model = QualiCLIP("RN50").eval()
    with torch.no_grad():
        scores = model(random_images(1, 192, 288))
    assert scores.shape == (1,) and torch.isfinite(scores).all()
    assert model.prompts_features.shape == (14, 1024)
