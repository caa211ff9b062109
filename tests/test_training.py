import math

import pytest
import torch

from lora_merge_utils import TINY, load_task, train_adapter, train_head
from lora_merge_utils.scoring import head_accuracy


def test_train_head_learns_separable_features():
    torch.manual_seed(0)
    labels = torch.arange(200) % 4
    features = torch.randn(200, 16) * 0.1 + torch.nn.functional.one_hot(labels, 16).float()
    head, result = train_head(features, labels, 4, seed=0)
    assert head_accuracy(head, features, labels) == 1.0
    assert result.loss_curve[-1] < 0.5 < math.log(4), "fitted to convergence, far below the loss of chance"


def test_train_adapter_trains_only_lora_and_head(backbone, mini_profile):
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    task = load_task(mini_profile, "shapes")
    model, head, result = train_adapter(backbone, task.train, task.num_classes, mini_profile, seed=0, progress=False)
    for name, tensor in backbone.state_dict().items():
        assert torch.equal(tensor, before[name]), f"backbone {name} changed"
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert all(".blocks." in n for n in trainable), "the patch-embedding conv must not get LoRA"
    changed = [n for n, p in model.named_parameters() if "lora_B" in n and p.abs().sum() > 0]
    assert changed, "LoRA B factors moved away from zero"
    assert len(result.loss_curve) == -(-len(task.train) // mini_profile.train.batch_size)


def test_train_adapter_is_deterministic(backbone, mini_profile):
    task = load_task(mini_profile, "gratings")
    runs = [
        train_adapter(backbone, task.train, task.num_classes, mini_profile, seed=3, progress=False) for _ in range(2)
    ]
    for (n1, p1), (_, p2) in zip(runs[0][0].named_parameters(), runs[1][0].named_parameters()):
        assert torch.equal(p1, p2), n1
    assert torch.equal(runs[0][1].weight, runs[1][1].weight)


def test_lora_targets_match_the_blocks_only(backbone):
    import re

    names = [n for n, _ in backbone.named_modules() if re.fullmatch(TINY.lora.target_modules, n)]
    assert "patch_embed.proj" not in names
    assert len(names) == 4 * len(backbone.blocks)


@pytest.fixture(scope="module")
def tiny_features(backbone):
    from lora_merge_utils import extract_features

    features = {}
    for name in TINY.tasks:
        task = load_task(TINY, name)
        features[name] = {split: extract_features(backbone, task.split(split)) for split in ("train", "val", "test")}
    return features


@pytest.mark.parametrize("name", TINY.tasks)
def test_head_only_baseline_matches_a_well_tuned_logistic_regression(tiny_features, name):
    """The baseline every merge must beat is not under-trained: on every tiny task it is within one point of
    scikit-learn's logistic regression on the same standardised features, its C chosen on the same validation
    split from a wide grid."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    f = tiny_features[name]
    (x, y), (xv, yv), (xt, yt) = f["train"], f["val"], f["test"]
    ours, _ = train_head(x, y, int(y.max()) + 1, TINY.train, val=(xv, yv))
    candidates = [
        make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=3000)).fit(x.numpy(), y.numpy())
        for c in (0.01, 0.1, 1.0, 10.0, 100.0)
    ]
    reference = max(candidates, key=lambda m: m.score(xv.numpy(), yv.numpy())).score(xt.numpy(), yt.numpy())
    assert head_accuracy(ours, xt, yt) >= reference - 0.01, (head_accuracy(ours, xt, yt), reference)
