"""The small CNN that learned attacks train on shadow outputs (member vs non-member)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from fl_mia.seeding import int_seed, torch_generator


class MembershipCNN(nn.Module):
    """Three conv blocks, global average pooling, one logit (member)."""

    def __init__(self, in_channels: int, width: int = 16) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
        )
        self.head = nn.Linear(2 * width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))[:, 0]


def train_membership_cnn(
    inputs: torch.Tensor, labels: np.ndarray, *, epochs: int, lr: float, batch_size: int, seed: int, name: str
) -> MembershipCNN:
    """Fit a :class:`MembershipCNN` with BCE; initialisation and order come from named streams."""
    torch.manual_seed(int_seed(seed, "attack-classifier-init", name))
    generator = torch_generator(seed, "attack-classifier-order", name)
    model = MembershipCNN(inputs.shape[1])
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    targets = torch.as_tensor(labels, dtype=torch.float32)
    # Balance the classes in the loss: shadow member and non-member counts may differ.
    positives = float(targets.sum())
    pos_weight = torch.tensor((len(targets) - positives) / max(positives, 1.0))
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=pos_weight)
    model.train()
    for _ in range(epochs):
        for index in torch.randperm(len(inputs), generator=generator).split(batch_size):
            optimizer.zero_grad(set_to_none=True)
            loss_fn(model(inputs[index]), targets[index]).backward()
            optimizer.step()
    model.eval()
    return model


@torch.no_grad()
def classifier_logits(model: MembershipCNN, inputs: torch.Tensor, *, batch_size: int = 256) -> np.ndarray:
    model.eval()
    return torch.cat([model(inputs[i : i + batch_size]) for i in range(0, len(inputs), batch_size)]).numpy().astype(
        np.float64
    )
