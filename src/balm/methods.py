"""Every balancing method by name: BALM's variants and the baselines, in one registry.

A method turns a backbone's explicit modules (encoders, embedding widths, fusion head) into
:class:`~balm.core.contract.MethodParts`: an optional input module in front of the encoders and
an optional :class:`~balm.core.rebalancer.Rebalancer`. Each method accepts exactly the options
its classes declare (their ``Options`` dataclasses); any other option is an error naming the
valid ones. Adding a method is one file with a :class:`~balm.core.rebalancer.Rebalancer`
subclass and one line here (or a :func:`register` call in your own code)::

    register("my-method", rebalancer=MyMethod)

A name of the form ``"package.module:Class"`` is also accepted wherever a method name is: the
class is imported and used as a rebalancer-only method.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from torch import nn

from balm.baselines import Ada2I, AdaptiveFeatureWeighting, AFWOptions, CGGM, OGMGE
from balm.core.contract import MethodParts, Target
from balm.core.rebalancer import Rebalancer, option_names
from balm.core.variants import VARIANTS, build_variant, variant_options


@dataclass(frozen=True)
class Method:
    """A registered method: ``build(target, options) -> MethodParts`` and the options it accepts."""

    name: str
    build: Callable[[Target, dict], MethodParts]
    options: tuple[str, ...]
    family: str = "user"


_REGISTRY: dict[str, Method] = {}


def _rebalancer_builder(name: str, cls: type[Rebalancer]) -> Callable[[Target, dict], MethodParts]:
    def build(t: Target, options: dict) -> MethodParts:
        rb = cls(t.encoders, t.embed_dims, t.fusion_head, task=t.task, num_classes=t.num_classes, **options)
        return MethodParts(name=name, rebalancer=rb)

    return build


def register(
    name: str,
    *,
    rebalancer: type[Rebalancer] | None = None,
    build: Callable[[Target, dict], MethodParts] | None = None,
    options: tuple[str, ...] | None = None,
    family: str = "user",
    replace: bool = False,
) -> Method:
    """Register method ``name``: either a ``rebalancer`` class (its options are the fields of its
    ``Options`` dataclass) or a ``build`` function with the ``options`` it accepts."""
    if not isinstance(name, str) or not name or ":" in name:
        raise ValueError(f"a method name must be a non-empty string without ':', got {name!r}")
    if name in _REGISTRY and not replace:
        raise ValueError(f"method {name!r} is already registered (pass replace=True to replace it)")
    if (rebalancer is None) == (build is None):
        raise TypeError("register() takes exactly one of rebalancer= or build=")
    if rebalancer is not None:
        if not (isinstance(rebalancer, type) and issubclass(rebalancer, Rebalancer)):
            raise TypeError(f"rebalancer must be a subclass of balm.core.Rebalancer, got {rebalancer!r}")
        build, options = _rebalancer_builder(name, rebalancer), option_names(rebalancer.Options)
    elif options is None:
        raise TypeError("register(build=...) needs the tuple of options the builder accepts")
    method = Method(name=name, build=build, options=tuple(options), family=family)
    _REGISTRY[name] = method
    return method


def unregister(name: str) -> None:
    """Remove a method registered by :func:`register` (BALM's variants and the baselines stay)."""
    method = _REGISTRY.get(name)
    if method is None:
        raise ValueError(f"method {name!r} is not registered")
    if method.family != "user":
        raise ValueError(f"method {name!r} is built in and cannot be removed")
    del _REGISTRY[name]


def names() -> tuple[str, ...]:
    """Every registered method name, BALM's variants first."""
    return tuple(_REGISTRY)


def get(name: str) -> Method:
    """The method called ``name`` (a registered name or ``"package.module:Class"``)."""
    if name in _REGISTRY:
        return _REGISTRY[name]
    if isinstance(name, str) and ":" in name:
        module, _, attr = name.partition(":")
        try:
            cls = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise ValueError(f"method {name!r} cannot be imported: {exc}") from None
        if not (isinstance(cls, type) and issubclass(cls, Rebalancer)):
            raise ValueError(f"method {name!r} is not a subclass of balm.core.Rebalancer")
        return Method(name=name, build=_rebalancer_builder(name, cls), options=option_names(cls.Options))
    import difflib

    close = difflib.get_close_matches(str(name), list(_REGISTRY), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise ValueError(f"unknown method {name!r}{hint} choose one of {list(_REGISTRY)}")


def method_options(name: str) -> tuple[str, ...]:
    """The option names method ``name`` accepts."""
    return get(name).options


def check_options(name: str, options: Mapping[str, Any]) -> None:
    """Raise ``TypeError`` naming every option of ``options`` that method ``name`` does not take."""
    valid = method_options(name)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise TypeError(f"unknown option(s) {unknown} for method {name!r}; valid: {sorted(valid)}")


def build_method(
    name: str,
    *,
    dims: Mapping[str, int],
    encoders: Mapping[str, nn.Module],
    embed_dims: Mapping[str, int],
    fusion_head: nn.Linear,
    task: str = "classification",
    num_classes: int | None = None,
    shared: Mapping[str, Any] | None = None,
    **options: Any,
) -> MethodParts:
    """Build method ``name`` for a backbone's explicit modules.

    ``options`` must all be options of the method (:func:`method_options`), else ``TypeError``.
    ``shared``: values offered to every method (a runner's common settings such as ``lr`` or
    ``rho``), each used only by a method that takes it; ``options`` override them.
    """
    method = get(name)
    check_options(name, options)
    kw = {k: v for k, v in (shared or {}).items() if k in method.options}
    kw.update(options)
    target = Target(dims=dict(dims), encoders=encoders, embed_dims=dict(embed_dims), fusion_head=fusion_head,
                    task=task, num_classes=num_classes)
    return method.build(target, kw)


# --------------------------------------------------------------------------- built-in methods


def _variant_builder(name: str) -> Callable[[Target, dict], MethodParts]:
    def build(t: Target, options: dict) -> MethodParts:
        return build_variant(name, t, **options)

    return build


_AFW_KEYS = ("afw",) + option_names(AFWOptions)


def _build_ada2i(t: Target, options: dict) -> MethodParts:
    """Ada2I: its AFW in the input-module slot (``afw=False`` leaves it out) and AMW as rebalancer."""
    afw_kw = {k: options.pop(k) for k in option_names(AFWOptions) if k in options}
    afw = AdaptiveFeatureWeighting(t.dims, **afw_kw) if options.pop("afw", True) else None
    rb = Ada2I(t.encoders, t.embed_dims, t.fusion_head, task=t.task, num_classes=t.num_classes,
               feature_weighting=afw, **options)
    return MethodParts(name="ada2i", input_module=afw, rebalancer=rb)


for _name in VARIANTS:
    register(_name, build=_variant_builder(_name), options=variant_options(_name), family="balm")
register("ogm-ge", rebalancer=OGMGE, family="baseline")
register("cggm", rebalancer=CGGM, family="baseline")
register("ada2i", build=_build_ada2i, options=option_names(Ada2I.Options) + _AFW_KEYS, family="baseline")

__all__ = ["Method", "Target", "register", "unregister", "names", "get", "method_options", "check_options",
           "build_method", "VARIANTS"]
