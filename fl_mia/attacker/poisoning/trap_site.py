"""Where a trap goes in the model (a ResNet encoder's stem and first residual conv) and how many
detectors fit there: light enough for the preflight to check a config before any run starts."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn


@dataclass(frozen=True)
class TrapSite:
    """Where the trap goes: the stem conv/norm and the first residual conv/norm of a ResNet encoder."""

    stem_conv: str
    stem_norm: str
    detector_conv: str
    detector_norm: str

    @classmethod
    def of(cls, model: nn.Module) -> "TrapSite":
        site = cls("encoder.conv1", "encoder.bn1", "encoder.layer1.0.conv1", "encoder.layer1.0.bn1")
        modules = dict(model.named_modules())
        kinds = {site.stem_conv: nn.Conv2d, site.stem_norm: nn.GroupNorm, site.detector_conv: nn.Conv2d, site.detector_norm: nn.GroupNorm}
        for name, kind in kinds.items():
            if not isinstance(modules.get(name), kind):
                raise ValueError(
                    f"threat.poisoning=trap_weights needs {name} to be a {kind.__name__} "
                    "(a ResNet-family encoder with model.norm = 'groupnorm')"
                )
        if modules[site.detector_conv].in_channels != modules[site.stem_conv].out_channels:
            raise ValueError("threat.poisoning=trap_weights: encoder.layer1.0.conv1 must read the stem's channels")
        if modules[site.detector_norm].num_channels // modules[site.detector_norm].num_groups < 2:
            raise ValueError("threat.poisoning=trap_weights needs GroupNorm groups of at least two channels")
        return site

    def modules(self, model: nn.Module) -> tuple[nn.Conv2d, nn.GroupNorm, nn.Conv2d, nn.GroupNorm]:
        named = dict(model.named_modules())
        return named[self.stem_conv], named[self.stem_norm], named[self.detector_conv], named[self.detector_norm]

    def capacity(self, model: nn.Module) -> int:
        """Detectors that fit in one model: one per GroupNorm group of the detector layer."""
        return self.modules(model)[3].num_groups

    def group_keys(self) -> tuple[str, str, str]:
        """State-dict keys whose rows of a detector's group carry its trace."""
        return f"{self.detector_conv}.weight", f"{self.detector_norm}.weight", f"{self.detector_norm}.bias"


def check_capacity(model: nn.Module, detectors_per_round: int, *, poisoner: str = "trap_weights") -> int:
    """The detectors one model holds; ``ValueError`` naming ``poisoner``'s config field if asked for more."""
    site = TrapSite.of(model)
    capacity = site.capacity(model)
    if detectors_per_round > capacity:
        raise ValueError(
            f"threat.{poisoner}.detectors_per_round = {detectors_per_round} exceeds the {capacity} GroupNorm groups of "
            f"{site.detector_conv}; use at most {capacity} and spread candidates over more threat.poison_rounds"
        )
    return capacity
