import pytest
import torch
from torch import nn

from lora_merge_utils import MultiTaskModel


def test_one_backbone_pass_gives_logits_for_every_task(backbone):
    calls = []
    hook = backbone.register_forward_hook(lambda *_: calls.append(1))
    heads = {"a": nn.Linear(96, 3), "b": nn.Linear(96, 5)}
    model = MultiTaskModel(backbone, heads)
    out = model(torch.randn(4, 3, 32, 32))
    hook.remove()
    assert {k: v.shape for k, v in out.items()} == {"a": (4, 3), "b": (4, 5)}
    assert len(calls) == 1
    assert model(torch.randn(1, 3, 32, 32), tasks=["b"]).keys() == {"b"}
    assert model.heads["a"] is not heads["a"], "heads are copied, the caller's are never changed"


def test_head_of_another_width_is_refused(backbone):
    with pytest.raises(ValueError, match="expects 64 features"):
        MultiTaskModel(backbone, {"a": nn.Linear(64, 3)})
