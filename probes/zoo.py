"""The MobileNetV2 family that the toolkit studies.

A faithful re-implementation of the inverted-residual network of Sandler et al. (2018),
"MobileNetV2: Inverted Residuals and Linear Bottlenecks", with the paper's ablations as options.

Block (paper Table 1)::

    x (C_in) -> expand:    1x1 conv (C_in -> t*C_in) + BN + ReLU6      (absent when t == 1)
             -> depthwise: 3x3 conv, groups = t*C_in, stride s + BN + ReLU6
             -> project:   1x1 conv (t*C_in -> C_out) + BN + <bottleneck activation>
             -> + x        (``shortcut="bottleneck"``, only when s == 1 and C_in == C_out)

The bottleneck activation is ``"linear"`` in the paper (no activation: ``nn.Identity``);
``"relu6"`` is the paper's "ReLU in bottleneck" ablation (Fig. 6a); ``"relu"``,
``"leaky_relu"`` and ``"hswish"`` are further variants. It can also be given per block
(a schedule), e.g. :data:`SCHEDULES` ``"partial"``: ReLU6 after every projection except the
last block, which stays linear.

Shortcut modes (paper Fig. 6b):

- ``"bottleneck"`` (paper): identity shortcut between the thin bottleneck tensors.
- ``"expansion"``: identity shortcut between the *expanded* tensors. We implement it inside
  the block, around the depthwise stage (``depthwise_out + expand_out``, both t*C_in wide), when
  s == 1 and t > 1; the thin bottleneck then has no shortcut. This is the local form of the
  paper's "shortcut between expansions"; the paper does not give its exact wiring.
- ``"none"``: no shortcut at all.

Stage configuration (paper Table 2, ``(t, c, n, s)``)::

    (1,16,1,1) (6,24,2,2) (6,32,3,2) (6,64,4,2) (6,96,3,1) (6,160,3,2) (6,320,1,1)

after a 3x3 stride-2 stem conv with 32 channels, then a 1x1 conv to 1280 channels.

**Strides for 32x32 inputs.** The paper's strides reduce 224 px by 32x (to 7x7). For small
inputs (``input_size <= 64``) the second stage ``(6,24,2,2)`` gets stride 1, so the total
stride is 16 and a 32 px input runs 32 -> 16 (stem) -> 16 -> 16 -> 8 -> 4 -> 4 -> 2 -> 2; the
stem keeps stride 2 (a stride-1 stem quadruples the cost of every block on CPU).
:func:`stage_config` returns the config actually used. ``head_channels`` defaults to the paper's 1280 scaled by ``width_mult``
when ``width_mult > 1`` (torchvision's rule) and may be set lower to keep small checkpoints small.

Every block names its parts (``expand``, ``depthwise``, ``project``, each with ``conv``,
``bn``, ``act``; ``nn.Identity`` where absent), so hooks never depend on ``Sequential`` indices.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from probes.activations import ACTIVATIONS
from probes.activations import make_activation as _make_activation

__all__ = [
    "ACTIVATIONS",
    "PAPER_STAGES",
    "SCHEDULES",
    "SHORTCUTS",
    "ConvBNAct",
    "InvertedResidual",
    "MobileNetV2",
    "ZooConfig",
    "build_model",
    "make_activation",
    "resolve_schedule",
    "stage_config",
]

#: Paper Table 2: (expansion t, output channels c, repeats n, first stride s).
PAPER_STAGES: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


#: Shortcut modes (paper Fig. 6b).
SHORTCUTS: tuple[str, ...] = ("bottleneck", "expansion", "none")

#: Named per-block bottleneck-activation schedules.
SCHEDULES: tuple[str, ...] = ("partial", "partial_reverse")


def make_activation(name: str) -> nn.Module:
    """Return a fresh activation module for ``name`` (one of :data:`ACTIVATIONS`).

    ``"linear"`` gives ``nn.Identity`` so that the slot can still be hooked.
    """
    if name in ACTIVATIONS:
        return _make_activation(name)
    raise ValueError(
        f"The 'bottleneck_act' parameter must be one of {list(ACTIVATIONS)} (or a schedule "
        f"{list(SCHEDULES)}, or a per-block list of those). Got {name!r} instead."
    )


def _make_divisible(value: float, divisor: int = 8) -> int:
    """Round channels to a multiple of ``divisor`` without going below 90 % (torchvision rule)."""
    new = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if new < 0.9 * value:
        new += divisor
    return new


@dataclasses.dataclass(frozen=True)
class ZooConfig:
    """Architecture of one member of the family; JSON round-trips through :meth:`to_dict`.

    Parameters
    ----------
    bottleneck_act : str or tuple of str
        Activation after every projection (one of :data:`ACTIVATIONS`), a schedule name from
        :data:`SCHEDULES`, or one activation per block.
    expand_ratio : int
        Expansion factor t of every block whose paper value is 6 (paper: 6). The first stage
        keeps t = 1 as in the paper.
    width_mult : float
        Channel multiplier (paper: 1.0).
    shortcut : str
        One of :data:`SHORTCUTS`.
    in_channels, input_size, num_classes : int
        Input image channels and side, number of output classes.
    head_channels : int or None
        Channels of the final 1x1 conv; ``None`` means the paper's 1280 (x width_mult if > 1).
    dropout : float
        Dropout before the classifier (paper: 0.2).
    """

    bottleneck_act: str | tuple[str, ...] = "linear"
    expand_ratio: int = 6
    width_mult: float = 1.0
    shortcut: str = "bottleneck"
    in_channels: int = 3
    input_size: int = 224
    num_classes: int = 1000
    head_channels: int | None = None
    dropout: float = 0.2

    def __post_init__(self) -> None:
        if isinstance(self.bottleneck_act, list):
            object.__setattr__(self, "bottleneck_act", tuple(self.bottleneck_act))
        if self.shortcut not in SHORTCUTS:
            raise ValueError(
                f"The 'shortcut' parameter must be one of {list(SHORTCUTS)}. "
                f"Got {self.shortcut!r} instead."
            )
        if not isinstance(self.expand_ratio, int) or self.expand_ratio < 1:
            raise ValueError(
                f"The 'expand_ratio' parameter must be an int >= 1. Got {self.expand_ratio!r} instead."
            )
        if not self.width_mult > 0:
            raise ValueError(
                f"The 'width_mult' parameter must be a float > 0. Got {self.width_mult!r} instead."
            )
        if self.input_size < 8:
            raise ValueError(
                f"The 'input_size' parameter must be >= 8. Got {self.input_size!r} instead."
            )
        resolve_schedule(self.bottleneck_act, n_blocks=self.n_blocks)

    @property
    def n_blocks(self) -> int:
        """Number of inverted-residual blocks (17 for the paper's config)."""
        return sum(n for _, _, n, _ in PAPER_STAGES)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (tuples become lists)."""
        d = dataclasses.asdict(self)
        if isinstance(d["bottleneck_act"], tuple):
            d["bottleneck_act"] = list(d["bottleneck_act"])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ZooConfig":
        """Inverse of :meth:`to_dict`; unknown keys raise a ValueError naming them."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(
                f"Unknown zoo config keys {unknown}; allowed keys are {sorted(known)}."
            )
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


