"""A small residual network as a factory of the crowding sweeps: copy this file and change it.

A factory takes what the stimulus gives (num_classes, in_chans, input_size; view if it wants it)
and its own keyword arguments from the sweep (here `width` and `blocks`), and returns an
nn.Module mapping a float batch (B, in_chans, input_size, input_size) to (B, num_classes) logits.
Use it in a sweep as ModelConfig(factory="path/to/resnet_small.py:make", factory_kwargs={"width": 16}).
"""

from torch import nn


class Block(nn.Module):
    """Two 3x3 convolutions with batch norm, added to the input (1x1 projection when the shape changes)."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
            nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False), nn.BatchNorm2d(c_out))
        self.skip = (nn.Identity() if stride == 1 and c_in == c_out
                     else nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)))

    def forward(self, x):  # (B, C, H, W) -> (B, C', H / stride, W / stride)
        return (self.body(x) + self.skip(x)).relu()


def make(num_classes: int, in_chans: int, input_size: int, width: int = 16, blocks: int = 2) -> nn.Module:
    """A stem, `blocks` stages (each halving the map and doubling the width after the first), a global
    average pool and a linear layer. input_size is not needed: the pool takes any map size."""
    layers = [nn.Conv2d(in_chans, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
    c = width
    for i in range(blocks):
        layers.append(Block(c, width * 2**i, stride=1 if i == 0 else 2))
        c = width * 2**i
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, num_classes))
