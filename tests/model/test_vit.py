import pytest
import torch

from model import ConfigError, ViT, ViTConfig, build_model, count_parameters, forward_with_attention

SMALL = ViTConfig(patch_size=4, dim=32, depth=2, heads=4)


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"stem": "conv"},
        {"pos_embed": "sincos2d"},
        {"pos_embed": "none"},
        {"pool": "mean"},
        {"in_chans": 3},
        {"patch_size": 7},
        {"patch_size": 2},
        {"patch_size": 14},
        {"distill_token": True},
        {"distill_token": True, "pos_embed": "sincos2d"},
    ],
)
def test_vit_shapes_logits_and_attention(changes):
    cfg = SMALL.replace(**changes)
    model = ViT(cfg).eval()
    x = torch.randn(3, cfg.in_chans, 28, 28)
    _logits, attn = model.forward_with_attention(x)
    n = cfg.num_patches + cfg.num_prefix_tokens
    assert model(x).shape == (3, 10)
    assert attn.shape == (3, cfg.depth, cfg.heads, n, n)


def test_vit_attention_rows_sum_to_one():
    _, attn = ViT(SMALL).eval().forward_with_attention(torch.randn(2, 1, 28, 28))
    torch.testing.assert_close(attn.sum(-1), torch.ones(attn.shape[:-1]))
    assert (attn >= 0).all()


@pytest.mark.parametrize("changes", [{}, {"pool": "mean"}, {"stem": "conv"}, {"distill_token": True}])
def test_vit_fused_and_explicit_attention_give_same_logits(changes):
    model = ViT(SMALL.replace(**changes)).eval()
    x = torch.randn(4, 1, 28, 28)
    fused = model(x)
    explicit, _ = model.forward_with_attention(x)
    torch.testing.assert_close(fused, explicit, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("changes", [{}, {"distill_token": True}])
def test_vit_every_parameter_gets_a_gradient(changes):
    model = ViT(SMALL.replace(stem="conv", drop_path=0.1, **changes))
    model(torch.randn(4, 1, 28, 28)).sum().backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


def test_vit_distillation_token_has_its_own_head_and_serves_the_mean_of_both():
    model = ViT(SMALL.replace(distill_token=True)).eval()
    plain = ViT(SMALL)
    # the token, its position and its head
    assert count_parameters(model) - count_parameters(plain) == SMALL.dim * 2 + SMALL.dim * 10 + 10
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        labels_head, teacher_head = model(x, both_heads=True)
        served = model(x)
    assert not torch.allclose(labels_head, teacher_head)  # two heads on two tokens
    torch.testing.assert_close(served, (labels_head + teacher_head) / 2)


def test_vit_distillation_token_needs_a_class_token():
    with pytest.raises(ConfigError, match="distill_token needs impl='ours' and pool='cls'"):
        SMALL.replace(distill_token=True, pool="mean")


def test_vit_sincos_positions_are_fixed_not_trained():
    model = ViT(SMALL.replace(pos_embed="sincos2d"))
    assert "pos_table" in model.state_dict()
    assert not any("pos" in name for name, _ in model.named_parameters())


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"patch_size": 5}, "divisible by patch_size"),
        ({"dim": 30, "heads": 4}, "divisible by heads"),
        ({"pos_embed": "rope"}, "pos_embed must be one of"),
        ({"stem": "conv", "patch_size": 7}, "power of two"),
        ({"in_chans": 2}, "in_chans"),
        ({"depth": 0}, "depth must be a positive integer"),
        ({"dropout": 1.5}, "dropout"),
        ({"impl": "timm", "stem": "conv"}, "impl='timm'"),
    ],
)
def test_config_errors_name_the_problem(changes, message):
    with pytest.raises(ConfigError, match=message):
        ViTConfig(**changes)


def test_config_from_dict_rejects_unknown_fields():
    with pytest.raises(ConfigError, match="unknown model config field"):
        ViTConfig.from_dict({"dim": 64, "width": 3})


@pytest.mark.parametrize("changes", [{}, {"in_chans": 3}, {"pool": "mean"}])
def test_timm_model_matches_ours_in_parameters_and_gives_attention(changes):
    cfg = SMALL.replace(**changes)
    ours, theirs = build_model(cfg), build_model(cfg.replace(impl="timm")).eval()
    assert count_parameters(ours) == count_parameters(theirs)
    x = torch.randn(2, cfg.in_chans, 28, 28)
    logits, attn = forward_with_attention(theirs, x)
    n = cfg.num_patches + cfg.num_prefix_tokens
    assert attn.shape == (2, cfg.depth, cfg.heads, n, n)
    torch.testing.assert_close(attn.sum(-1), torch.ones(attn.shape[:-1]))
    torch.testing.assert_close(logits, theirs(x), rtol=1e-5, atol=1e-5)
    assert all(block.attn.fused_attn == theirs.blocks[0].attn.fused_attn for block in theirs.blocks)


def test_pretrained_is_only_for_timm():
    with pytest.raises(ValueError, match="pretrained"):
        build_model(SMALL, pretrained=True)
