"""A model whose own code freezes parameters: its stem, a middle block and the head's bias.

    layerprof layers examples/audit/user_frozen.py:model --input-shape 16 --num-classes 10
    layerprof estimate examples/audit/user_frozen.py:model --input-shape 16 --num-classes 10 --target cpu

2,986 parameters, of which the user trains 1,376 (block1 and the head's weight). layerprof keeps the user's
`requires_grad=False` at every z: the profile's rows count 1,376 trainable parameters at full training, and
AdamW holds state for those alone (11,020 bytes, not 23,920).
"""

from __future__ import annotations

from torch import nn


def model() -> nn.Module:
    """stem 544, block1 1,056, block2 1,056, head 330 parameters; stem, block2 and head.bias frozen."""
    net = nn.Sequential()
    net.add_module("stem", nn.Linear(16, 32))
    net.add_module("act0", nn.ReLU())
    net.add_module("block1", nn.Linear(32, 32))
    net.add_module("act1", nn.ReLU())
    net.add_module("block2", nn.Linear(32, 32))
    net.add_module("act2", nn.ReLU())
    net.add_module("head", nn.Linear(32, 10))
    net.stem.requires_grad_(False)
    net.block2.requires_grad_(False)
    net.head.bias.requires_grad_(False)
    return net
