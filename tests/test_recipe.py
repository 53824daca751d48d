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


META_GLYPHS = """\
kind: meta
tasks:
  source: synthetic
  name: glyphs
  shots: 1
model:
  builtin: conv4
"""


def _replace(old, new, text=TRANSFER):
    assert old in text, old
    return text.replace(old, new, 1)


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


def _files(tmp_path):
    """The files that the recipes of every source kind name, beside them."""
    for folder in ("flowers/a", "flowers/b", "letters/greek/alpha", "run"):
        (tmp_path / folder).mkdir(parents=True, exist_ok=True)
    for name in ("model.keras", "other.zip", "w.weights.h5"):
        (tmp_path / name).write_bytes(b"")
    write(tmp_path, TRANSFER, "base.yaml")


TFDS_DATA = 'source: tfds\n  name: tf_flowers\n  splits: {train: "train[:80%]", validation: "train[80%:]"}'
GLYPH_DATA = "source: synthetic\n  name: glyphs"
APPLICATION = "source: applications\n  name: MobileNetV2"

# One recipe per source of each section, so that a run's resolved recipe of any kind reloads.
EVERY_SOURCE = {
    "data-tfds": _replace(GLYPH_DATA, TFDS_DATA, TRANSFER),
    "data-folder": _replace(GLYPH_DATA, "source: folder\n  path: flowers\n  include: '^a'\n  per_class: 3\n  test: 0.2", TRANSFER),
    "data-synthetic": _replace("name: glyphs", "name: glyphs\n  classes: 3\n  first_class: 7", TRANSFER),
    "base-applications": _replace(APPLICATION, APPLICATION + "\n  weights: w.weights.h5\n  layer: block_3_add", TRANSFER),
    "base-file": _replace(APPLICATION, "source: file\n  path: model.keras\n  layer: conv", TRANSFER),
    "base-run": _replace(APPLICATION, "source: run\n  path: run", TRANSFER),
    "base-recipe": _replace(APPLICATION, "source: recipe\n  path: base.yaml", TRANSFER),
    "base-hub": _replace(APPLICATION, "source: hub\n  name: resnet_18_imagenet", TRANSFER),
    "base-builtin": _replace(APPLICATION, "source: builtin\n  name: conv4\n  weights: none", TRANSFER),
    "unnamed-phases": _replace("  - {name: head, epochs: 1}", "  - {epochs: 1}\n  - {epochs: 2, unfreeze: all}", TRANSFER),
    "tasks-sinusoid": META,
    "tasks-folder": _replace("source: synthetic\n  name: glyphs", "source: folder\n  path: letters\n  validation: other.zip", META_GLYPHS),
    "tasks-tfds": _replace("source: synthetic\n  name: glyphs", "source: tfds\n  name: omniglot\n  split: test", META_GLYPHS),
    "tasks-synthetic": _replace("shots: 1", "shots: 1\n  classes: 30\n  rotations: [0, 90]", META_GLYPHS),
    "model-pretrained-base": _replace(
        "builtin: conv4", "base: {source: recipe, path: base.yaml}\n  freeze: {layers: {last: 2}}\n  head: {units: [16]}", META_GLYPHS
    ),
    "meta-multi-step": META + "inner: {steps: 2, multi_step_loss: true, multi_step_anneal: null}\n",
}


@pytest.mark.parametrize("text", EVERY_SOURCE.values(), ids=EVERY_SOURCE.keys())
def test_resolved_recipe_round_trips(tmp_path, text):
    _files(tmp_path)
    recipe = load_recipe(write(tmp_path, text))
    elsewhere = tmp_path / "runs" / "resolved.yaml"  # a run directory: relative paths would no longer resolve
    elsewhere.parent.mkdir()
    elsewhere.write_text(to_yaml(recipe))
    again = load_recipe(elsewhere)
    assert again.model_dump() == recipe.model_dump()
    sections = ("data", "base") if recipe.kind == "transfer" else ("tasks", "model")
    assert [type(getattr(again, name)) for name in sections] == [type(getattr(recipe, name)) for name in sections]


