"""Window, grid, linear and kv-pool attention against explicit references, and wired through the ViT."""

import pytest
import torch
import torch.nn.functional as F

from model import ConfigError, ViT, ViTConfig, count_parameters, forward_with_attention
from model.attention import Attention
from model.checkpoint import CheckpointMeta, load_checkpoint, save_checkpoint
from model.efficient_attention import GridAttention, KVPoolAttention, LinearAttention, WindowAttention
from model.meta import CheckpointError
from model.onnx_export import export_onnx

DIM, HEADS = 16, 2
MEAN = ViTConfig(patch_size=4, dim=DIM, depth=2, heads=HEADS, pool="mean")  # grid 7


def _qkv(module, x_q, x_kv):
    """(B, heads, N, d) queries from ``x_q``, keys and values from ``x_kv``, by the module's qkv layer."""

    def split(t):
        B, N, _ = t.shape
        return t.reshape(B, N, 3, module.heads, module.head_dim).permute(2, 0, 3, 1, 4)

    return split(module.qkv(x_q))[0], *split(module.qkv(x_kv))[1:]


def _softmax_reference(module, x_q, x_kv=None, allowed=None):
    """Explicit softmax attention with an optional (N, M) boolean mask of allowed pairs."""
    x_kv = x_q if x_kv is None else x_kv
    q, k, v = _qkv(module, x_q, x_kv)
    scores = q @ k.transpose(-2, -1) / module.head_dim**0.5
    if allowed is not None:
        scores = scores.masked_fill(~allowed, float("-inf"))
    out = scores.softmax(-1) @ v
    B, _, N, _ = out.shape
    return module.proj(out.transpose(1, 2).reshape(B, N, -1))


def _copied(module, reference):
    module.load_state_dict(reference.state_dict())  # strict: same parameter names and shapes
    return module.eval()


