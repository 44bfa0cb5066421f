"""Recipes: reproducible YAML pipelines (`compress run recipe.yaml`), and fleets of them (fleet: many recipes at once,
each its own task).

Example:
    >>> recipe = load_recipe("recipes/mnist_cnn.yaml")      # RecipeError points at file:line:column
    >>> [kind for kind, _ in recipe.stage_list]
    ['prune', 'quantize']
"""
from compress.recipe.loader import RecipeError, load_recipe, parse_recipe
from compress.recipe.schema import STAGE_CONFIGS, RecipeBase, recipe_json_schema, recipe_model

__all__ = ["RecipeError", "load_recipe", "parse_recipe", "STAGE_CONFIGS", "RecipeBase", "recipe_json_schema", "recipe_model"]