def test_every_source_has_its_own_section_model(tmp_path):
    _files(tmp_path)
    kinds = {case: load_recipe(write(tmp_path, text)) for case, text in EVERY_SOURCE.items()}
    assert {type(kinds[f"data-{source}"].data).__name__ for source in ("tfds", "folder", "synthetic")} == {
        "TfdsData",
        "FolderData",
        "SyntheticData",
    }
    assert len({type(kinds[f"base-{source}"].base) for source in ("applications", "file", "run", "recipe", "hub", "builtin")}) == 6
    assert len({type(kinds[f"tasks-{source}"].tasks) for source in ("sinusoid", "folder", "tfds", "synthetic")}) == 4
    builtin, pretrained = kinds["tasks-synthetic"].model, kinds["model-pretrained-base"].model
    assert (builtin.builtin, builtin.base) == ("conv4", None)
    assert pretrained.builtin is None and pretrained.base.source == "recipe" and pretrained.head.units == [16]


def test_phases_without_a_name_are_named_by_position(tmp_path):
    text = _replace("  - {name: head, epochs: 1}", "  - {epochs: 1}\n  - {name: tune, epochs: 2}\n  - {epochs: 3}", TRANSFER)
    path = write(tmp_path, text)
    recipe = load_recipe(path)
    assert [phase.name for phase in recipe.schedule] == ["phase-1", "tune", "phase-3"]
    assert [phase["name"] for phase in yaml.safe_load(to_yaml(recipe))["schedule"]] == ["phase-1", "tune", "phase-3"]
    assert load_recipe(path, ["schedule.0.name=warm-up"]).schedule[0].name == "warm-up"


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
    ("folder without path", _replace("source: synthetic\n  name: glyphs", "source: folder"), 3, "data.path"),
    ("folder path missing", _replace("source: synthetic\n  name: glyphs", "source: folder\n  path: nowhere/"), 4, "data.path"),
    ("unknown synthetic generator", _replace("name: glyphs", "name: digits"), 4, "data.name"),
    ("unknown application", _replace("name: MobileNetV2", "name: MobileNetV9"), 8, "base.name"),
    ("weights file missing", _replace("name: MobileNetV2", "name: MobileNetV2\n  weights: missing.h5"), 9, "base.weights"),
    ("file base without path", _replace("source: applications\n  name: MobileNetV2", "source: file"), 7, "base.path"),
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
    ("one way", _replace("shots: 1", "shots: 1\n  ways: 1", META_GLYPHS), 6, "tasks.ways"),
    ("zero shots", _replace("shots: 5", "shots: 0", META), 4, "tasks.shots"),
    ("unknown builtin", _replace("builtin: mlp", "builtin: resnet", META), 6, "model.builtin"),
    ("builtin and base", _replace("builtin: mlp", "builtin: mlp\n  base: {source: builtin, name: conv4}", META), 6, "model"),
    ("sinusoid with conv4", _replace("builtin: mlp", "builtin: conv4", META), 1, ""),
    (
        "grayscale tasks on an applications base",
        _replace("builtin: conv4", "base: {source: applications, name: MobileNetV2}", META_GLYPHS),
        1,
        "",
    ),
    ("inner rate negative", META + "inner: {learning_rate: -1}\n", 7, "inner.learning_rate"),
    ("anneal without multi-step loss", META + "inner: {steps: 2, multi_step_anneal: null}\n", 7, "inner"),
    ("zero anneal", META + "inner: {steps: 2, multi_step_loss: true, multi_step_anneal: 0}\n", 7, "inner.multi_step_anneal"),
    ("rotation not a right angle", _replace("shots: 1", "shots: 1\n  rotations: [45]", META_GLYPHS), 6, "tasks.rotations.0"),
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