@torch.no_grad()
def test_window_attention_with_one_window_is_full_attention():
    torch.manual_seed(0)
    full = Attention(DIM, HEADS).eval()
    window = _copied(WindowAttention(DIM, HEADS, grid=4, window=4, shifted=True), full)
    x = torch.randn(2, 16, DIM)
    torch.testing.assert_close(window(x)[0], full(x)[0], rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_window_attention_is_local():
    torch.manual_seed(0)
    module = WindowAttention(DIM, HEADS, grid=8, window=4).eval()
    x = torch.randn(1, 64, DIM)
    y = x.clone()
    y[0, 1 * 8 + 2] += 1.0  # row 1, column 2: the top-left window
    diff = (module(y)[0] - module(x)[0]).abs().amax(-1).reshape(8, 8)
    inside = torch.zeros(8, 8, dtype=torch.bool)
    inside[:4, :4] = True
    assert (diff[inside] > 1e-4).all()
    assert (diff[~inside] == 0).all()


@torch.no_grad()
def test_shifted_window_attention_matches_masked_attention_on_the_rolled_grid():
    torch.manual_seed(0)
    g, w, s = 8, 4, 2
    module = WindowAttention(DIM, HEADS, grid=g, window=w, shifted=True).eval()
    x = torch.randn(2, g * g, DIM)
    rolled = torch.roll(x.reshape(2, g, g, DIM), shifts=(-s, -s), dims=(1, 2)).reshape(2, g * g, DIM)
    # label each rolled position by its window and by whether the roll wrapped it around the border
    r, c = torch.meshgrid(torch.arange(g), torch.arange(g), indexing="ij")
    labels = torch.stack([r // w, c // w, r >= g - s, c >= g - s], dim=-1).reshape(g * g, 4)
    allowed = (labels[:, None, :] == labels[None, :, :]).all(-1)  # (N, N)
    assert not allowed.all(-1).any()  # the mask takes something away from every token
    expected = _softmax_reference(module, rolled, allowed=allowed)
    expected = torch.roll(expected.reshape(2, g, g, DIM), shifts=(s, s), dims=(1, 2)).reshape(2, g * g, DIM)
    torch.testing.assert_close(module(x)[0], expected, rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_grid_attention_attends_to_the_tokens_a_stride_apart():
    torch.manual_seed(0)
    g, w = 8, 4  # groups of 4 x 4 tokens, 2 patches apart
    module = GridAttention(DIM, HEADS, grid=g, window=w).eval()
    x = torch.randn(2, g * g, DIM)
    r, c = torch.meshgrid(torch.arange(g), torch.arange(g), indexing="ij")
    group = ((r % (g // w)) * g + c % (g // w)).reshape(g * g)
    allowed = group[:, None] == group[None, :]  # (N, N): same row and column modulo the stride
    assert int(allowed.sum(-1).max()) == w * w
    expected = _softmax_reference(module, x, allowed=allowed)
    torch.testing.assert_close(module(x)[0], expected, rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_grid_attention_with_one_group_is_full_attention():
    torch.manual_seed(0)
    full = Attention(DIM, HEADS).eval()
    grid = _copied(GridAttention(DIM, HEADS, grid=4, window=4), full)
    x = torch.randn(2, 16, DIM)
    torch.testing.assert_close(grid(x)[0], full(x)[0], rtol=1e-5, atol=1e-5)


def test_vit_with_grid_attention_alternates_local_windows_and_the_dilated_grid():
    model = ViT(MEAN.replace(patch_size=2, depth=4, attention="grid"))  # grid 14, windows of 7
    kinds = [type(block.attn).__name__ for block in model.blocks]
    assert kinds == ["WindowAttention", "GridAttention", "WindowAttention", "GridAttention"]
    assert all(block.attn.shift == 0 for block in model.blocks[::2])


@torch.no_grad()
def test_linear_attention_matches_the_quadratic_form():
    torch.manual_seed(0)
    module = LinearAttention(DIM, HEADS).eval()
    x = torch.randn(2, 49, DIM)
    q, k, v = _qkv(module, x, x)
    similarity = (F.elu(q) + 1) @ (F.elu(k) + 1).transpose(-2, -1)  # (B, h, N, N)
    out = (similarity / similarity.sum(-1, keepdim=True)) @ v
    expected = module.proj(out.transpose(1, 2).reshape(2, 49, DIM))
    torch.testing.assert_close(module(x)[0], expected, rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_kvpool_attention_with_pool_one_is_full_attention():
    torch.manual_seed(0)
    full = Attention(DIM, HEADS).eval()
    pooled = _copied(KVPoolAttention(DIM, HEADS, grid=6, pool=1), full)
    x = torch.randn(2, 36, DIM)
    torch.testing.assert_close(pooled(x)[0], full(x)[0], rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_kvpool_attention_attends_to_pooled_tokens():
    torch.manual_seed(0)
    g, p = 6, 2
    module = KVPoolAttention(DIM, HEADS, grid=g, pool=p).eval()
    x = torch.randn(2, g * g, DIM)
    grid = x.reshape(2, g, g, DIM)
    cells = [grid[:, i : i + p, j : j + p].mean(dim=(1, 2)) for i in range(0, g, p) for j in range(0, g, p)]
    expected = _softmax_reference(module, x, torch.stack(cells, dim=1))
    torch.testing.assert_close(module(x)[0], expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "make",
    [
        lambda p: WindowAttention(DIM, HEADS, grid=4, window=2, shifted=True, attn_dropout=p),
        lambda p: GridAttention(DIM, HEADS, grid=4, window=2, attn_dropout=p),
        lambda p: LinearAttention(DIM, HEADS, attn_dropout=p),
        lambda p: KVPoolAttention(DIM, HEADS, grid=4, pool=2, attn_dropout=p),
    ],
    ids=["window", "grid", "linear", "kvpool"],
)
def test_attention_dropout_acts_only_in_training(make):
    torch.manual_seed(0)
    plain = make(0.0)
    dropped = _copied(make(0.5), plain)
    x = torch.randn(2, 16, DIM)
    with torch.no_grad():
        torch.testing.assert_close(dropped.eval()(x)[0], plain.eval()(x)[0], rtol=0, atol=0)
        assert not torch.allclose(dropped.train()(x)[0], plain.train()(x)[0])


@pytest.mark.parametrize(("attention", "field"), [("window", "window"), ("grid", "window"), ("kvpool", "kv_pool")])
def test_vit_with_one_window_or_unpooled_keys_is_the_full_attention_vit(attention, field):
    torch.manual_seed(0)
    full = ViT(MEAN).eval()
    other = _copied(ViT(MEAN.replace(attention=attention, **{field: 1 if field == "kv_pool" else 7})), full)
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(other(x), full(x), rtol=1e-5, atol=1e-5)


def test_vit_shifts_the_windows_of_odd_blocks():
    model = ViT(MEAN.replace(patch_size=2, depth=3, attention="window"))  # grid 14, windows of 7
    assert [block.attn.shift for block in model.blocks] == [0, 3, 0]


@pytest.mark.slow
@pytest.mark.parametrize(
    "changes",
    [
        {"attention": "window", "window": 7},
        {"attention": "grid", "window": 7},
        {"attention": "linear"},
        {"attention": "kvpool", "kv_pool": 2},
    ],
)
def test_vit_at_784_tokens_trains_with_the_parameters_of_full_attention(changes):
    cfg = ViTConfig(image_size=56, patch_size=2, dim=16, depth=2, heads=2, mlp_ratio=1.0, pool="mean")
    assert cfg.num_patches == 784
    torch.manual_seed(0)
    model = ViT(cfg.replace(**changes))
    assert count_parameters(model) == count_parameters(ViT(cfg))
    # one smooth random image per class: the class prior cannot lower the loss below its start, ln 10
    x, y = F.interpolate(torch.randn(10, 1, 4, 4), size=56), torch.arange(10)
    model(x[:2]).sum().backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.75 * losses[0]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"attention": "window", "window": 3}, r"window \(3\) must divide grid_size \(7"),
        ({"attention": "grid", "window": 2}, r"window \(2\) must divide grid_size \(7"),
        ({"attention": "kvpool", "kv_pool": 2}, r"kv_pool \(2\) must divide grid_size \(7"),
        ({"attention": "window", "window": 0}, "window must be a positive integer"),
        ({"attention": "linear", "pool": "cls"}, "needs pool='mean'"),
        ({"attention": "kvpool", "kv_pool": 7, "impl": "timm"}, "needs impl='ours'"),
        ({"attention": "sparse"}, "attention must be one of"),
    ],
)
def test_config_errors_name_the_attention_field(changes, message):
    with pytest.raises(ConfigError, match=message):
        MEAN.replace(**changes)


def test_window_size_is_not_checked_for_other_attention():
    assert MEAN.replace(patch_size=7, attention="linear").window == 7  # grid 4: 7 does not divide it


def test_config_without_the_attention_fields_loads_as_full_attention():
    old = MEAN.to_dict()
    for name in ("attention", "window", "kv_pool"):
        del old[name]
    assert ViTConfig.from_dict(old) == MEAN
    assert MEAN.attention == "full"


def test_attention_maps_are_refused_without_full_attention():
    model = ViT(MEAN.replace(attention="window")).eval()
    with pytest.raises(ValueError, match="attention='full'"):
        model.forward_with_attention(torch.randn(1, 1, 28, 28))
    with pytest.raises(ValueError, match="attention='full'"):
        forward_with_attention(model, torch.randn(1, 1, 28, 28))


def test_export_refuses_a_model_without_attention_maps(tmp_path):
    cfg = MEAN.replace(attention="linear")
    save_checkpoint(tmp_path / "m.safetensors", ViT(cfg), CheckpointMeta(cfg))
    ckpt = load_checkpoint(tmp_path / "m.safetensors")
    assert ckpt.meta.config == cfg
    with pytest.raises(CheckpointError, match="only attention='full' models can be exported"):
        export_onnx(ckpt)
    assert not (tmp_path / "m.onnx").exists()
