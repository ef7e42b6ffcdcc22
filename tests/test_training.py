"""Training: configuration, run directories, resuming, and short runs that must lower the loss."""

from __future__ import annotations

import itertools
import socket

import pytest
import torch

from iqart.train.config import load_config
from iqart.train.data.pristine import load_pristine, overlapping_crops, random_rescale
from iqart.train.evaluate import (
    RankingResult,
    model_score_fn,
    summarize_ranking,
    synthetic_ranking,
)
from iqart.train.losses import mos_loss, qualiclip_losses
from iqart.train.models.checkpoints import CheckpointError, read_state_dict
from iqart.train.models.preprocess import normalize_float
from iqart.train.models.zoo import load_model
from iqart.train.runs import RunDirectory, calibrate_batchnorm, cosine_lr
from iqart.train.train_bpclip import (
    BPCLIPTrainConfig,
    SyntheticMOS,
    build_bpclip,
    load_teacher,
    set_ranking_loss,
    teacher_targets,
    train_bpclip,
)
from iqart.train.train_qualiclip import (
    QualiCLIPTrainConfig,
    build_qualiclip,
    degraded_pairs,
    train_qualiclip,
    training_content,
)

SMALL = {"images": "skimage:astronaut,chelsea", "crop": 64, "log_every": 1, "checkpoint_every": 5, "seed": 3}


def test_cosine_schedule_warms_up_then_decays_to_the_floor():
    lrs = [cosine_lr(step, 100, 1.0, warmup_steps=10, final_fraction=0.1) for step in range(101)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in itertools.pairwise(lrs[10:]))
    assert lrs[100] == pytest.approx(0.1)