def _one_line_error(tmp_path, text):
    """The one line that `workbench validate` prints for a refused recipe, without its file:line:col."""
    path = write(tmp_path, text)
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0].removeprefix(f"{path}:")


TFDS_TRANSFER = _replace(GLYPH_DATA, TFDS_DATA)
PRETRAINED_META = _replace("builtin: conv4", "base: {source: builtin, name: conv4}\n  head: {units: [8]}", META_GLYPHS)

# (case, recipe text, line:column of the field's key, the rest of the one-line error)
NOT_APPLICABLE = [
    (
        "include of synthetic data",
        _replace("name: glyphs", "name: glyphs\n  include: '^a'"),
        "5:3",
        "data.include: unknown field; include does not apply to source: synthetic; expected one of: "
        "source, image_size, channels, batch_size, augment, validation, test, per_class, rotations, style, name, classes, first_class, samples",
    ),
    (
        "per_class of tfds data",
        _replace("splits:", "per_class: 3\n  splits:", TFDS_TRANSFER),
        "5:3",
        "data.per_class: unknown field; per_class does not apply to source: tfds",
    ),
    (
        "validation fraction of tfds data",
        _replace("splits:", "validation: 0.2\n  splits:", TFDS_TRANSFER),
        "5:3",
        "data.validation: unknown field; validation does not apply to source: tfds",
    ),
    (
        "splits of synthetic data",
        _replace("name: glyphs", "name: glyphs\n  splits: {train: train}"),
        "5:3",
        "data.splits: unknown field; splits does not apply to source: synthetic",
    ),
    (
        "ways of sinusoid tasks",
        _replace("shots: 5", "shots: 5\n  ways: 5", META),
        "5:3",
        "tasks.ways: unknown field; ways does not apply to source: sinusoid; expected one of: source, shots, queries",
    ),
    (
        "image size of sinusoid tasks",
        _replace("shots: 5", "shots: 5\n  image_size: [28, 28]", META),
        "5:3",
        "tasks.image_size: unknown field; image_size does not apply to source: sinusoid",
    ),
    (
        "weights of a recipe base",
        _replace(APPLICATION, "source: recipe\n  path: base.yaml\n  weights: none"),
        "9:3",
        "base.weights: unknown field; weights does not apply to source: recipe; expected one of: source, layer, path",
    ),
    (
        "path of an applications base",
        _replace(APPLICATION, APPLICATION + "\n  path: model.keras"),
        "9:3",
        "base.path: unknown field; path does not apply to source: applications",
    ),
    (
        "layer of a hub base",
        _replace(APPLICATION, "source: hub\n  name: resnet_18_imagenet\n  layer: pool"),
        "9:3",
        "base.layer: unknown field; layer does not apply to source: hub; expected one of: source, name",
    ),
    (
        "head of a builtin net",
        _replace("builtin: mlp", "builtin: mlp\n  head: {units: [8]}", META),
        "7:3",
        "model.head: unknown field; head does not apply to a builtin net; expected one of: builtin",
    ),
    (
        "dropout of a meta head",
        _replace("units: [8]", "units: [8], dropout: 0.2", PRETRAINED_META),
        "8:22",
        "model.head.dropout: unknown field; expected one of: units, activation",
    ),
    (
        "classes of a meta head",
        _replace("units: [8]", "units: [8], classes: 5", PRETRAINED_META),
        "8:22",
        "model.head.classes: unknown field; expected one of: units, activation",
    ),
]


@pytest.mark.parametrize("case, text, where, message", NOT_APPLICABLE, ids=[case[0] for case in NOT_APPLICABLE])
def test_fields_a_source_does_not_read_are_refused(tmp_path, case, text, where, message):
    write(tmp_path, TRANSFER, "base.yaml")
    (tmp_path / "model.keras").write_bytes(b"")
    assert _one_line_error(tmp_path, text).startswith(f"{where}: {message}")


def test_builtin_bases_take_no_imagenet_weights(tmp_path):
    text = _replace(APPLICATION, "source: builtin\n  name: conv4\n  weights: imagenet")
    assert _one_line_error(tmp_path, text) == "9:12: base.weights: Input should be 'none'. Received: 'imagenet'"


