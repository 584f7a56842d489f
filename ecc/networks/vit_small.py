"""A small vision transformer as a factory of the crowding sweeps: copy this file and change it.

Patches of `patch` x `patch` pixels become tokens; a class token and learned positions join them;
`depth` encoder layers; the class token's output gives the logits. Use it in a sweep as
ModelConfig(factory="path/to/vit_small.py:make", view="field", factory_kwargs={"patch": 4}).
"""

import torch
from torch import nn


class ViT(nn.Module):
    def __init__(self, num_classes: int, in_chans: int, input_size: int, patch: int, dim: int, depth: int,
                 heads: int) -> None:
        super().__init__()
        if input_size % patch:
            raise ValueError(f"input_size {input_size} is not a multiple of patch {patch}")
        tokens = (input_size // patch) ** 2
        self.embed = nn.Conv2d(in_chans, dim, patch, patch)  # one token per patch
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.randn(1, tokens + 1, dim) * 0.02)
        layer = nn.TransformerEncoderLayer(dim, heads, 2 * dim, dropout=0.0, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x):  # (B, C, H, W) -> (B, num_classes)
        x = self.embed(x).flatten(2).transpose(1, 2)  # (B, tokens, dim)
        x = torch.cat([self.cls.expand(len(x), -1, -1), x], dim=1) + self.pos  # (B, tokens + 1, dim)
        x = self.encoder(x)
        return self.head(self.norm(x[:, 0]))  # the class token


def make(num_classes: int, in_chans: int, input_size: int, patch: int = 4, dim: int = 64, depth: int = 2,
         heads: int = 4) -> nn.Module:
    return ViT(num_classes, in_chans, input_size, patch, dim, depth, heads)
