"""Architecture configuration of the digit classifier.

The config is data: a frozen dataclass validated at construction, stored in every checkpoint so
that inference rebuilds the exact model without any training code.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

PosEmbed = Literal["learned", "sincos2d", "none"]
Pool = Literal["cls", "mean"]
Stem = Literal["linear", "conv"]
Impl = Literal["ours", "timm"]
AttentionKind = Literal["full", "window", "grid", "linear", "kvpool"]

_CHOICES: dict[str, tuple[str, ...]] = {
    "pos_embed": ("learned", "sincos2d", "none"),
    "pool": ("cls", "mean"),
    "stem": ("linear", "conv"),
    "impl": ("ours", "timm"),
    "attention": ("full", "window", "grid", "linear", "kvpool"),
}


class ConfigError(ValueError):
    """A configuration value that cannot build a model; the message says which and why."""


@dataclass(frozen=True)
class ViTConfig:
    """Vision Transformer hyper-parameters.

    Args:
        image_size: side of the square input image in pixels (MNIST: 28).
        patch_size: side of a square patch; must divide ``image_size``. Tokens = (image/patch)^2.
        in_chans: input channels: 1 for grayscale, 3 for the digit replicated to RGB.
        num_classes: size of the classification head.
        dim: token width (embedding dimension).
        depth: number of transformer blocks.
        heads: attention heads per block; must divide ``dim``.
        mlp_ratio: hidden width of each block's MLP, as a multiple of ``dim``.
        dropout: dropout after the embedding, in the MLP and after attention's projection.
        attn_dropout: dropout on the attention probabilities.
        drop_path: stochastic-depth rate of the last block (linearly increasing from 0).
        pos_embed: ``learned`` parameters, fixed 2-D ``sincos2d``, or ``none``.
        pool: ``cls`` reads the class token; ``mean`` averages the patch tokens (no class token).
        stem: ``linear`` patch embedding (one strided conv) or a ``conv`` stem of 3x3 convolutions
            (Xiao et al. 2021); the conv stem needs a power-of-two patch size.
        impl: ``ours`` (this package's ViT) or ``timm`` (timm's VisionTransformer, for comparison).
        attention: the token mixer of every block (:mod:`model.efficient_attention`): ``full``
            softmax attention over all tokens (the only kind with attention maps), ``window``
            (Swin-style local windows, shifted in every odd block), ``grid`` (local windows in even
            blocks, a dilated grid of the same size spread over the whole picture in odd ones:
            MaxViT's block and grid attention, Tu et al. 2022), ``linear`` (kernelised,
            Katharopoulos et al. 2020) or ``kvpool`` (keys and values from average-pooled tokens,
            PVT's spatial reduction without parameters). The non-full kinds work on the patch grid,
            so they need ``impl='ours'`` and ``pool='mean'`` (no class token).
        window: side of the square attention window in patches (``window`` and ``grid``); must
            divide ``grid_size``.
        kv_pool: ``kvpool`` attention only: keys and values come from tokens averaged over
            ``kv_pool`` x ``kv_pool`` patches; must divide ``grid_size``.
        distill_token: a second prefix token with its own head, which learns from a teacher's
            answers while the class token learns from the labels (DeiT, Touvron et al. 2021); the
            logits are the mean of the two heads. Needs ``impl='ours'`` and ``pool='cls'``.
    """

    image_size: int = 28
    patch_size: int = 4
    in_chans: int = 1
    num_classes: int = 10
    dim: int = 64
    depth: int = 6
    heads: int = 4
    mlp_ratio: float = 2.0
    dropout: float = 0.0
    attn_dropout: float = 0.0
    drop_path: float = 0.0
    pos_embed: PosEmbed = "learned"
    pool: Pool = "cls"
    stem: Stem = "linear"
    impl: Impl = "ours"
    attention: AttentionKind = "full"
    window: int = 7
    kv_pool: int = 2
    distill_token: bool = False

    def __post_init__(self) -> None:
        for name, choices in _CHOICES.items():
            value = getattr(self, name)
            if value not in choices:
                raise ConfigError(f"{name} must be one of {', '.join(choices)}; got {value!r}")
        positive = ("image_size", "patch_size", "in_chans", "num_classes", "dim", "depth", "heads", "window", "kv_pool")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name} must be a positive integer; got {value!r}")
        if self.image_size % self.patch_size:
            raise ConfigError(f"image_size ({self.image_size}) must be divisible by patch_size ({self.patch_size})")
        if self.dim % self.heads:
            raise ConfigError(f"dim ({self.dim}) must be divisible by heads ({self.heads})")
        if self.in_chans not in (1, 3):
            raise ConfigError(f"in_chans must be 1 (grayscale) or 3 (RGB); got {self.in_chans}")
        if self.mlp_ratio <= 0:
            raise ConfigError(f"mlp_ratio must be positive; got {self.mlp_ratio}")
        for name in ("dropout", "attn_dropout", "drop_path"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"{name} must be in [0, 1); got {getattr(self, name)}")
        if self.stem == "conv" and self.patch_size & (self.patch_size - 1):
            raise ConfigError(
                f"the conv stem halves the image per 3x3 stride-2 conv, so patch_size must be a "
                f"power of two; got {self.patch_size} (use stem='linear')"
            )
        if self.impl == "timm" and (self.stem != "linear" or self.pos_embed != "learned"):
            raise ConfigError("impl='timm' supports only stem='linear' and pos_embed='learned'")
        if self.attention != "full":
            self._check_efficient_attention()
        if self.distill_token and (self.impl != "ours" or self.pool != "cls"):
            raise ConfigError(
                f"distill_token needs impl='ours' and pool='cls' (it sits beside the class token); "
                f"got impl={self.impl!r}, pool={self.pool!r}"
            )

    def _check_efficient_attention(self) -> None:
        """The non-full attention kinds attend over the patch grid, so the tokens must be exactly it."""
        kind = f"attention={self.attention!r}"
        if self.impl != "ours":
            raise ConfigError(f"{kind} needs impl='ours' (timm's ViT has full attention only); got impl={self.impl!r}")
        if self.pool != "mean":
            raise ConfigError(
                f"{kind} needs pool='mean': it attends over the patch grid, which a class token is not "
                f"part of; got pool={self.pool!r}"
            )
        divisors = {"window": "window", "grid": "window", "kvpool": "kv_pool"}
        if self.attention in divisors:
            name = divisors[self.attention]
            value = getattr(self, name)
            if self.grid_size % value:
                raise ConfigError(
                    f"{name} ({value}) must divide grid_size ({self.grid_size} = image_size // patch_size) for {kind}"
                )

    @property
    def grid_size(self) -> int:
        """Patches per side of the image."""
        return self.image_size // self.patch_size

    @property
    def num_patches(self) -> int:
        """Patch tokens per image."""
        return self.grid_size**2

    @property
    def num_prefix_tokens(self) -> int:
        """Tokens before the patches: the class token (none with mean pooling), then the
        distillation token if there is one."""
        return (self.pool == "cls") + self.distill_token

    def to_dict(self) -> dict[str, Any]:
        """The config as plain JSON-able data."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ViTConfig:
        """Rebuild a config, naming any unknown field instead of failing with a TypeError."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown model config field(s): {', '.join(unknown)}")
        return cls(**data)

    def replace(self, **changes: Any) -> ViTConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)
