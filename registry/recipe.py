"""Merge recipes (re-exported from `registry.merge.recipe`, where they live beside the methods they validate)."""

from __future__ import annotations

from registry.merge.recipe import (
    GlobalParameters,
    MergelingBlock,
    ModelEntry,
    ModelParameters,
    Recipe,
    Role,
    SweepBlock,
    load_recipe,
    parse_recipe,
)

__all__ = [
    "GlobalParameters",
    "MergelingBlock",
    "ModelEntry",
    "ModelParameters",
    "Recipe",
    "Role",
    "SweepBlock",
    "load_recipe",
    "parse_recipe",
]
