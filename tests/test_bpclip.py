import math

import pytest
import torch
import torch.nn.functional as F

from iqart.train.models.bpclip import BPCLIP, AttentionBlock, sinusoidal_2d
from iqart.train.models.checkpoints import CheckpointError, save_checkpoint
from iqart.train.models.clip_backbone import build_clip, encode_prompts
from iqart.train.models.prompts import adjective_prompts
from iqart.train.models.zoo import get_card, load_model

# -- BPCLIP as DESIGN.md states it, written from the weights alone ------------------------------------
# Independent of iqart.train.models.bpclip's code: only its state dict (the trained numbers) and
# its configuration (widths and heads) are read. The CLIP encoder is the standard tower (its stem
# and four stages, as tests/test_qualiclip.py taps it).


def reference_taps(visual, images):
    x = visual.stem(images)
    taps = [x]
    for stage in (visual.layer1, visual.layer2, visual.layer3, visual.layer4):
        x = stage(x)
        taps.append(x)
    return taps


def reference_positions(height, width, dim):
    """2-D sinusoidal table (H*W, dim): [sin(y f), cos(y f), sin(x f), cos(x f)] with
    f_k = 10000^(-k / (dim / 4)), k < dim / 4; token t is (y, x) = divmod(t, W). Float64, then
    float32."""
    quarter = dim // 4
    rows = []
    for y in range(height):
        for x in range(width):
            freqs = [10000.0 ** (-k / quarter) for k in range(quarter)]
            rows.append(
                [math.sin(y * f) for f in freqs]
                + [math.cos(y * f) for f in freqs]
                + [math.sin(x * f) for f in freqs]
                + [math.cos(x * f) for f in freqs]
            )
    return torch.tensor(rows, dtype=torch.float64).float()


