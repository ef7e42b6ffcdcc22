import pytest
import torch

from iqart.train.models.bpclip import BPCLIP, AttentionBlock, sinusoidal_2d
from iqart.train.models.checkpoints import CheckpointError, save_checkpoint
from iqart.train.models.clip_backbone import build_clip, encode_prompts
from iqart.train.models.prompts import adjective_prompts
from iqart.train.models.zoo import get_card, load_model


@pytest.mark.parametrize("name", ["bpclip-nr-tiny", "bpclip-fr-tiny"])
@pytest.mark.parametrize("h,w", [(224, 224), (256, 192)])
def test_output_shape_and_range(scrambled, random_images, name, h, w):
    model = scrambled(name)
    # 8 images: the scrambled tiny NR model's score spread over 3 noise images fell below 1e-5
    # for 1 seed in 100 (5.4e-6); over 8 images its smallest in 100 seeds is 2.0e-5
    images = random_images(8, h, w)
    args = (images, random_images(8, h, w)) if model.task == "fr" else (images,)
    with torch.no_grad():
        scores = model(*args)
    assert scores.shape == (8,)
    assert torch.isfinite(scores).all() and (scores > 0).all() and (scores < 1).all()
    assert scores.std() > 1e-5, "scores should depend on the input"


@pytest.mark.parametrize("name", ["bpclip-nr-tiny", "bpclip-fr-tiny"])
def test_batch_invariance(scrambled, random_images, name):
    model = scrambled(name, seed=2)
    images, refs = random_images(4, 224, 224), random_images(4, 224, 224)
    args = (images, refs) if model.task == "fr" else (images,)
    with torch.no_grad():
        batched = model(*args)
        single = torch.cat([model(*(a[i : i + 1] for a in args)) for i in range(4)])
    torch.testing.assert_close(batched, single, rtol=0, atol=1e-6)


def test_fr_reference_matters_and_task_is_checked(scrambled, random_images):
    fr, nr = scrambled("bpclip-fr-tiny"), scrambled("bpclip-nr-tiny")
    images = random_images(2, 224, 224)
    with torch.no_grad():
        same, other = fr(images, images), fr(images, random_images(2, 224, 224))
    assert not torch.allclose(same, other)
    with pytest.raises(ValueError, match="takes a reference"):
        fr(images)
    with pytest.raises(ValueError, match="takes no reference"):
        nr(images, images)
    with pytest.raises(ValueError, match="differ in shape"):
        fr(images, random_images(2, 256, 224))


def test_gradients_reach_every_trainable_part(scrambled, random_images):
    model = scrambled("bpclip-fr-tiny").train()
    model(random_images(2, 224, 224), random_images(2, 224, 224)).sum().backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name
    assert model.encoder.conv1.weight.grad.abs().sum() > 0
    assert model.scales[0].gate[0].weight.grad.abs().sum() > 0


def test_adjective_embeddings_come_from_the_text_tower():
    card = get_card("bpclip-nr-tiny")
    model = BPCLIP(card.bpclip, seed=4)
    expected = encode_prompts(build_clip("tiny", seed=4), adjective_prompts())
    torch.testing.assert_close(model.adjective_features, expected)
    assert model.adjective_features.shape == (40, 256)
    assert not any(name.startswith("adjective") for name, _ in model.named_parameters()), (
        "text constants must not train"
    )


def test_cross_attention_block_uses_its_context(random_images):
    torch.manual_seed(0)
    block = AttentionBlock(128, 2, 256, cross=True).eval()
    query, context = torch.randn(2, 49, 128), torch.randn(2, 30, 128)
    with torch.no_grad():
        assert block(query, context).shape == (2, 49, 128)
        assert not torch.allclose(block(query, context), block(query, torch.randn(2, 30, 128)))
    with pytest.raises(ValueError, match="needs a context"):
        block(query)


def test_positional_embedding_distinguishes_positions():
    emb = sinusoidal_2d(7, 5, 128)
    assert emb.shape == (35, 128)
    assert torch.unique(emb, dim=0).shape[0] == 35


def test_checkpoint_round_trip(scrambled, random_images, tmp_path):
    model = scrambled("bpclip-nr-tiny", seed=6)
    save_checkpoint(tmp_path / "bp.pt", "bpclip-nr-tiny", model.state_dict())
    loaded = load_model("bpclip-nr-tiny", tmp_path / "bp.pt")
    images = random_images(2, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(loaded(images), model(images), rtol=0, atol=0)
    with pytest.raises(CheckpointError, match="does not fit the model"):
        load_model("bpclip-fr-tiny", tmp_path / "bp.pt")


def test_plain_clip_initialises_but_does_not_score(tmp_path):
    clip = build_clip("tiny", seed=8)
    torch.save(clip.state_dict(), tmp_path / "clip.pt")
    with pytest.raises(CheckpointError, match="plain CLIP state dict"):
        load_model("bpclip-nr-tiny", tmp_path / "clip.pt")
    model = BPCLIP(get_card("bpclip-nr-tiny").bpclip, seed=1)
    model.init_from_clip(clip.state_dict(), "clip.pt")
    assert torch.equal(model.encoder.conv1.weight, clip.visual.conv1.weight)
    torch.testing.assert_close(model.adjective_features, encode_prompts(clip, adjective_prompts()))
