"""Backbones by name or by import path, and the check of the backbone contract."""

from __future__ import annotations

import importlib
import inspect
from typing import Mapping

from torch import nn

from ..errors import BalmError
from .base import Backbone, BackboneOutput

# name -> "module:Class"; modules are imported on demand
BACKBONES = {
    "late_fusion": "balm.backbones.late_fusion:LateFusion",
    "mmgcn": "balm.backbones.mmgcn:MMGCN",
    "mmdfn": "balm.backbones.mmdfn:MMDFN",
    "gcnet": "balm.backbones.gcnet:GCNet",
    "sdrgnn": "balm.backbones.sdrgnn:SDRGNN",
    "micga": "balm.backbones.micga:MiCGA",
    "mmin": "balm.backbones.mmin:MMIN",
    "momke": "balm.backbones.momke:MoMKE",
    "redcore": "balm.backbones.redcore:RedCore",
    "mce": "balm.backbones.mce:MCE",
}


class BackboneContractError(BalmError, TypeError):
    """A backbone class or instance that does not meet the contract of :class:`balm.backbones.Backbone`
    (a :class:`balm.errors.BalmError`, so the CLI reports it as bad input; also a ``TypeError``)."""

    def __init__(self, message: str):
        super().__init__(message, key="backbone")


def is_import_path(name: str) -> bool:
    """``"package.module:Class"`` rather than a registered name."""
    return isinstance(name, str) and ":" in name


def resolve_backbone(name: str) -> type:
    """The class of backbone ``name``: a registered name or an import path ``package.module:Class``.

    An import path is imported with the ordinary Python import system, so its package must be
    installed or its folder on ``PYTHONPATH`` (in every worker process of a sweep too).
    Raises ``ValueError`` for an unknown name, a module that cannot be imported or a missing
    attribute, and :class:`BackboneContractError` when the object is not an ``nn.Module`` class.
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"expected a backbone name or 'package.module:Class', got {name!r}")
    if is_import_path(name):
        target = name
    elif name in BACKBONES:
        target = BACKBONES[name]
    else:
        raise ValueError(f"unknown backbone {name!r}; choose one of {sorted(BACKBONES)} or give an import path "
                         "'package.module:Class'")
    module, _, attr = target.partition(":")
    if not module or not attr or ":" in attr:
        raise ValueError(f"backbone import path {name!r} must have the form 'package.module:Class'")
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        raise ValueError(f"cannot import module {module!r} of backbone {name!r} ({exc}); install its package "
                         "or put the folder that holds it on PYTHONPATH") from None
    obj = mod
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"module {module!r} has no attribute {attr!r} (backbone {name!r})")
        obj = getattr(obj, part)
    if not (inspect.isclass(obj) and issubclass(obj, nn.Module)):
        raise BackboneContractError(f"backbone {name!r} must be a torch.nn.Module subclass taking (dims, out_dim, "
                                    f"**backbone_options), got {type(obj).__name__} {obj!r}")
    return obj


def takes_any_option(name: str) -> bool:
    """Whether backbone ``name``'s constructor takes ``**kwargs`` (so any option is passed on)."""
    sig = inspect.signature(resolve_backbone(name).__init__)
    return any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())


