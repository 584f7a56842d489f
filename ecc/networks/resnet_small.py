"""A small residual network as a factory of the crowding sweeps: copy this file and change it.

A factory takes what the stimulus gives (num_classes, in_chans, input_size; view if it wants it)
and its own keyword arguments from the sweep (here `width` and `blocks`), and returns an
nn.Module mapping a float batch (B, in_chans, input_size, input_size) to (B, num_classes) logits.
Use it in a sweep as ModelConfig(factory="path/to/resnet_small.py:make", factory_kwargs={"width": 16}).

No batch norm and a global max-pool, as the paper's networks: trained with the study's Adagrad at
lr 0.1 (measured on the quick sweep's field, one epoch), batch norm reached train/acc 0.80 but its
running statistics lagged the weights (val/acc 0.21, chance), and an average-pooled head stayed at
chance (the digit fills a small part of a mostly black input); this one reached val/acc 0.95.
"""

from torch import nn


class Block(nn.Module):
    """Two 3x3 convolutions added to the input (a 1x1 projection when the shape changes); the second
    starts at zero, so every block starts as the identity."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1), nn.ReLU(),
                                  nn.Conv2d(c_out, c_out, 3, 1, 1))
        nn.init.zeros_(self.body[2].weight)
        self.skip = nn.Identity() if stride == 1 and c_in == c_out else nn.Conv2d(c_in, c_out, 1, stride)

    def forward(self, x):  # (B, C, H, W) -> (B, C', H / stride, W / stride)
        return (self.body(x) + self.skip(x)).relu()


def make(num_classes: int, in_chans: int, input_size: int, width: int = 16, blocks: int = 2) -> nn.Module:
    """A stem, `blocks` stages (each after the first halving the map and doubling the width), a global
    max-pool and a linear layer. input_size is not needed: the pool takes any map size."""
    layers = [nn.Conv2d(in_chans, width, 3, 1, 1), nn.ReLU()]
    c = width
    for i in range(blocks):
        layers.append(Block(c, width * 2**i, stride=1 if i == 0 else 2))
        c = width * 2**i
    return nn.Sequential(*layers, nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(c, num_classes))