def test_only_folder_tasks_take_other_folders_for_validation(tmp_path):
    (tmp_path / "other.zip").write_bytes(b"")
    text = _replace("shots: 1", "shots: 1\n  validation: other.zip", META_GLYPHS)
    assert _one_line_error(tmp_path, text) == "6:15: tasks.validation: Input should be a valid number. Received: 'other.zip'"


@pytest.mark.parametrize(
    "case, text, expected",
    [
        (
            "data typo",
            _replace("source: synthetic", "source: synthetik"),
            "3:11: data.source: unknown source 'synthetik'; did you mean synthetic? expected one of: tfds, folder, synthetic",
        ),
        (
            "data unknown",
            _replace("source: synthetic", "source: s3"),
            "3:11: data.source: unknown source 's3'; expected one of: tfds, folder, synthetic",
        ),
        (
            "data missing",
            _replace("  source: synthetic\n", ""),
            "3:3: data.source: field required; expected one of: tfds, folder, synthetic",
        ),
        (
            "data not a name",
            _replace("source: synthetic", "source: [synthetic]"),
            "3:11: data.source: unknown source ['synthetic']; did you mean synthetic? expected one of: tfds, folder, synthetic",
        ),
        (
            "base typo",
            _replace("source: applications", "source: aplications"),
            "7:11: base.source: unknown source 'aplications'; did you mean applications? expected one of: applications, file, run, recipe, hub, builtin",
        ),
        (
            "tasks missing",
            _replace("  source: sinusoid\n", "", META),
            "3:3: tasks.source: field required; expected one of: sinusoid, folder, tfds, synthetic",
        ),
        (
            "meta base missing",
            _replace("source: builtin, ", "", PRETRAINED_META),
            "7:9: model.base.source: field required; expected one of: applications, file, run, recipe, hub, builtin",
        ),
        (
            "model neither",
            _replace("builtin: mlp", "freeze: {layers: all}", META),
            "6:3: model: give either builtin (mlp | conv4) or base (with optional freeze and head), not both",
        ),
        (
            "model both",
            _replace("builtin: mlp", "builtin: mlp\n  base: {source: builtin, name: conv4}", META),
            "6:3: model: give either builtin (mlp | conv4) or base (with optional freeze and head), not both",
        ),
    ],
)
def test_a_wrong_or_missing_source_lists_the_choices(tmp_path, case, text, expected):
    assert _one_line_error(tmp_path, text) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        (_replace(GLYPH_DATA, "source: folder\n  path: flowers\n  inclde: '^a'"), "5:3: data.inclde: unknown field; did you mean include?"),
        (_replace(APPLICATION, APPLICATION + "\n  wieghts: none"), "9:3: base.wieghts: unknown field; did you mean weights?"),
        (_replace("shots: 1", "shots: 1\n  wyas: 5", META_GLYPHS), "6:3: tasks.wyas: unknown field; did you mean ways?"),
        (
            _replace("units: [8]", "units: [8], activaton: relu", PRETRAINED_META),
            "8:22: model.head.activaton: unknown field; did you mean activation?",
        ),
        (
            _replace("name: conv4}", "name: conv4, layr: pool}", PRETRAINED_META),
            "7:40: model.base.layr: unknown field; did you mean layer?",
        ),
    ],
)
def test_unknown_fields_suggest_the_field_of_the_chosen_source(tmp_path, text, expected):
    (tmp_path / "flowers").mkdir()
    assert _one_line_error(tmp_path, text) == expected


def test_a_missing_field_says_what_it_is(tmp_path):
    text = _replace(APPLICATION, "source: run")
    assert _one_line_error(tmp_path, text) == "7:3: base.path: field required: the run directory, relative to the recipe's folder"


