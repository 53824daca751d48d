"""Recipes: the YAML format of workbench runs, loaded and validated without TensorFlow."""

from workbench.recipe.loader import Problem, load_recipe, load_resolved_recipe
from workbench.recipe.schema import CompareRecipe, MetaRecipe, Recipe, SweepRecipe, TransferRecipe


def json_schema() -> dict:
    """The JSON Schema of every recipe kind, for editors that complete YAML."""
    import pydantic

    schema = pydantic.TypeAdapter(Recipe).json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "workbench recipe"
    return schema


def to_yaml(recipe) -> str:
    """The resolved recipe as YAML: defaults filled in, overrides applied."""
    import yaml

    return yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False)


__all__ = [
    "CompareRecipe",
    "MetaRecipe",
    "Problem",
    "Recipe",
    "SweepRecipe",
    "TransferRecipe",
    "load_resolved_recipe",
    "json_schema",
    "load_recipe",
    "to_yaml",
]
