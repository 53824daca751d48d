"""Property tests: whatever bytes, mappings or `--set` overrides a recipe gets, loading never crashes."""

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from workbench.errors import RecipeError
from workbench.recipe import load_recipe

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# Source names pick the members of the sections' unions; field names of one source are unknown in another.
TAGS = ["tfds", "folder", "synthetic", "applications", "file", "run", "recipe", "hub", "builtin", "sinusoid", "glyphs", "conv4", "mlp"]
FIELDS = ["kind", "data", "base", "schedule", "tasks", "model", "source", "name", "path", "epochs", "ways", "builtin", "head", "freeze"]
FIELDS += ["include", "weights", "layer", "splits", "per_class", "dropout", "monitor", "early_stopping", "validation"]

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**6), 10**6), st.floats(allow_nan=True), st.text(max_size=12), st.sampled_from(TAGS)
)
keys = st.one_of(st.sampled_from(FIELDS), st.text(max_size=8))
values = st.recursive(
    scalars, lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(keys, children, max_size=4)), max_leaves=20
)
recipes = st.fixed_dictionaries(
    {"kind": st.sampled_from(["transfer", "meta", "other"])},
    optional={key: values for key in ["data", "base", "schedule", "tasks", "model", "freeze", "inner", "outer"]},
)


def _load_or_reject(path, overrides=()):
    try:
        load_recipe(path, overrides)
    except RecipeError as error:
        for line in str(error).splitlines():
            assert line.startswith((str(path), "--set ")), line


@SETTINGS
@given(st.binary(max_size=400))
def test_random_bytes_are_loaded_or_rejected_with_a_recipe_error(tmp_path, data):
    path = tmp_path / "fuzz.yaml"
    path.write_bytes(data)
    _load_or_reject(path)


@SETTINGS
@given(recipes)
def test_random_mappings_are_loaded_or_rejected_with_a_recipe_error(tmp_path, mapping):
    path = tmp_path / "fuzz.yaml"
    path.write_text(yaml.safe_dump(mapping))
    _load_or_reject(path)


RECIPE = """\
kind: transfer
data: {source: synthetic, name: glyphs, image_size: [32, 32]}
base: {source: builtin, name: conv4}
schedule:
  - {name: head, epochs: 1}
  - {epochs: 2, unfreeze: all, early_stopping: {monitor: val_loss}}
"""
path_parts = st.one_of(keys, st.integers(0, 3).map(str), st.integers(0, 3).map(lambda index: f"[{index}]"))
assignments = st.tuples(st.lists(path_parts, min_size=1, max_size=4).map(".".join), st.text(max_size=12)).map("=".join)


@SETTINGS
@given(st.lists(assignments, max_size=3))
def test_random_overrides_are_applied_or_rejected_with_a_recipe_error(tmp_path, overrides):
    path = tmp_path / "fuzz.yaml"
    path.write_text(RECIPE)
    _load_or_reject(path, overrides)