@pytest.mark.parametrize(
    "text, expected",
    [
        (
            _replace("epochs: 1}", "epochs: 1, early_stopping: {monitor: val_los}}"),
            "10:55: schedule.0.early_stopping.monitor: unknown monitor 'val_los'; did you mean val_loss or loss?",
        ),
        (
            _replace("epochs: 1}", "epochs: 1, monitor: acuracy}"),
            "10:38: schedule.0.monitor: unknown monitor 'acuracy'; did you mean accuracy or val_accuracy?",
        ),
        (
            _replace("epochs: 1}", "epochs: 1, monitor: val_f1}"),
            "10:38: schedule.0.monitor: unknown monitor 'val_f1'; did you mean val_loss?",
        ),
    ],
)
def test_monitor_typos_are_refused_with_the_closest_name(tmp_path, text, expected):
    assert _one_line_error(tmp_path, text) == expected


def test_every_logged_value_is_a_valid_monitor(tmp_path):
    for monitor in ("loss", "accuracy", "val_loss", "val_accuracy"):
        text = _replace("epochs: 1}", f"epochs: 1, monitor: {monitor}, early_stopping: {{monitor: {monitor}}}}}")
        phase = load_recipe(write(tmp_path, text)).schedule[0]
        assert phase.monitor == phase.early_stopping.monitor == monitor


TWO_PHASES = _replace("  - {name: head, epochs: 1}", "  - {name: head, epochs: 1}\n  - {name: tune, epochs: 4, unfreeze: all}")


@pytest.mark.parametrize("spelling", ["schedule.1.epochs=20", "schedule[1].epochs=20", "schedule [1] .epochs=20"])
def test_set_reaches_list_items(tmp_path, spelling):
    recipe = load_recipe(write(tmp_path, TWO_PHASES), [spelling, "data.image_size.0=48"])
    assert [phase.epochs for phase in recipe.schedule] == [1, 20]
    assert recipe.data.image_size == [48, 32]


@pytest.mark.parametrize(
    "override, expected",
    [
        ("schedule.0.epochs=abc", "--set schedule.0.epochs=abc: schedule.0.epochs: Input should be a valid integer. Received: 'abc'"),
        ("schedule[1].epochs=0", "--set schedule[1].epochs=0: schedule.1.epochs: Input should be greater than or equal to 1. Received: 0"),
        ("schedule.2.epochs=3", "--set schedule.2.epochs=3: schedule.2: index 2 is out of range: schedule has 2 item(s), numbered from 0"),
        (
            "schedule.first.epochs=3",
            "--set schedule.first.epochs=3: schedule.first: schedule is a list; index it by position, e.g. schedule.0",
        ),
        (
            "schedule[x].epochs=3",
            "--set schedule[x].epochs=3: expected --set field.path=value, e.g. --set data.batch_size=64 or --set schedule.0.epochs=20",
        ),
        ("data.batch_size=", "--set data.batch_size=: data.batch_size: Input should be a valid integer. Received: None"),
        (
            "schedule.0.lr=0.1",
            "--set schedule.0.lr=0.1: schedule.0.lr: unknown field; expected one of: name, epochs, optimizer, learning_rate, lr_schedule, warmup_epochs, momentum, weight_decay, unfreeze, early_stopping, monitor",
        ),
        (
            "data={source: folder, path: flowers, inclde: a}",
            "--set data={source: folder, path: flowers, inclde: a}: data.inclde: unknown field; did you mean include?",
        ),
    ],
)
def test_override_errors_blame_the_override(tmp_path, override, expected):
    (tmp_path / "flowers").mkdir()
    path = write(tmp_path, TWO_PHASES)
    with pytest.raises(RecipeError) as error:
        load_recipe(path, [override])
    assert str(error.value) == expected


STANDARD_KEYWORDS = {
    "$schema", "$defs", "$ref", "title", "description", "type", "properties", "required", "additionalProperties",
    "items", "enum", "const", "default", "anyOf", "oneOf", "discriminator", "minimum", "maximum",
    "exclusiveMinimum", "exclusiveMaximum", "minItems", "maxItems", "minLength", "maxLength", "minProperties",
}  # fmt: skip