def resolve_schedule(bottleneck_act: str | Sequence[str], *, n_blocks: int) -> list[str]:
    """Per-block bottleneck activations for ``bottleneck_act``.

    ``"partial"``: ``"relu6"`` after every projection except the last block (``"linear"``);
    ``"partial_reverse"``: ``"linear"`` everywhere except the last block (``"relu6"``).
    """
    if isinstance(bottleneck_act, str):
        if bottleneck_act == "partial":
            acts = ["relu6"] * (n_blocks - 1) + ["linear"]
        elif bottleneck_act == "partial_reverse":
            acts = ["linear"] * (n_blocks - 1) + ["relu6"]
        else:
            acts = [bottleneck_act] * n_blocks
    else:
        acts = list(bottleneck_act)
        if len(acts) != n_blocks:
            raise ValueError(
                f"A per-block 'bottleneck_act' schedule needs one entry per block ({n_blocks}). "
                f"Got {len(acts)} entries instead."
            )
    for a in acts:
        if a not in ACTIVATIONS:
            make_activation(a)  # raises the documented ValueError
    return acts


def stage_config(config: ZooConfig) -> list[tuple[int, int, int, int]]:
    """The (t, c, n, s) stages actually built for ``config`` (channels after width scaling).

    For ``input_size <= 64`` the second stage's stride is 1 (see module docstring).
    """
    small = config.input_size <= 64
    stages = []
    for i, (t, c, n, s) in enumerate(PAPER_STAGES):
        t_used = 1 if t == 1 else config.expand_ratio
        s_used = 1 if (small and i == 1) else s
        stages.append((t_used, _make_divisible(c * config.width_mult), n, s_used))
    return stages


