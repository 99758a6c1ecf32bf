"""`aft` against Qiu et al. 2024: the kernel regulariser written again here from the paper's
definition (numpy, float64), its behaviour on students that do or do not carry the teacher's
features, and real runs on tiny timm models (CPU, seconds)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.ensemble._toy import toy_arrays
from zooens.ensemble import Artifact, RunSpec
from zooens.ensemble.strategies.aft import AftStrategy, aft_penalty, feature_weights
from zooens.ensemble.training import predict_proba
from zooens.errors import ConfigError


def reference_penalty(student: np.ndarray, teacher: np.ndarray, s: np.ndarray) -> float:
    """R = sqrt(mean((K_s - K_t)^2) + 1e-8), K(Z) = Zbar Zbar^T, Zbar: Z centred over the batch and
    each row divided by (its norm + 1e-8); the teacher's features weighted by sigmoid(s) first."""

    def kernel(z: np.ndarray) -> np.ndarray:
        z = z - z.mean(axis=0, keepdims=True)
        z = z / (np.sqrt((z**2).sum(axis=1, keepdims=True)) + 1e-8)
        return z @ z.T

    weighted = teacher * (1.0 / (1.0 + np.exp(-s)))[None, :]
    return float(np.sqrt(np.mean((kernel(student) - kernel(weighted)) ** 2) + 1e-8))


def _t(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(x)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_penalty_equals_the_papers_formula_for_random_inputs(seed: int) -> None:
    rng = np.random.default_rng(seed)
    student = rng.normal(2.0, 3.0, size=(9, 5))
    teacher = rng.normal(-1.0, 0.5, size=(9, 13))
    s = rng.normal(0.0, 2.0, size=13)
    got = aft_penalty(_t(student), _t(teacher), _t(s)).item()
    assert got == pytest.approx(reference_penalty(student, teacher, s), rel=1e-10, abs=1e-12)
    assert feature_weights(torch.zeros(3)).tolist() == [0.5, 0.5, 0.5]


def test_a_student_carrying_the_teachers_features_scores_far_lower_than_an_unrelated_one() -> None:
    """The issue measured the opposite on main (0.099 for the teacher's own features, 0.0096 for noise)."""
    rng = np.random.default_rng(0)
    teacher = rng.normal(1.5, 1.0, size=(32, 24))
    rotation, _ = np.linalg.qr(rng.normal(size=(24, 24)))
    same = 4.0 * teacher @ rotation + 7.0  # the teacher's features up to an orthogonal map, a scale and a shift
    unrelated = rng.normal(0.0, 1.0, size=(32, 24))
    s = np.zeros(24)
    equal_score = aft_penalty(_t(same), _t(teacher), _t(s)).item()
    unrelated_score = aft_penalty(_t(unrelated), _t(teacher), _t(s)).item()
    assert equal_score == pytest.approx(reference_penalty(same, teacher, s), rel=1e-8)
    assert equal_score < 1e-3  # sqrt(1e-8) = 1e-4 is the floor
    assert unrelated_score > 0.1 and unrelated_score > 100 * equal_score
    # with learned weights, the student matching the weighted features is the one that scores ~0
    s = rng.normal(0.0, 2.0, size=24)
    weighted = teacher / (1.0 + np.exp(-s))
    assert aft_penalty(_t(weighted), _t(teacher), _t(s)).item() < 1e-3
    assert aft_penalty(_t(teacher), _t(teacher), _t(s)).item() > 10 * 1e-4


def test_gradients_reach_the_feature_weights_and_the_student() -> None:
    rng = np.random.default_rng(3)
    student = _t(rng.normal(size=(16, 6))).requires_grad_(True)
    teacher = _t(rng.normal(size=(16, 10)))
    s = torch.zeros(10, dtype=torch.float64, requires_grad=True)
    aft_penalty(student, teacher, s).backward()
    assert s.grad is not None and torch.isfinite(s.grad).all() and (s.grad.abs() > 0).all()
    assert student.grad is not None and student.grad.abs().sum() > 0
    # numerical check of d R / d s_0 against a central difference of the reference
    eps = 1e-6
    plus, minus = np.zeros(10), np.zeros(10)
    plus[0], minus[0] = eps, -eps
    x, t = student.detach().numpy(), teacher.numpy()
    numeric = (reference_penalty(x, t, plus) - reference_penalty(x, t, minus)) / (2 * eps)
    assert s.grad[0].item() == pytest.approx(numeric, rel=1e-4)


# --------------------------------------------------------------------------------------
# Real runs on tiny timm models with random weights (user models).


@pytest.fixture
def toy(zooens_home: Path, tmp_path: Path):
    from zooens.selection.cache import EmbeddingCache
    from zooens.selection.datasets import load_dataset
    from zooens.zoo.testing import register_random_model

    register_random_model("aft-effnet", "test_efficientnet", tmp_path / "w")
    register_random_model("aft-resnet", "test_resnet", tmp_path / "w")
    register_random_model("aft-vit-a", "test_vit", tmp_path / "w", seed=5)
    register_random_model("aft-vit-b", "test_vit", tmp_path / "w", seed=5)  # the same weights, another name
    root = tmp_path / "data"
    for split, n, seed in (("train", 12, 0), ("val", 6, 1), ("test", 6, 2)):
        x, y = toy_arrays(n, seed)
        for i, (img, label) in enumerate(zip(x, y, strict=False)):
            folder = root / split / ["red", "green", "blue"][label]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(folder / f"{i}.png")
    return load_dataset(str(root)), EmbeddingCache(tmp_path / "cache")


def test_the_default_student_is_the_smallest_zoo_model_and_never_its_own_teacher(toy) -> None:
    aft = AftStrategy()
    zoo = ["aft-resnet", "aft-vit-a", "aft-effnet"]
    options = aft.job_options({}, selected_models=["aft-resnet", "aft-vit-a"], zoo_models=zoo)
    assert options == {"teachers": ["aft-resnet", "aft-vit-a"], "student": "aft-effnet"}
    # the smallest model is itself selected: the student is the smallest one left
    options = aft.job_options({}, selected_models=["aft-effnet"], zoo_models=zoo)
    assert options["student"] == "aft-vit-a" and options["teachers"] == ["aft-effnet"]
    # without the zoo, a run's model is its student and is dropped from its teachers
    options = aft.job_options({}, selected_models=["aft-resnet", "aft-effnet"])
    config = aft.config_for(RunSpec(model_name="aft-effnet", strategy="aft", lr=1e-3, steps=1, options=options))
    assert config.student == "aft-effnet" and config.teachers == ["aft-resnet"]
    with pytest.raises(ConfigError, match="at least one teacher other than the student"):
        aft.config_for(
            RunSpec(model_name="aft-effnet", strategy="aft", lr=1e-3, steps=1, options={"teachers": ["aft-effnet"]})
        )
    with pytest.raises(ConfigError, match="own teachers"):
        aft.check_options({"student": "a", "teachers": ["a", "b"]})
    for bad in ({"beta": -1.0}, {"beta": "10"}, {"scale_lr": 0.0}, {"scale_lr": float("nan")}, {"student": 3}):
        with pytest.raises(ConfigError):
            aft.check_options(bad)


def test_a_short_run_lowers_the_loss_and_its_artifact_rebuilds_the_student(toy, tmp_path: Path) -> None:
    ds, cache = toy
    spec = RunSpec(
        model_name="aft-resnet",
        strategy="aft",
        lr=3e-3,
        steps=16,
        seed=0,
        resolution=32,
        batch_size=6,
        options={"teachers": ["aft-resnet"], "student": "aft-effnet", "beta": 10.0},
    )
    curve: list[tuple[float, float]] = []
    result = AftStrategy().fit(
        spec, ds, cache=cache, progress=False, on_step=lambda step, ce, pen: curve.append((ce, pen))
    )
    assert len(curve) == 16 and all(np.isfinite(v) for pair in curve for v in pair)
    total = [ce + 10.0 * pen for ce, pen in curve]
    assert np.mean(total[-4:]) < np.mean(total[:4])
    assert np.mean([p for _, p in curve[-4:]]) < np.mean([p for _, p in curve[:4]])
    # the run is the student's: a different, smaller model than its teacher
    assert result.model_name == "aft-effnet" and result.artifact.config["model"] == "aft-effnet"
    assert result.artifact.config["adapter"]["config"]["teachers"] == ["aft-resnet"]
    assert result.hparams["augmentation"] == "none"
    assert result.updated_params == sum(
        v.numel()
        for k, v in result.artifact.tensors.items()
        if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))
    )
    result.artifact.save(tmp_path / "aft")
    artifact = Artifact.load(tmp_path / "aft")
    strategy = AftStrategy()
    model = strategy.load(artifact)
    again = predict_proba(model, ds.split("val"), strategy.data_config(artifact))
    np.testing.assert_allclose(again, result.val_proba, atol=1e-5)


