"""Recipe loading and validation: defaults, paths, overrides, and one-line errors."""

import textwrap
import time
import tracemalloc

import pytest
import yaml
from click.testing import CliRunner

from workbench.cli import main
from workbench.errors import RecipeError
from workbench.recipe import json_schema, load_recipe, to_yaml

TRANSFER = """\
kind: transfer
data:
  source: synthetic
  name: glyphs
  image_size: [32, 32]
base:
  source: applications
  name: MobileNetV2
schedule:
  - {name: head, epochs: 1}
"""

META = """\
kind: meta
tasks:
  source: sinusoid
  shots: 5
model:
  builtin: mlp
"""


def write(tmp_path, text, name="recipe.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_defaults_are_filled_in(tmp_path):
    recipe = load_recipe(write(tmp_path, TRANSFER, "flowers.yaml"))
    assert recipe.name == "flowers"
    assert recipe.freeze.layers == "all" and recipe.freeze.batchnorm == "frozen"
    assert recipe.schedule[0].optimizer == "adam"
    assert recipe.data.batch_size == 32
    meta = load_recipe(write(tmp_path, META))
    assert meta.algorithm == "maml" and meta.evaluation.tasks == 600 and meta.evaluation.steps == [1]


@pytest.mark.parametrize(
    "text",
    [TRANSFER, META, META + "inner: {steps: 2, multi_step_loss: true, multi_step_anneal: null}\n"],
    ids=["transfer", "meta", "meta-multi-step"],
)
def test_resolved_recipe_round_trips(tmp_path, text):
    recipe = load_recipe(write(tmp_path, text))
    again = write(tmp_path, to_yaml(recipe), "resolved.yaml")
    assert load_recipe(again).model_dump() == {**recipe.model_dump(), "name": recipe.name}


def test_yaml_float_spelling_and_step_lists(tmp_path):
    text = META + "outer: {learning_rate: 1e-3}\nevaluation: {steps: 3}\n"
    recipe = load_recipe(write(tmp_path, text))
    assert recipe.outer.learning_rate == pytest.approx(1e-3)
    assert recipe.evaluation.steps == [3]


def test_overrides_are_type_checked_like_the_file(tmp_path):
    path = write(tmp_path, TRANSFER)
    recipe = load_recipe(path, ["data.batch_size=64", "schedule=[{name: a, epochs: 2}]", "head.units=[8, 4]"])
    assert recipe.data.batch_size == 64 and recipe.schedule[0].epochs == 2 and recipe.head.units == [8, 4]
    with pytest.raises(RecipeError) as error:
        load_recipe(path, ["data.batch_size=many"])
    assert str(error.value) == "--set data.batch_size=many: data.batch_size: Input should be a valid integer. Received: 'many'"


def test_relative_data_paths_use_the_recipe_folder_then_the_data_root(tmp_path, monkeypatch):
    beside = tmp_path / "flowers"
    beside.mkdir()
    root = tmp_path / "root"
    (root / "omniglot").mkdir(parents=True)
    (root / "omniglot" / "set.zip").write_bytes(b"")
    monkeypatch.setenv("WORKBENCH_DATA", str(root))
    text = TRANSFER.replace("source: synthetic\n  name: glyphs", "source: folder\n  path: PATH")
    assert load_recipe(write(tmp_path, text.replace("PATH", "flowers"))).data.path == str(beside)
    assert load_recipe(write(tmp_path, text.replace("PATH", "omniglot/set.zip"))).data.path == str(root / "omniglot" / "set.zip")
    with pytest.raises(RecipeError, match=r"data root.*github.com/brendenlake/omniglot"):
        load_recipe(write(tmp_path, text.replace("PATH", "omniglot/missing.zip")))


def test_weights_file_must_exist(tmp_path):
    (tmp_path / "w.weights.h5").write_bytes(b"")
    text = TRANSFER.replace("name: MobileNetV2", "name: MobileNetV2\n  weights: w.weights.h5")
    assert load_recipe(write(tmp_path, text)).base.weights == str(tmp_path / "w.weights.h5")


def test_json_schema_covers_both_kinds():
    schema = json_schema()
    text = yaml.safe_dump(schema)
    assert "TransferRecipe" in text and "MetaRecipe" in text and "discriminator" in text


def _replace(old, new, text=TRANSFER):
    assert old in text, old
    return text.replace(old, new, 1)


# (case, recipe text, line of the problem, field named in the message)
MALFORMED = [
    ("yaml syntax", "kind: transfer\ndata: [1, 2\n", 3, ""),
    ("tab indentation", "kind: meta\ntasks:\n\tsource: sinusoid\n", 3, ""),
    ("top level list", "- kind: transfer\n", 1, ""),
    ("top level scalar", "just text\n", 1, ""),
    ("missing kind", "data: {}\n", 1, "kind"),
    ("unknown kind", "kind: transfr\n", 1, "kind"),
    ("unknown top key", TRANSFER + "schedul: []\n", 11, "schedul"),
    ("unknown nested key", _replace("  image_size", "  batch_sze: 3\n  image_size"), 5, "data.batch_sze"),
    ("unknown phase key", _replace("{name: head, epochs: 1}", "{name: head, epochs: 1, lr: 0.1}"), 10, "schedule.0.lr"),
    (
        "missing data",
        "\n".join(line for line in TRANSFER.splitlines() if not line.startswith(("data", "  source: syn", "  name: gly", "  image"))),
        1,
        "data",
    ),
    ("missing schedule", TRANSFER.split("schedule:")[0], 1, "schedule"),
    ("empty schedule", _replace("  - {name: head, epochs: 1}\n", "  []\n"), 10, "schedule"),
    ("phase without epochs", _replace("{name: head, epochs: 1}", "{name: head}"), 10, "schedule.0.epochs"),
    ("zero epochs", _replace("epochs: 1", "epochs: 0"), 10, "schedule.0.epochs"),
    ("negative learning rate", _replace("epochs: 1}", "epochs: 1, learning_rate: -0.1}"), 10, "schedule.0.learning_rate"),
    ("zero learning rate", _replace("epochs: 1}", "epochs: 1, learning_rate: 0}"), 10, "schedule.0.learning_rate"),
    ("string batch size", _replace("  image_size", "  batch_size: lots\n  image_size"), 5, "data.batch_size"),
    ("float batch size", _replace("  image_size", "  batch_size: 3.5\n  image_size"), 5, "data.batch_size"),
    ("boolean epochs", _replace("epochs: 1", "epochs: true"), 10, "schedule.0.epochs"),
    ("image size of three", _replace("[32, 32]", "[32, 32, 3]"), 5, "data.image_size"),
    ("image size of strings", _replace("[32, 32]", "[32, big]"), 5, "data.image_size.1"),
    ("unknown source", _replace("source: synthetic", "source: s3"), 3, "data.source"),
    ("folder without path", _replace("source: synthetic\n  name: glyphs", "source: folder"), 3, "data"),
    ("folder path missing", _replace("source: synthetic\n  name: glyphs", "source: folder\n  path: nowhere/"), 4, "data.path"),
    ("unknown synthetic generator", _replace("name: glyphs", "name: digits"), 4, "data.name"),
    ("unknown application", _replace("name: MobileNetV2", "name: MobileNetV9"), 8, "base.name"),
    ("weights file missing", _replace("name: MobileNetV2", "name: MobileNetV2\n  weights: missing.h5"), 9, "base.weights"),
    ("file base without path", _replace("source: applications\n  name: MobileNetV2", "source: file"), 7, "base"),
    ("bad selector word", TRANSFER + "freeze: {layers: some}\n", 11, "freeze.layers"),
    ("negative last", TRANSFER + "freeze: {layers: {last: -2}}\n", 11, "freeze.layers"),
    ("two-key selector", TRANSFER + "freeze: {layers: {last: 2, match: conv}}\n", 11, "freeze.layers"),
    ("bad regex", TRANSFER + "freeze: {layers: {match: '(conv'}}\n", 11, "freeze.layers"),
    ("bad batchnorm policy", TRANSFER + "freeze: {batchnorm: sometimes}\n", 11, "freeze.batchnorm"),
    ("unknown optimizer", _replace("epochs: 1}", "epochs: 1, optimizer: adamax}"), 10, "schedule.0.optimizer"),
    ("dropout of one", TRANSFER + "head: {dropout: 1.0}\n", 11, "head.dropout"),
    ("fractions leave nothing", _replace("  image_size", "  validation: 0.5\n  test: 0.5\n  image_size"), 3, "data"),
    ("duplicate key", _replace("  image_size: [32, 32]", "  image_size: [32, 32]\n  image_size: [64, 64]"), 6, "data.image_size"),
    ("python tag", _replace("name: glyphs", "name: !!python/object/apply:os.system ['echo hi']"), 4, "data.name"),
    ("unknown algorithm", META + "algorithm: mamll\n", 7, "algorithm"),
    ("one way", _replace("shots: 5", "shots: 5\n  ways: 1", META), 5, "tasks.ways"),
    ("zero shots", _replace("shots: 5", "shots: 0", META), 4, "tasks.shots"),
    ("unknown builtin", _replace("builtin: mlp", "builtin: resnet", META), 6, "model.builtin"),
    ("builtin and base", _replace("builtin: mlp", "builtin: mlp\n  base: {source: builtin, name: conv4}", META), 6, "model"),
    ("sinusoid with conv4", _replace("builtin: mlp", "builtin: conv4", META), 1, ""),
    ("inner rate negative", META + "inner: {learning_rate: -1}\n", 7, "inner.learning_rate"),
    ("anneal without multi-step loss", META + "inner: {steps: 2, multi_step_anneal: null}\n", 7, "inner"),
    ("zero anneal", META + "inner: {steps: 2, multi_step_loss: true, multi_step_anneal: 0}\n", 7, "inner.multi_step_anneal"),
    ("rotation not a right angle", _replace("shots: 5", "shots: 5\n  rotations: [45]", META), 5, "tasks.rotations.0"),
    ("meta validation path missing", _replace("shots: 5", "shots: 5\n  validation: other.zip", META), 5, "tasks.validation"),
    ("merge key", "base: &b {source: builtin}\nkind: transfer\nother:\n  <<: *b\n", 4, "other"),
    ("unknown strategy", TRANSFER + "distribute: {strategy: horovod}\n", 11, "distribute.strategy"),
    ("device name", TRANSFER + "distribute: {strategy: mirrored, devices: [gpu0]}\n", 11, "distribute.devices"),
    ("device twice", TRANSFER + "distribute: {strategy: mirrored, devices: [/gpu:0, GPU:0]}\n", 11, "distribute.devices"),
    ("devices without mirrored", TRANSFER + "distribute: {strategy: multi_worker, devices: [/gpu:0]}\n", 11, "distribute"),
    (
        "meta-batch over devices",
        META + "outer: {meta_batch_size: 25}\ndistribute: {strategy: mirrored, devices: [/cpu:0, /cpu:1]}\n",
        1,
        "",
    ),
]


@pytest.mark.parametrize("case, text, line, field", MALFORMED, ids=[case[0] for case in MALFORMED])
def test_malformed_recipes_get_one_line_naming_file_line_and_field(tmp_path, case, text, line, field):
    path = write(tmp_path, text)
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert "Traceback" not in result.output
    assert lines[0].startswith(f"{path}:{line}:"), lines[0]
    if field:
        assert f": {field}: " in lines[0], lines[0]


def test_several_problems_get_one_line_each(tmp_path):
    text = _replace("  image_size", "  batch_sze: 3\n  image_size", _replace("epochs: 1", "epochs: 0"))
    result = CliRunner().invoke(main, ["validate", str(write(tmp_path, text))])
    assert result.exit_code == 2
    assert len(result.output.strip().splitlines()) == 2
    assert "did you mean batch_size?" in result.output


@pytest.mark.parametrize(
    "case, content, message",
    [
        ("missing file", None, "no such file"),
        ("empty file", b"", "recipe is empty"),
        ("comments only", b"# nothing\n", "recipe is empty"),
        ("directory", "dir", "is a directory"),
        ("not utf-8", b"kind: meta\nname: \xff\xfe\n", "not valid UTF-8"),
    ],
)
def test_unreadable_files(tmp_path, case, content, message):
    path = tmp_path / "recipe.yaml"
    if content == "dir":
        path.mkdir()
    elif content is not None:
        path.write_bytes(content)
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert result.exit_code == 2
    assert result.output.strip().startswith(str(path)) and message in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_non_utf8_error_names_the_line(tmp_path):
    path = tmp_path / "b.yaml"
    path.write_bytes(b"kind: meta\nname: \xff\n")
    with pytest.raises(RecipeError, match=r"b.yaml:2:7: not valid UTF-8"):
        load_recipe(path)


def test_alias_bomb_is_rejected_fast_with_bounded_memory(tmp_path):
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 10)]
    path = write(tmp_path, "kind: meta\n" + "\n".join(lines) + "\n")
    tracemalloc.start()
    started = time.perf_counter()
    with pytest.raises(RecipeError, match="alias bomb"):
        load_recipe(path)
    elapsed = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert elapsed < 5 and peak < 100 * 2**20, (elapsed, peak)


def test_deep_nesting_is_an_error_not_a_crash(tmp_path):
    path = write(tmp_path, "kind: meta\nx: " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(RecipeError):
        load_recipe(path)
