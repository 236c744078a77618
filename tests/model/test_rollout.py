import numpy as np
import torch

from model import ViT, ViTConfig, attention_rollout, cls_attention


def _one_layer(rows: list[list[float]]) -> torch.Tensor:
    return torch.tensor(rows).reshape(1, 1, 1, len(rows), len(rows))


def test_rollout_one_layer_by_hand():
    # CLS + 4 patches (a 2x2 grid). CLS row attends 0.2 to itself and 0.1/0.3/0.2/0.2 to patches.
    a = [[0.2, 0.1, 0.3, 0.2, 0.2]] + [[0.2] * 5] * 4
    # rollout: (A + I) / 2 row-normalised -> CLS row [0.6, 0.05, 0.15, 0.1, 0.1]; patches
    # renormalised to sum 1: [0.125, 0.375, 0.25, 0.25]
    grid = attention_rollout(_one_layer(a))
    np.testing.assert_allclose(grid, [[[0.125, 0.375], [0.25, 0.25]]], rtol=1e-6)


def test_rollout_two_layers_multiplies_in_order():
    # Layer 1: every token attends fully to patch 1. Layer 2: CLS attends fully to patch 2.
    n = 5
    first = torch.zeros(n, n)
    first[:, 1] = 1.0
    second = torch.eye(n)
    second[0] = 0
    second[0, 2] = 1.0
    attn = torch.stack([first, second])[None, :, None]  # (1, L=2, h=1, n, n)
    grid = attention_rollout(attn)
    # by hand: A1 = (first+I)/2, A2 = (second+I)/2; CLS row of A2 @ A1 over patches, renormalised
    a1, a2 = (first + torch.eye(n)) / 2, (second + torch.eye(n)) / 2
    expected = (a2 @ a1)[0, 1:]
    np.testing.assert_allclose(grid.flatten(), (expected / expected.sum()).numpy(), rtol=1e-6)
    assert grid.flatten().argmax() == 0  # patch 1 gets the most: it is what layer 1 mixed in


def test_rollout_normalises_over_keys_not_queries():
    # Rows sum to 1 but columns do not; normalising the wrong axis would change the answer.
    a = [[0.7, 0.3, 0.0, 0.0, 0.0]] + [[0.0, 0.0, 0.0, 0.0, 1.0]] * 4
    grid = attention_rollout(_one_layer(a)).flatten()
    np.testing.assert_allclose(grid, [1.0, 0.0, 0.0, 0.0], atol=1e-7)


def test_cls_attention_last_layer_and_mean_pool():
    model = ViT(ViTConfig(dim=16, depth=2, heads=2)).eval()
    with torch.no_grad():
        _, attn = model.forward_with_attention(torch.randn(2, 1, 28, 28))
    per_head = cls_attention(attn)
    assert per_head.shape == (2, 2, 7, 7)
    np.testing.assert_allclose(per_head.sum((-1, -2)), np.ones((2, 2)), rtol=1e-5)
    rollout = attention_rollout(attn)
    assert rollout.shape == (2, 7, 7)
    mean_model = ViT(ViTConfig(dim=16, depth=2, heads=2, pool="mean")).eval()
    with torch.no_grad():
        _, attn = mean_model.forward_with_attention(torch.randn(1, 1, 28, 28))
    assert attention_rollout(attn, num_prefix_tokens=0).shape == (1, 7, 7)
