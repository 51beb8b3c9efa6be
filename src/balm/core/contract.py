"""What every rebalancer checks about the modules it is given (the plug-in contract)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from torch import nn

TASKS = ("classification", "regression")


def encoder_parameters(encoders: Mapping[str, nn.Module], fusion_head: nn.Module) -> dict[str, list[tuple[str, nn.Parameter]]]:
    """Trainable ``(name, parameter)`` pairs of each encoder, given as explicit modules.

    Raises if a parameter is shared between two encoders or with the fusion head (its gradient
    could not be scaled by one modality's coefficient) or if an encoder has nothing to train.
    """
    owner: dict[int, str] = {}
    where: dict[int, str] = {}
    for pname, p in fusion_head.named_parameters():
        owner[id(p)], where[id(p)] = "the fusion head", pname
    out: dict[str, list[tuple[str, nn.Parameter]]] = {}
    for m, enc in encoders.items():
        if not isinstance(enc, nn.Module):
            raise TypeError(f"encoders[{m!r}] must be an nn.Module, got {type(enc).__name__}")
        params = []
        for pname, p in enc.named_parameters():
            if id(p) in owner:
                raise ValueError(
                    f"parameter {pname!r} of encoder {m!r} is shared with {owner[id(p)]} "
                    f"({where[id(p)]!r}); GRM scales each encoder's gradients by its own coefficient, "
                    "so encoders and the fusion head must not share parameters"
                )
            owner[id(p)], where[id(p)] = f"encoder {m!r}", pname
            if p.requires_grad:
                params.append((pname, p))
        if not params:
            raise ValueError(f"encoder {m!r} has no trainable parameters; there is nothing to rebalance")
        out[m] = params
    return out


def check_contract(
    encoders: Mapping[str, nn.Module],
    embed_dims: Mapping[str, int],
    fusion_head: nn.Module,
    task: str,
    num_classes: int | None,
    who: str,
) -> int:
    """Validate a rebalancer's explicit modules; returns the fusion head's ``out_features``."""
    if len(encoders) < 2:
        raise ValueError(f"{who} needs at least two modalities, got {list(encoders)}")
    if set(encoders) != set(embed_dims):
        raise ValueError(f"encoders {list(encoders)} and embed_dims {list(embed_dims)} must name the same modalities")
    for m, d in embed_dims.items():
        if not isinstance(d, int) or isinstance(d, bool) or d < 1:
            raise ValueError(f"embed_dims[{m!r}] must be a positive int, got {d!r}")
    if not isinstance(fusion_head, nn.Linear):
        raise TypeError(f"fusion_head must be an nn.Linear (F_pred), got {type(fusion_head).__name__}")
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    out = fusion_head.out_features
    if task == "regression" and out != 1:
        raise ValueError(f"regression needs a fusion head with 1 output, got out_features={out}")
    if task == "classification":
        if out < 2:
            raise ValueError(f"classification needs a fusion head with >= 2 outputs, got {out}")
        if num_classes is not None and num_classes != out:
            raise ValueError(f"num_classes={num_classes} but fusion_head.out_features={out}")
    return out


@dataclass(frozen=True)
class Target:
    """The explicit modules and facts of the model a balancing method is built for."""

    dims: Mapping[str, int]
    encoders: Mapping[str, nn.Module]
    embed_dims: Mapping[str, int]
    fusion_head: nn.Linear
    task: str = "classification"
    num_classes: int | None = None


@dataclass
class MethodParts:
    """What a balancing method adds to a backbone: an optional module in front of the encoders
    (``input_module``: BALM's FCM, Ada2I's AFW) and an optional :class:`~balm.core.rebalancer.Rebalancer`."""

    name: str
    input_module: nn.Module | None = None
    rebalancer: nn.Module | None = None