def _schemas(node):
    """Every schema object inside a JSON Schema (not the name maps of properties and $defs)."""
    if isinstance(node, list):
        for item in node:
            yield from _schemas(item)
    elif isinstance(node, dict):
        yield node
        for key, value in node.items():
            if key in ("properties", "$defs"):
                for child in value.values():
                    yield from _schemas(child)
            elif key not in ("default", "enum", "const", "discriminator", "required"):
                yield from _schemas(value)


def test_json_schema_uses_standard_keywords_and_describes_every_field():
    schema = json_schema()
    for node in _schemas(schema):
        assert set(node) <= STANDARD_KEYWORDS, sorted(set(node) - STANDARD_KEYWORDS)
        for name, field in node.get("properties", {}).items():
            assert field.get("description"), name
    definitions = schema["$defs"]
    assert (
        definitions["Augment"]["properties"]["zoom"] | {"minimum": 0, "exclusiveMaximum": 1} == definitions["Augment"]["properties"]["zoom"]
    )
    assert definitions["Phase"]["properties"]["learning_rate"]["exclusiveMinimum"] == 0
    assert definitions["Evaluation"]["properties"]["steps"]["items"]["minimum"] == 0
    assert definitions["TransferRecipe"]["properties"]["data"]["discriminator"]["propertyName"] == "source"
    assert definitions["EarlyStopping"]["properties"]["monitor"]["enum"] == ["loss", "accuracy", "val_loss", "val_accuracy"]
    assert {"type": "null"} in definitions["Phase"]["properties"]["unfreeze"]["anyOf"]  # a selector, or none
    assert "MobileNetV2" in definitions["ApplicationsBase"]["properties"]["name"]["enum"]


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


# The resolved recipe of a run made before each source had fields of its own: it spells
# out fields that its sources ignored.
OLD_RESOLVED_META = """\
kind: meta
name: sinusoid-maml
seed: 1
jit_compile: auto
distribute: {strategy: default, devices: null}
algorithm: maml
tasks: {source: sinusoid, name: null, path: null, data_dir: null, split: train, ways: 5, shots: 5, queries: 10, validation: 0.1,
        test: 0.2, classes: 200, samples: 20, image_size: [28, 28], channels: 1, rotations: [0]}
model:
  builtin: mlp
  base: null
  freeze: {layers: all, batchnorm: frozen}
  head: {units: [], activation: relu, dropout: 0.0, classes: null}
inner: {steps: 1, learning_rate: 0.01, first_order: false, multi_step_loss: true, multi_step_anneal: null, learn_rates: false}
outer: {optimizer: adam, learning_rate: 0.001, lr_schedule: constant, meta_batch_size: 25, iterations: 70000}
evaluation: {tasks: 600, steps: [1, 5, 10], every: 1000, validation_tasks: 100}
"""


def test_resolved_recipes_of_older_runs_still_load_without_the_fields_their_sources_ignored(tmp_path):
    from workbench.recipe import load_resolved_recipe

    path = tmp_path / "recipe.yaml"
    path.write_text(OLD_RESOLVED_META)
    with pytest.raises(RecipeError, match="tasks.name"):
        load_recipe(path)  # a recipe someone writes must not carry them
    recipe = load_resolved_recipe(path)
    assert (recipe.tasks.source, recipe.tasks.shots, recipe.tasks.queries) == ("sinusoid", 5, 10)
    assert recipe.model.builtin == "mlp" and recipe.model.base is None
    assert recipe.inner.multi_step_anneal is None  # a meaningful null is kept
    assert recipe.evaluation.steps == [1, 5, 10]
    path.write_text(OLD_RESOLVED_META.replace("shots: 5", "shots: five"))
    with pytest.raises(RecipeError, match="tasks.shots"):
        load_resolved_recipe(path)  # anything else wrong is still an error