def backbone_parameters(name: str) -> tuple[str, ...]:
    """Keyword options of backbone ``name``'s constructor (without dims and out_dim); ``()`` when it
    takes ``**kwargs`` (any option)."""
    sig = inspect.signature(resolve_backbone(name).__init__)
    params = list(sig.parameters.values())
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return ()
    positional = [p for p in params if p.name != "self" and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(positional) < 2 and not any(p.kind is p.VAR_POSITIONAL for p in params):
        raise BackboneContractError(f"backbone {name!r}: the constructor must take (dims, out_dim, **options), "
                                    f"got {sig}")
    skip = {"self", "dims", "out_dim"} | {p.name for p in positional[:2]}
    return tuple(n for n, p in sig.parameters.items() if n not in skip and p.kind is not p.VAR_POSITIONAL)


def check_backbone(model: nn.Module, dims: Mapping[str, int], out_dim: int, name: str | None = None) -> None:
    """Check the parts of the contract a built backbone shows without data; raise
    :class:`BackboneContractError` listing every part that is missing or wrong.

    The contract: ``encoders`` an ``nn.ModuleDict`` with one entry per modality of ``dims`` (the
    layers before fusion, each with parameters: GRM scales their gradients); ``fusion_head`` an
    ``nn.Linear`` with ``out_dim`` outputs (F_pred); ``embed_dims`` a mapping modality -> positive
    width of z^m; ``forward(batch)`` returns a :class:`BackboneOutput` (checked on the first call,
    :func:`check_output`).
    """
    who = name or type(model).__name__
    problems = []
    if not isinstance(model, nn.Module):
        raise BackboneContractError(f"backbone {who!r} must be a torch.nn.Module, got {type(model).__name__}")
    modalities = list(dims)
    enc = getattr(model, "encoders", None)
    if enc is None:
        problems.append(f"no attribute 'encoders' (an nn.ModuleDict keyed by modality: {modalities})")
    elif not isinstance(enc, nn.ModuleDict):
        problems.append(f"'encoders' must be an nn.ModuleDict keyed by modality, got {type(enc).__name__}")
    else:
        if set(enc.keys()) != set(modalities):
            problems.append(f"'encoders' must have exactly the modalities {modalities}, has {list(enc.keys())}")
        empty = [m for m in enc.keys() if not any(p.requires_grad for p in enc[m].parameters())]
        if empty:
            problems.append(f"encoders {empty} have no trainable parameters (GRM scales their gradients)")
    head = getattr(model, "fusion_head", None)
    if head is None:
        problems.append("no attribute 'fusion_head' (the final nn.Linear F_pred)")
    elif not isinstance(head, nn.Linear):
        problems.append(f"'fusion_head' must be an nn.Linear, got {type(head).__name__}")
    elif head.out_features != out_dim:
        problems.append(f"'fusion_head' must have out_features = {out_dim}, has {head.out_features}")
    try:
        widths = model.embed_dims
    except (AttributeError, NotImplementedError):
        problems.append(f"no 'embed_dims' (a mapping modality -> width of z^m, for {modalities})")
    else:
        if not isinstance(widths, Mapping) or set(widths) != set(modalities) or not all(
                isinstance(w, int) and not isinstance(w, bool) and w > 0 for w in widths.values()):
            problems.append(f"'embed_dims' must map each of {modalities} to a positive int, got {widths!r}")
    if type(model).forward is nn.Module.forward:
        problems.append("no forward(batch) method (returning BackboneOutput)")
    if problems:
        raise BackboneContractError(f"backbone {who!r} does not meet the backbone contract "
                                    f"(docs/backbones.md): " + "; ".join(problems))


def check_output(model: nn.Module, out, num_rows: int) -> None:
    """The first forward's output of ``model`` against the contract; raises :class:`BackboneContractError`."""
    who = type(model).__name__
    if not isinstance(out, BackboneOutput):
        raise BackboneContractError(f"backbone {who!r}: forward(batch) must return balm.backbones.BackboneOutput, "
                                    f"got {type(out).__name__}")
    problems = []
    widths = model.embed_dims
    if set(out.embeddings) != set(widths):
        problems.append(f"embeddings must have the modalities {list(widths)}, has {list(out.embeddings)}")
    for m, z in out.embeddings.items():
        if m in widths and tuple(z.shape) != (num_rows, widths[m]):
            problems.append(f"embeddings[{m!r}] must have shape ({num_rows}, {widths[m]}), has {tuple(z.shape)}")
    head = model.fusion_head
    if tuple(out.fused.shape) != (num_rows, head.in_features):
        problems.append(f"fused must have shape ({num_rows}, {head.in_features}) (the fusion head's input), "
                        f"has {tuple(out.fused.shape)}")
    if out.prediction.shape[0] != num_rows:
        problems.append(f"prediction must have {num_rows} rows (one per valid utterance), has {out.prediction.shape[0]}")
    if problems:
        raise BackboneContractError(f"backbone {who!r}: forward output does not meet the contract: " + "; ".join(problems))


def build_backbone(name: str, dims: dict[str, int], out_dim: int, **kwargs) -> Backbone:
    """Build backbone ``name`` (a registered name or ``package.module:Class``) for modality dims
    ``dims`` and ``out_dim`` outputs (1 for regression), and check it against the contract.

    Keyword arguments go to the backbone's constructor (e.g. ``num_speakers`` for graph models).
    """
    model = resolve_backbone(name)(dims, out_dim, **kwargs)
    check_backbone(model, dims, out_dim, name)
    return model
