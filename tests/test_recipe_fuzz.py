"""Property tests: whatever bytes or mappings a recipe holds, loading never crashes."""

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from workbench.errors import RecipeError
from workbench.recipe import load_recipe

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

scalars = st.one_of(st.none(), st.booleans(), st.integers(-(10**6), 10**6), st.floats(allow_nan=True), st.text(max_size=12))
keys = st.one_of(
    st.sampled_from(["kind", "data", "base", "schedule", "tasks", "model", "source", "name", "path", "epochs", "ways"]), st.text(max_size=8)
)
values = st.recursive(
    scalars, lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(keys, children, max_size=4)), max_leaves=20
)
recipes = st.fixed_dictionaries(
    {"kind": st.sampled_from(["transfer", "meta", "other"])},
    optional={key: values for key in ["data", "base", "schedule", "tasks", "model", "freeze", "inner", "outer"]},
)


def _load_or_reject(path):
    try:
        load_recipe(path)
    except RecipeError as error:
        for line in str(error).splitlines():
            assert line.startswith(str(path)), line


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
