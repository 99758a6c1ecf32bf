"""FiT's episodic training: tasks with >= 1 context and >= 1 target per sampled class at 10 or 397
classes, a non-zero gradient at every step at 100 classes, training that lowers the loss, and the
strategy end to end (artifact round trip)."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from tests.ensemble._toy import toy_split
from zooens.ensemble.adapters import inject, make_config
from zooens.ensemble.adapters.film import EpisodeSampler, FiTClassifier, NaiveBayesHead, train_episodic
from zooens.errors import DatasetError

DATA_CFG = {
    "input_size": (3, 32, 32),
    "mean": (0.5, 0.5, 0.5),
    "std": (0.5, 0.5, 0.5),
    "interpolation": "bilinear",
    "crop_pct": 1.0,
}


class NoiseSplit:
    """`n_classes` classes of `per_class` random images (a class's images share a mean colour)."""

    def __init__(self, n_classes: int, per_class: int, seed: int = 0, size: int = 32) -> None:
        rng = np.random.default_rng(seed)
        self.labels = np.repeat(np.arange(n_classes), per_class)
        colours = rng.integers(0, 256, size=(n_classes, 3))
        noise = rng.normal(0, 40, size=(len(self.labels), size, size, 3))
        self.x = np.clip(colours[self.labels][:, None, None, :] + noise, 0, 255).astype(np.uint8)

    def __len__(self) -> int:
        return len(self.labels)

    def image(self, i: int) -> Image.Image:
        return Image.fromarray(self.x[i])


@pytest.mark.parametrize("n_classes, per_class", [(10, 2), (10, 30), (100, 3), (397, 2), (397, 5)])
def test_every_task_has_context_and_target_for_every_sampled_class(n_classes, per_class):
    labels = np.repeat(np.arange(n_classes), per_class)
    sampler = EpisodeSampler(labels, task_size=100, generator=torch.Generator().manual_seed(0))
    for _ in range(50):
        ep = sampler.sample()
        assert min(n_classes, 5) <= ep.way <= min(n_classes, 100)
        for k in range(ep.way):
            assert (ep.context_labels == k).sum() >= 1 and (ep.target_labels == k).sum() >= 1
        assert set(ep.context).isdisjoint(ep.target)  # the fixed split: no example is its own target
        originals = labels[ep.context]
        assert all(len(set(originals[ep.context_labels == k])) == 1 for k in range(ep.way))
        assert len(ep.context) <= ep.way * max(1, round(100 / ep.way))


def test_tasks_are_reproducible_and_balanced_as_fits_resampler():
    labels = np.repeat(np.arange(8), 40)
    a = EpisodeSampler(labels, task_size=40, generator=torch.Generator().manual_seed(3)).sample()
    b = EpisodeSampler(labels, task_size=40, generator=torch.Generator().manual_seed(3)).sample()
    np.testing.assert_array_equal(a.context, b.context)
    counts = np.bincount(a.context_labels)
    assert (counts == round(40 / a.way)).all()  # round(task_size / way) shots per class


def test_too_few_classes_with_two_examples_is_a_dataset_error():
    with pytest.raises(DatasetError, match="two or more training examples"):
        EpisodeSampler([0, 1, 2, 2], generator=torch.Generator().manual_seed(0))


def _classifier(arch: str, n_classes: int) -> tuple[FiTClassifier, list[torch.nn.Parameter]]:
    torch.manual_seed(0)
    backbone = timm.create_model(arch, num_classes=0, pretrained=False)
    params = inject(backbone, "film", make_config("film", {}))
    head = NaiveBayesHead("lda")
    return FiTClassifier(backbone, head, n_classes), params + list(head.parameters())


def test_every_step_has_a_non_zero_gradient_at_100_classes():
    split = NoiseSplit(100, 3)
    model, params = _classifier("test_resnet", 100)
    seen = []
    # tasks of 5 to 12 of the 100 classes (kept small for a CPU test; FiT's 100 behaves the same)
    train_episodic(
        model,
        params,
        split,
        DATA_CFG,
        lr=0.0035,
        steps=5,
        task_size=12,
        max_target_size=12,
        seed=0,
        progress=False,
        on_step=lambda step, loss, grad: seen.append((loss, grad)),
    )
    assert len(seen) == 5
    for loss, grad in seen:
        assert loss > 0 and np.isfinite(loss) and grad > 0


def test_a_short_run_lowers_the_loss_and_trains_only_film_and_head():
    split = toy_split(60, seed=0)
    model, params = _classifier("test_efficientnet", 3)
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if all(p is not q for q in params)}

    def loss_on_split() -> float:
        with torch.no_grad():
            images = torch.stack(
                [
                    torch.from_numpy(np.asarray(split.image(i), dtype=np.float32) / 127.5 - 1).permute(2, 0, 1)
                    for i in range(len(split))
                ]
            )
            feats = model.backbone(images)
            labels = torch.as_tensor(split.labels)
            stats = model.head.fit_stats(feats[:30], labels[:30], 3)
            return float(torch.nn.functional.cross_entropy(model.head.logits(feats[30:], stats), labels[30:]))

    before = loss_on_split()
    train_episodic(
        model, params, split, DATA_CFG, lr=0.02, steps=10, task_size=9, max_target_size=9, seed=0, progress=False
    )
    after = loss_on_split()
    assert after < before
    for n, p in model.named_parameters():
        if n in frozen:
            assert torch.equal(p, frozen[n]), n