def test_flips_give_the_teacher_features_of_the_view_the_student_sees(toy) -> None:
    """The mirrored teacher features are the teacher's features of exactly the mirrored input the
    student sees; and a student identical to its teacher (same weights under another name, a ViT:
    no batch statistics) starts at the penalty's floor, sqrt(1e-8), when the batch flips."""
    from zooens.ensemble.training import eval_transform
    from zooens.zoo import create_model, data_config

    ds, cache = toy
    spec = RunSpec(
        model_name="aft-vit-b",
        strategy="aft",
        lr=1e-4,
        steps=1,
        seed=0,
        batch_size=12,
        augmentation="flip",
        options={"teachers": ["aft-vit-a"]},
    )
    strategy = AftStrategy()
    plain, mirrored = strategy.teacher_features(
        strategy.config_for(spec), spec, ds, cache=cache, device="cpu", progress=False
    )
    assert mirrored is not None and mirrored.shape == plain.shape == (12, 64)
    model = create_model("aft-vit-a", num_classes=0)
    transform = eval_transform(dict(data_config("aft-vit-a")))
    train = ds.split("train")
    images = torch.stack([transform(train.image(i)) for i in range(4)])
    with torch.inference_mode():
        seen = model(images.flip(-1))
    torch.testing.assert_close(mirrored[:4], seen, rtol=0, atol=1e-4)
    assert (mirrored[:4] - plain[:4]).abs().max() > 1e-2  # the two views really differ
    mismatch = aft_penalty(mirrored, plain, torch.zeros(64)).item()  # teacher features of the other view
    assert mismatch > 5e-4

    penalties: list[float] = []
    strategy.fit(spec, ds, cache=cache, progress=False, on_step=lambda step, ce, pen: penalties.append(pen))
    assert len(penalties) == 1 and penalties[0] < 1.5e-4


def test_crops_are_refused_before_any_work(toy) -> None:
    ds, cache = toy
    spec = RunSpec(
        model_name="aft-effnet",
        strategy="aft",
        lr=1e-3,
        steps=1,
        augmentation="crop",
        options={"teachers": ["aft-resnet"]},
    )
    with pytest.raises(ConfigError, match="'none' or 'flip'"):
        AftStrategy().fit(spec, ds, cache=cache, progress=False)