class ConvBNAct(nn.Module):
    """Conv2d (no bias) + BatchNorm2d + activation, as named children ``conv``, ``bn``, ``act``."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        *,
        kernel_size: int = 1,
        stride: int = 1,
        groups: int = 1,
        act: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_ch, out_ch, kernel_size, stride, (kernel_size - 1) // 2, groups=groups, bias=False
        )
        self.bn = nn.BatchNorm2d(out_ch)
        self.act = act if act is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class InvertedResidual(nn.Module):
    """One inverted-residual block with named parts (see module docstring).

    Attributes
    ----------
    expand, depthwise, project : ConvBNAct or nn.Identity
        ``expand`` is ``nn.Identity`` when t == 1.
    use_residual : bool
        Identity shortcut around the whole block (bottleneck shortcut).
    use_expansion_residual : bool
        Identity shortcut around the depthwise stage (expansion shortcut).
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        *,
        stride: int,
        expand_ratio: int,
        bottleneck_act: str = "linear",
        shortcut: str = "bottleneck",
    ) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"The 'stride' parameter must be 1 or 2. Got {stride!r} instead.")
        hidden = in_ch * expand_ratio
        self.in_channels, self.hidden_channels, self.out_channels = in_ch, hidden, out_ch
        self.stride, self.expand_ratio, self.bottleneck_act = stride, expand_ratio, bottleneck_act
        self.expand: nn.Module = (
            ConvBNAct(in_ch, hidden, act=nn.ReLU6(inplace=True)) if expand_ratio != 1 else nn.Identity()
        )
        self.depthwise = ConvBNAct(
            hidden, hidden, kernel_size=3, stride=stride, groups=hidden, act=nn.ReLU6(inplace=True)
        )
        self.project = ConvBNAct(hidden, out_ch, act=make_activation(bottleneck_act))
        self.use_residual = shortcut == "bottleneck" and stride == 1 and in_ch == out_ch
        self.use_expansion_residual = shortcut == "expansion" and stride == 1 and expand_ratio != 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.expand(x)
        d = self.depthwise(h)
        if self.use_expansion_residual:
            d = d + h
        y = self.project(d)
        if self.use_residual:
            y = y + x
        return y


class MobileNetV2(nn.Module):
    """MobileNetV2 of the paper with the ablation options of :class:`ZooConfig`.

    Children: ``stem`` (ConvBNAct), ``blocks`` (ModuleList of :class:`InvertedResidual`),
    ``head`` (1x1 ConvBNAct), ``pool``, ``dropout``, ``classifier``.

    Examples
    --------
    >>> m = MobileNetV2(ZooConfig(input_size=32, num_classes=10, width_mult=0.5))
    >>> m(torch.zeros(2, 3, 32, 32)).shape
    torch.Size([2, 10])
    """

    def __init__(self, config: ZooConfig | None = None) -> None:
        super().__init__()
        config = config or ZooConfig()
        self.config = config
        stem_ch = _make_divisible(32 * config.width_mult)
        self.stem = ConvBNAct(
            config.in_channels, stem_ch, kernel_size=3, stride=2,
            act=nn.ReLU6(inplace=True),
        )
        acts = resolve_schedule(config.bottleneck_act, n_blocks=config.n_blocks)
        blocks: list[nn.Module] = []
        c_in = stem_ch
        for t, c, n, s in stage_config(config):
            for j in range(n):
                blocks.append(
                    InvertedResidual(
                        c_in, c, stride=s if j == 0 else 1, expand_ratio=t,
                        bottleneck_act=acts[len(blocks)], shortcut=config.shortcut,
                    )
                )
                c_in = c
        self.blocks = nn.ModuleList(blocks)
        head_ch = config.head_channels or _make_divisible(1280 * max(1.0, config.width_mult))
        self.head = ConvBNAct(c_in, head_ch, act=nn.ReLU6(inplace=True))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(config.dropout)
        self.classifier = nn.Linear(head_ch, config.num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        # torchvision's MobileNetV2 initialisation.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        return self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.features(x)).flatten(1)
        return self.classifier(self.dropout(x))


def build_model(config: ZooConfig | dict[str, Any] | None = None, **overrides: Any) -> MobileNetV2:
    """Build a :class:`MobileNetV2` from a config (object or dict) with keyword overrides."""
    if config is None:
        config = ZooConfig()
    elif isinstance(config, dict):
        config = ZooConfig.from_dict(config)
    if overrides:
        config = dataclasses.replace(config, **overrides)
    return MobileNetV2(config)
