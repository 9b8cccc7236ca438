"""The registry of AAE variants. Each variant module provides the model class (`MODEL`),
`make_optimizers`, `train_step`, `evaluate` and `make_plots`."""

from __future__ import annotations

from types import ModuleType

from . import unsupervised
from .errors import AAEError

VARIANTS: dict[str, ModuleType] = {"unsupervised": unsupervised}


def get_variant(kind: str) -> ModuleType:
    if kind not in VARIANTS:
        raise AAEError(f"unknown model {kind!r}; choose one of {', '.join(VARIANTS)}")
    return VARIANTS[kind]
