"""The declared layers: one module each, holding one ``SPEC``; adding a layer is adding a file."""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache

from twin.errors import LayerNotFoundError
from twin.schema import LayerSpec


@cache
def registry() -> dict[str, LayerSpec]:
    """All declared layers by name, in draw order (lowest ``z_order`` first)."""
    specs = []
    for info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{info.name}")
        spec = getattr(module, "SPEC", None)
        if isinstance(spec, LayerSpec):
            if spec.name != info.name:
                raise RuntimeError(f"layers/{info.name}.py declares layer {spec.name!r}")
            specs.append(spec)
    return {s.name: s for s in sorted(specs, key=lambda s: (s.style.z_order, s.name))}


def get_layer(name: str) -> LayerSpec:
    """The spec of layer *name*.

    Raises
    ------
    LayerNotFoundError
        If no layer of that name is declared; the message lists the declared ones.
    """
    try:
        return registry()[name]
    except (KeyError, TypeError):
        raise LayerNotFoundError(
            f"unknown layer {name!r}; declared layers: {', '.join(registry())}"
        ) from None


def names() -> list[str]:
    return list(registry())