def test_config_file_and_overrides(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('model = "qualiclip-tiny"\nsteps = 7\nholdout_types = ["jpeg"]\n')
    config = load_config(QualiCLIPTrainConfig, path, ["lr=0.5", "freeze_batchnorm=false", "holdout_images=a,b"])
    assert (config.model, config.steps, config.lr, config.freeze_batchnorm) == ("qualiclip-tiny", 7, 0.5, False)
    assert list(config.holdout_types) == ["jpeg"] and list(config.holdout_images) == ["a", "b"]
    path.write_text("stepz = 7\n")
    with pytest.raises(ValueError, match="unknown setting.*stepz"):
        load_config(QualiCLIPTrainConfig, path)
    with pytest.raises(ValueError, match="bad override"):
        load_config(QualiCLIPTrainConfig, None, ["steps"])
    with pytest.raises(ValueError, match="bad override"):
        load_config(QualiCLIPTrainConfig, None, ["freeze_batchnorm=maybe"])


def test_run_directory_never_overwrites_and_resumes_only_the_same_config(tmp_path):
    model = torch.nn.Linear(2, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    run = RunDirectory(tmp_path / "run", {"a": 1}, resume=False)
    run.save(3, model, optimizer, torch.Generator())
    with pytest.raises(ValueError, match="already holds a run"):
        RunDirectory(tmp_path / "run", {"a": 1}, resume=False)
    with pytest.raises(ValueError, match="differs.*a"):
        RunDirectory(tmp_path / "run", {"a": 2}, resume=True)
    with pytest.raises(ValueError, match="nothing to resume"):
        RunDirectory(tmp_path / "other", {"a": 1}, resume=True)


def test_degraded_pairs_share_one_degradation_per_image():
    config = QualiCLIPTrainConfig(model="qualiclip-tiny", images_per_step=3, crop=48)
    images = list(load_pristine("skimage:astronaut").values())
    generator = torch.Generator().manual_seed(0)
    batch = degraded_pairs(training_content(images, config, generator), config, ["white_noise"], generator)
    assert batch.shape == (2, 5, 3, 3, 48, 48)
    assert batch.min() >= 0 and batch.max() <= 1
    assert torch.equal(torch.round(batch * 255), batch * 255)  # on the 8-bit grid
    distance_to_clean = (batch[:, 1:] - batch[:, :1]).abs().mean(dim=(0, 2, 3, 4, 5))
    assert (distance_to_clean[1:] >= distance_to_clean[:-1]).all()  # noise grows with the level


def test_overlapping_crops_share_content():
    image = torch.rand(3, 300, 400)
    crops = overlapping_crops(image, 128, torch.Generator().manual_seed(1))
    assert crops.shape == (2, 3, 128, 128)
    matches = [
        (top, left)
        for top in range(300 - 127)
        for left in range(400 - 127)
        if torch.equal(image[:, top : top + 128, left : left + 128], crops[1])
    ]
    assert matches  # crop 2 is a real window of the image


def losses_over_steps(loss_fn, optimizer: torch.optim.Optimizer, steps: int = 25) -> list[float]:
    """The loss before each of `steps` optimiser steps on loss_fn() (one fixed batch)."""
    losses = []
    for _ in range(steps):
        loss = loss_fn()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def test_qualiclip_training_steps_lower_the_loss_on_a_batch():
    """The loss, its gradients and the optimiser work together: repeated steps on one batch of
    degraded crops (train mode, as in training) must bring its loss well down."""
    config = QualiCLIPTrainConfig(
        model="qualiclip-tiny",
        images_per_step=4,
        crop=64,
        margin=0.02,
        consistency_margin=0.01,
        images="skimage:astronaut",
    )
    images = list(load_pristine(config.images).values())
    generator = torch.Generator().manual_seed(5)
    batch = degraded_pairs(
        training_content(images, config, generator), config, ["white_noise", "gaussian_blur"], generator
    )
    model = build_qualiclip(config).train()

    def loss():
        sims = model.similarities(model.embed(normalize_float(batch.reshape(-1, *batch.shape[-3:]))))
        return qualiclip_losses(sims.reshape(*batch.shape[:3], model.num_pairs, 2), 0.02, 0.01).total(1, 1, 1)

    # the first step overshoots (train-mode batch norm on a fresh model); 40 steps settle well below the start
    losses = losses_over_steps(loss, torch.optim.AdamW(model.visual.parameters(), lr=3e-3), steps=40)
    assert losses[-1] < 0.5 * losses[0], losses


def test_a_short_qualiclip_run_writes_its_outputs(tmp_path):
    config = QualiCLIPTrainConfig(
        model="qualiclip-tiny",
        steps=12,
        lr=2e-3,
        images_per_step=2,
        freeze_batchnorm=False,
        warmup_steps=3,
        holdout_images=("chelsea",),
        holdout_types=("jpeg2000",),
        **SMALL,
    )
    run = train_qualiclip(config, tmp_path / "run", progress=False)
    trained = load_model("qualiclip-tiny", run.weights_file)
    assert not torch.equal(trained.visual.conv1.weight, build_qualiclip(config).visual.conv1.weight)
    assert read_state_dict(run.weights_file)["visual.conv1.weight"].dtype == torch.float32
    rows = run.read_log()
    assert [int(r["step"]) for r in rows if r["loss"]] == list(range(1, 13))
    assert all(float(r["loss"]) >= 0 for r in rows if r["loss"])
    final = rows[-1]  # the evaluation on the held-out photo, with the held-out type reported apart
    assert final["srcc_all"] and final["srcc_held-out types"] and -1 <= float(final["srcc_all"]) <= 1
    assert (run.path / "curves.png").stat().st_size > 1000


def test_resuming_an_interrupted_run_gives_the_same_weights(tmp_path):
    config = QualiCLIPTrainConfig(
        model="qualiclip-tiny", steps=10, lr=1e-3, images_per_step=2, freeze_batchnorm=False, warmup_steps=2, **SMALL
    )
    straight = train_qualiclip(config, tmp_path / "straight", progress=False)
    interrupted = train_qualiclip(config, tmp_path / "resumed", progress=False, stop_at=5)
    assert not interrupted.weights_file.exists()  # weights are exported only when all steps are done
    resumed = train_qualiclip(config, tmp_path / "resumed", resume=True, progress=False)
    a, b = read_state_dict(straight.weights_file), read_state_dict(resumed.weights_file)
    assert all(torch.equal(a[k], b[k]) for k in a)
    steps = [int(r["step"]) for r in resumed.read_log() if r["loss"]]
    assert steps == list(range(1, 11))


def test_synthetic_mos_targets_follow_the_level():
    config = BPCLIPTrainConfig(
        model="bpclip-nr-tiny", crop=48, batch_size=64, pristine_probability=0.2, composite_probability=0.0
    )
    source = SyntheticMOS(config, list(load_pristine("skimage:astronaut").values()), torch.Generator().manual_seed(0))
    batch = source.batch()
    assert batch["image"].shape == batch["reference"].shape == (64, 3, 48, 48)
    targets = batch["target"]
    assert targets.min() >= 0 and targets.max() <= 1
    assert torch.allclose(targets * 5, torch.round(targets * 5), atol=1e-5)  # 1 − (level + 1) / 5
    pristine = targets == 1.0
    assert pristine.any() and torch.equal(batch["image"][pristine], batch["reference"][pristine])


def test_level_sets_hold_one_crop_clean_and_at_every_level():
    config = BPCLIPTrainConfig(
        model="bpclip-nr-tiny",
        crop=48,
        batch_size=14,
        level_sets=True,
        composite_probability=0.0,
        holdout_types=("jpeg2000",),
        procedural_probability=0.5,
    )
    source = SyntheticMOS(config, list(load_pristine("skimage:astronaut").values()), torch.Generator().manual_seed(0))
    batch = source.batch()
    assert batch["image"].shape == batch["reference"].shape == (12, 3, 48, 48)  # 2 sets of 6; 14 // 6 = 2
    assert torch.allclose(batch["target"], torch.tensor([1, 0.8, 0.6, 0.4, 0.2, 0.0] * 2))
    images = batch["image"].reshape(2, 6, 3, 48, 48)
    assert torch.equal(batch["reference"].reshape(2, 6, 3, 48, 48), images[:, :1].expand(-1, 6, -1, -1, -1))
    assert not torch.equal(images[0, 0], images[1, 0])  # two different crops
    with pytest.raises(ValueError, match="level_sets needs batch_size"):
        SyntheticMOS(BPCLIPTrainConfig(batch_size=4, level_sets=True), [torch.rand(3, 64, 64)], torch.Generator())


def test_init_encoder_takes_only_the_encoder_of_other_bpclip_weights(tmp_path):
    from iqart.train.models.checkpoints import save_checkpoint

    fr = build_bpclip(BPCLIPTrainConfig(model="bpclip-fr-tiny", seed=5))
    save_checkpoint(tmp_path / "fr.pt", "bpclip-fr-tiny", fr.state_dict())
    nr = build_bpclip(BPCLIPTrainConfig(model="bpclip-nr-tiny", init_encoder=str(tmp_path / "fr.pt")))
    fresh = build_bpclip(BPCLIPTrainConfig(model="bpclip-nr-tiny"))
    assert all(
        torch.equal(a, b)
        for a, b in zip(nr.encoder.state_dict().values(), fr.encoder.state_dict().values(), strict=True)
    )
    assert torch.equal(nr.head_mlp[1].weight, fresh.head_mlp[1].weight)  # the rest as a fresh model
    tower = build_qualiclip(QualiCLIPTrainConfig(model="qualiclip-tiny", init_encoder=str(tmp_path / "fr.pt"))).visual
    fresh_tower = build_qualiclip(QualiCLIPTrainConfig(model="qualiclip-tiny")).visual
    assert torch.equal(tower.layer4[0].conv1.weight, fr.encoder.layer4[0].conv1.weight)
    assert torch.equal(tower.attnpool.q_proj.weight, fresh_tower.attnpool.q_proj.weight)  # the pool is not in BPCLIP
    save_checkpoint(
        tmp_path / "q.pt", "qualiclip-tiny", build_qualiclip(QualiCLIPTrainConfig(model="qualiclip-tiny")).state_dict()
    )
    with pytest.raises(Exception, match="q.pt"):
        build_bpclip(BPCLIPTrainConfig(model="bpclip-nr-tiny", init_encoder=str(tmp_path / "q.pt")))


def test_openai_init_without_a_network_names_both_ways_to_get_the_weights():
    """`init = "openai"` asks open_clip for OpenAI's CLIP RN50 for real; with no network (and no
    cached copy) the error says how to get it online and how to use a local file instead."""
    try:
        socket.getaddrinfo("huggingface.co", 443)
        pytest.skip("online: open_clip would download OpenAI's CLIP RN50; this checks the offline error")
    except OSError:
        pass
    with pytest.raises(CheckpointError) as raised:  # huggingface_hub retries for about 50 s first
        build_bpclip(BPCLIPTrainConfig(model="bpclip-nr", init="openai"))
    message = str(raised.value)
    assert 'open_clip.create_model("RN50", pretrained="openai")' in message  # online: open_clip's cache
    assert "RN50.pt" in message and "set init to that local file's path" in message  # offline: a local file


@pytest.mark.parametrize(
    "build, config",
    [
        (build_qualiclip, QualiCLIPTrainConfig(model="qualiclip-tiny", init="openai")),
        (build_bpclip, BPCLIPTrainConfig(model="bpclip-fr-tiny", init="openai")),
    ],
)
def test_openai_init_fits_rn50_models_only(build, config):
    with pytest.raises(CheckpointError, match="fit RN50 models only; the 'tiny' backbone"):
        build(config)


def _save_fr_teacher(path, constant: float | None = None) -> None:
    """A random bpclip-fr-tiny checkpoint; with `constant`, one whose score is that for any input."""
    from iqart.train.models.checkpoints import save_checkpoint

    teacher = build_bpclip(BPCLIPTrainConfig(model="bpclip-fr-tiny", seed=4))
    if constant is not None:
        with torch.no_grad():
            teacher.head_mlp[-1].weight.zero_()
            teacher.head_mlp[-1].bias.fill_(torch.logit(torch.tensor(constant)).item())
    save_checkpoint(path, "bpclip-fr-tiny", teacher.state_dict())


def test_teacher_targets_blend_the_teachers_scores_of_each_pair_with_the_level(tmp_path):
    _save_fr_teacher(tmp_path / "fr.pt")
    config = BPCLIPTrainConfig(
        model="bpclip-nr-tiny",
        crop=48,
        batch_size=6,
        level_sets=True,
        teacher=str(tmp_path / "fr.pt"),
        teacher_weight=0.25,
    )
    teacher = load_teacher(config)
    assert teacher is not None and teacher.task == "fr" and not teacher.training
    assert not any(p.requires_grad for p in teacher.parameters())
    batch = SyntheticMOS(config, [torch.rand(3, 80, 80)], torch.Generator().manual_seed(0)).batch()
    scores = teacher(normalize_float(batch["image"]), normalize_float(batch["reference"]))
    targets = teacher_targets(teacher, batch, config.teacher_weight)
    assert torch.allclose(targets, 0.25 * scores + 0.75 * batch["target"], atol=1e-6)
    assert torch.allclose(teacher_targets(teacher, batch, 1.0), scores, atol=1e-6)
    assert torch.equal(teacher_targets(None, batch, 1.0), batch["target"])
    assert load_teacher(BPCLIPTrainConfig(model="bpclip-nr-tiny")) is None
    with pytest.raises(ValueError, match="full-reference"):
        load_teacher(BPCLIPTrainConfig(model="bpclip-fr-tiny", teacher=str(tmp_path / "fr.pt")))
    with pytest.raises(ValueError, match="teacher_weight"):
        load_teacher(BPCLIPTrainConfig(model="bpclip-nr-tiny", teacher=str(tmp_path / "fr.pt"), teacher_weight=2.0))


def test_a_student_run_regresses_its_teachers_score_not_the_level(tmp_path):
    """A teacher that scores every pair 0.9: the student learns to score its training crops 0.9,
    where the level targets (1 for a clean crop, 0.8 .. 0 for its 5 levels) average 0.5."""
    _save_fr_teacher(tmp_path / "fr.pt", constant=0.9)
    config = BPCLIPTrainConfig(
        model="bpclip-nr-tiny",
        steps=25,
        lr=1e-2,
        warmup_steps=1,
        batch_size=6,
        level_sets=True,
        plcc_weight=0.0,
        holdout_images=("chelsea",),
        eval_crops_per_image=1,
        teacher=str(tmp_path / "fr.pt"),
        **{**SMALL, "crop": 48},
    )
    run = train_bpclip(config, tmp_path / "run", progress=False)
    student = load_model("bpclip-nr-tiny", run.weights_file)
    sets = SyntheticMOS(config, list(load_pristine("skimage:astronaut").values()), torch.Generator().manual_seed(1))
    with torch.no_grad():
        scores = torch.cat([student(normalize_float(sets.batch()["image"])) for _ in range(2)])
    assert scores.mean().item() > 0.75, scores


def test_set_ranking_loss_is_zero_only_for_sets_in_order():
    ordered = torch.tensor([[1.0, 0.8, 0.6], [0.5, 0.4, 0.3]])
    assert set_ranking_loss(ordered, margin=0.05).item() == 0.0
    assert set_ranking_loss(ordered, margin=0.15).item() > 0  # too close for the margin
    swapped = torch.tensor([[0.6, 0.8, 1.0]])
    assert set_ranking_loss(swapped, margin=0.0).item() == pytest.approx((0.2 + 0.4 + 0.2) / 3)


@pytest.mark.parametrize("name", ["bpclip-nr-tiny", "bpclip-fr-tiny"])
def test_bpclip_training_steps_lower_the_loss_on_a_batch(name):
    config = BPCLIPTrainConfig(model=name, crop=64, batch_size=12, images="skimage:astronaut")
    fixed = SyntheticMOS(config, list(load_pristine(config.images).values()), torch.Generator().manual_seed(9)).batch()
    model = build_bpclip(config).train()
    args = [normalize_float(fixed["image"])] + ([normalize_float(fixed["reference"])] if model.task == "fr" else [])
    losses = losses_over_steps(
        lambda: mos_loss(model(*args), fixed["target"], plcc_weight=1.0), torch.optim.AdamW(model.parameters(), lr=1e-3)
    )
    assert losses[-1] < 0.5 * losses[0], losses


def test_a_short_bpclip_run_writes_its_outputs(tmp_path):
    config = BPCLIPTrainConfig(
        model="bpclip-fr-tiny",
        steps=6,
        batch_size=4,
        holdout_images=("chelsea",),
        eval_crops_per_image=1,
        half_weights=True,
        **SMALL,
    )
    run = train_bpclip(config, tmp_path / "run", progress=False)
    stored = read_state_dict(run.weights_file)["to_clip_space.weight"]
    assert stored.dtype == torch.float16  # half_weights: stored small in git, loaded as float32
    trained = load_model("bpclip-fr-tiny", run.weights_file)
    assert trained.to_clip_space.weight.dtype == torch.float32
    rows = run.read_log()
    assert [int(r["step"]) for r in rows if r["loss"]] == list(range(1, 7))
    assert rows[-1]["srcc_all"]


def test_synthetic_ranking_rewards_a_model_that_orders_levels():
    """An oracle that scores by closeness to the clean crop ranks noise perfectly; its negation
    ranks it perfectly wrong."""
    images = load_pristine("skimage:astronaut")

    def oracle(images_: torch.Tensor, reference: torch.Tensor | None) -> torch.Tensor:
        return -(images_ - reference).abs().mean(dim=(1, 2, 3))

    good = synthetic_ranking(oracle, images, ["white_noise"], crop=64, crops_per_image=2, full_reference=True)
    bad = synthetic_ranking(
        lambda x, r: -oracle(x, r), images, ["white_noise"], crop=64, crops_per_image=2, full_reference=True
    )
    assert good[0].ranking == pytest.approx(1.0) and bad[0].ranking == pytest.approx(-1.0)
    rows = summarize_ranking(good + [RankingResult("jpeg", 0.5, 0.5, 2)], held_out_kinds=("jpeg",))
    assert [r["group"] for r in rows] == ["compression", "noise", "all", "held-out types"]  # GROUPS order


def test_model_score_fn_matches_the_model(scrambled):
    model = scrambled("qualiclip-tiny")
    images = torch.rand(3, 3, 64, 64)
    assert torch.allclose(model_score_fn(model, batch_size=2)(images, None), model(normalize_float(images)))


def test_greyscale_skimage_photos_load_as_three_equal_channels():
    images = load_pristine("skimage:camera,coffee")
    camera, coffee = images["camera"], images["coffee"]
    assert camera.shape == (3, 512, 512) and torch.equal(camera[0], camera[1]) and torch.equal(camera[1], camera[2])
    assert not torch.equal(coffee[0], coffee[1])
    with pytest.raises(ValueError, match="unknown scikit-image photo 'nope'.*camera"):
        load_pristine("skimage:nope")


def test_random_rescale_shrinks_within_bounds_and_flips():
    image = torch.rand(3, 100, 150)
    generator = torch.Generator().manual_seed(0)
    sizes = {tuple(random_rescale(image, 0.5, generator).shape[-2:]) for _ in range(20)}
    assert len(sizes) > 5 and all(50 <= h <= 100 and 75 <= w <= 150 for h, w in sizes)
    same = [random_rescale(image, 1.0, generator) for _ in range(10)]
    assert all(torch.equal(s, image) or torch.equal(s, image.flip(-1)) for s in same)
    assert any(torch.equal(s, image.flip(-1)) for s in same)


def test_calibrate_batchnorm_estimates_statistics_and_leaves_them_frozen():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    batches = [torch.randn(5, 3, 8, 8) * 3 + 2 for _ in range(4)]
    feed = iter(batches)
    calibrate_batchnorm(model, lambda: model(next(feed)), len(batches))
    conv_out = torch.cat([model[0](b) for b in batches]).detach()
    norm = model[1]
    assert torch.allclose(norm.running_mean, conv_out.mean(dim=(0, 2, 3)), atol=1e-5)
    per_batch_var = torch.stack([model[0](b).detach().var(dim=(0, 2, 3)) for b in batches])
    assert torch.allclose(norm.running_var, per_batch_var.mean(dim=0), rtol=1e-4)
    assert norm.momentum == 0.1 and not norm.training and not model.training
    assert norm.num_batches_tracked == len(batches)