def reference_block(w, prefix, heads, x, context=None):
    """Pre-norm block: x + out(MHA(LN(x), LN(context) or LN(x))), then x + FFN(LN(x))."""
    d = x.shape[-1]
    query = F.layer_norm(x, (d,), w[f"{prefix}.norm_query.weight"], w[f"{prefix}.norm_query.bias"])
    if context is None:
        keys = query
    else:
        keys = F.layer_norm(context, (d,), w[f"{prefix}.norm_context.weight"], w[f"{prefix}.norm_context.bias"])

    def project(name, tensor):
        out = F.linear(tensor, w[f"{prefix}.{name}.weight"], w[f"{prefix}.{name}.bias"])
        return out.reshape(out.shape[0], out.shape[1], heads, d // heads).transpose(1, 2)  # (N, heads, T, 64)

    q, k, v = project("q_proj", query), project("k_proj", keys), project("v_proj", keys)
    weights = (q @ k.transpose(-1, -2) / math.sqrt(d // heads)).softmax(dim=-1)
    attended = (weights @ v).transpose(1, 2).reshape(x.shape)
    x = x + F.linear(attended, w[f"{prefix}.out_proj.weight"], w[f"{prefix}.out_proj.bias"])
    hidden = F.layer_norm(x, (d,), w[f"{prefix}.norm_ffn.weight"], w[f"{prefix}.norm_ffn.bias"])
    hidden = F.gelu(F.linear(hidden, w[f"{prefix}.ffn.0.weight"], w[f"{prefix}.ffn.0.bias"]))
    return x + F.linear(hidden, w[f"{prefix}.ffn.2.weight"], w[f"{prefix}.ffn.2.bias"])


def reference_gated_tokens(w, index, distorted, reference, grid):
    """Scale `index`: NR sigmoid(phi(F)) * (W F); FR sigmoid(phi(|Fd - Fr|)) * [Fd, Fr, |Fd - Fr|];
    phi = 1x1 conv, ReLU, 3x3 conv, ReLU, 1x1 conv to one channel. Then the mean over each cell
    of the token grid, a linear projection, the positional table, and a self-attention block."""
    p = f"scales.{index}"

    def phi(x):
        x = F.relu(F.conv2d(x, w[f"{p}.gate.0.weight"], w[f"{p}.gate.0.bias"]))
        x = F.relu(F.conv2d(x, w[f"{p}.gate.2.weight"], w[f"{p}.gate.2.bias"], padding=1))
        return F.conv2d(x, w[f"{p}.gate.4.weight"], w[f"{p}.gate.4.bias"])

    if reference is None:
        gated = torch.sigmoid(phi(distorted)) * F.conv2d(distorted, w[f"{p}.value.weight"], w[f"{p}.value.bias"])
    else:
        difference = torch.abs(distorted - reference)
        gated = torch.sigmoid(phi(difference)) * torch.cat([distorted, reference, difference], dim=1)
    n, c, h, width = gated.shape
    gh, gw = grid
    assert h % gh == 0 and width % gw == 0, "the reference pools whole cells"
    cells = gated.reshape(n, c, gh, h // gh, gw, width // gw).mean(dim=(3, 5))  # (N, C, gh, gw)
    tokens = F.linear(cells.reshape(n, c, gh * gw).transpose(1, 2), w[f"{p}.project.weight"], w[f"{p}.project.bias"])
    return tokens + reference_positions(gh, gw, tokens.shape[-1])


def reference_bpclip(model, distorted, reference=None):
    """The score: tokens G1..G5, h1 = G1, h_i = cross-block_i(query G_i, context h_(i-1)); pooled =
    mean of h5's tokens; attributes = 100 * cos(W pooled, adjective embeddings); score =
    sigmoid(MLP(LayerNorm([pooled, attributes]))), the MLP Linear, GELU, Linear."""
    w, heads = model.state_dict(), model.cfg.num_heads
    taps_d = reference_taps(model.encoder, distorted)
    taps_r = reference_taps(model.encoder, reference) if reference is not None else [None] * 5
    grid = tuple(taps_d[-1].shape[-2:])
    g = [
        reference_block(w, f"scales.{i}.self_attention", heads, reference_gated_tokens(w, i, d, r, grid))
        for i, (d, r) in enumerate(zip(taps_d, taps_r, strict=True))
    ]
    h = g[0]
    for i, query in enumerate(g[1:]):
        h = reference_block(w, f"chain.{i}", heads, query, context=h)
    pooled = h.mean(dim=1)
    embedded = F.linear(pooled, w["to_clip_space.weight"], w["to_clip_space.bias"])
    cosines = (embedded / embedded.norm(dim=-1, keepdim=True)) @ (
        w["adjective_features"] / w["adjective_features"].norm(dim=-1, keepdim=True)
    ).T
    features = torch.cat([pooled, 100.0 * cosines], dim=-1)
    features = F.layer_norm(features, features.shape[-1:], w["head_mlp.0.weight"], w["head_mlp.0.bias"])
    hidden = F.gelu(F.linear(features, w["head_mlp.1.weight"], w["head_mlp.1.bias"]))
    return torch.sigmoid(F.linear(hidden, w["head_mlp.3.weight"], w["head_mlp.3.bias"])).squeeze(-1)


# Float32 rounding: the two computations order their sums differently. Measured on scrambled tiny
# models over 24 seeded batches: at most 1.2e-7 (two float32 steps at 0.5); scores of six images
# spread over 1.8e-4 to 1.7e-3, and swapping an FR pair moves a score by 4e-5 to 2e-4.
REFERENCE_ATOL = 5e-7


@pytest.mark.parametrize("name", ["bpclip-nr-tiny", "bpclip-fr-tiny"])
@pytest.mark.parametrize("h,w", [(224, 224), (256, 192)])
def test_reproduces_the_reference_formula_to_float32_rounding(scrambled, random_images, name, h, w):
    model = scrambled(name, seed=3)
    images = random_images(6, h, w)
    args = (images, random_images(6, h, w)) if model.task == "fr" else (images,)
    with torch.no_grad():
        ours, expected = model(*args), reference_bpclip(model, *args)
    assert torch.isfinite(ours).all() and torch.isfinite(expected).all()
    torch.testing.assert_close(ours, expected, rtol=0, atol=REFERENCE_ATOL)
    assert expected.max() - expected.min() > 100 * REFERENCE_ATOL, "scores must spread for the match to mean anything"


def test_the_fr_gate_sees_the_difference_whichever_side_it_comes_from(scrambled, random_images):
    """The gate reads |Fd - Fr|, symmetric in the two images; the gated values [Fd, Fr, |Fd - Fr|]
    are not. With each projection's Fd and Fr weight blocks made equal, the whole model must
    score (a, b) as (b, a); without that tie it must not (so the swap is seen at all)."""
    model = scrambled("bpclip-fr-tiny", seed=4)
    a, b = random_images(4, 224, 224), random_images(4, 224, 224)
    with torch.no_grad():
        untied = (model(a, b) - model(b, a)).abs().max()
        for scale in model.scales:
            channels = scale.project.in_features // 3
            scale.project.weight[:, channels : 2 * channels] = scale.project.weight[:, :channels]
        forward, swapped = model(a, b), model(b, a)
    assert untied > 20 * REFERENCE_ATOL, f"swapping the images moved the scores by only {untied:.2g}"
    assert forward.max() - forward.min() > 100 * REFERENCE_ATOL
    torch.testing.assert_close(forward, swapped, rtol=0, atol=REFERENCE_ATOL)
    with torch.no_grad():
        torch.testing.assert_close(forward, reference_bpclip(model, a, b), rtol=0, atol=REFERENCE_ATOL)


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
