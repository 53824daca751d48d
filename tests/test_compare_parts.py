"""The parts of `kind: compare` below its runner: Lake's runs, the recipe kind, the fixed episodes and their digest, the leakage check."""

import io
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from workbench.compare.episodes import build_compare_episodes, episodes_digest
from workbench.compare.leakage import check_leakage
from workbench.data.images import ImageFolder
from workbench.data.lake_runs import error_rate, load_lake_runs
from workbench.errors import ArgumentError, DataError, RecipeError
from workbench.recipe import load_recipe, to_yaml
from workbench.recipe.paths import data_root

OMNIGLOT = data_root() / "omniglot"
LAKE_RUNS = OMNIGLOT / "all_runs.zip"
needs_omniglot = pytest.mark.skipif(not LAKE_RUNS.is_file(), reason="the Omniglot archives are not under the data root")

HELD_OUT = r"'^(Japanese_\(katakana\)|Sanskrit|Tagalog)/'"  # the alphabets of small2 that small1 does not hold

GLYPH_COMPARE = """\
kind: compare
seed: 3
tasks: {source: synthetic, name: glyphs, first_class: 500, classes: 8, samples: 4, ways: 3, shots: 1, queries: 2, image_size: [16, 16]}
evaluation: {tasks: 30, steps: [0, 1]}
entrants:
  - {name: glyphs, recipe: glyphs.yaml, adapt: {method: prototypes}}
"""

GLYPH_TRANSFER = """\
kind: transfer
data: {source: synthetic, name: glyphs, classes: 6, first_class: 0, samples: 4, image_size: [16, 16], channels: 1}
base: {source: builtin, name: conv4}
schedule:
  - {epochs: 1}
"""


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


# ---------------------------------------------------------------- Lake's runs


def _answer(archive: zipfile.ZipFile, run: int, item: int) -> int:
    """The label of a test item, read from the run's class_labels.txt: classNN.png is label NN - 1."""
    lines = archive.read(f"run{run:02d}/class_labels.txt").decode().splitlines()
    answers = dict(line.split() for line in lines if line.strip())
    return int(Path(answers[f"run{run:02d}/test/item{item:02d}.png"]).stem.removeprefix("class")) - 1


@needs_omniglot
def test_lake_runs_are_twenty_20_way_one_shot_episodes_with_the_files_answers():
    episodes = load_lake_runs(LAKE_RUNS, (28, 28), 1)
    assert episodes.support_x.shape == episodes.query_x.shape == (20, 20, 28, 28, 1)
    assert episodes.support_x.dtype == episodes.query_x.dtype == np.float32
    assert (episodes.support_y == np.arange(20)).all()
    with zipfile.ZipFile(LAKE_RUNS) as archive:
        for run, item in ((1, 1), (1, 2), (17, 13), (20, 20)):
            assert episodes.query_y[run - 1, item - 1] == _answer(archive, run, item)
        # Raw pixels in [0, 255], converted as every image source converts them.
        decoded = Image.open(io.BytesIO(archive.read("run01/test/item01.png"))).convert("L").resize((28, 28), Image.Resampling.BILINEAR)
    assert (episodes.query_x[0, 0, :, :, 0] == np.asarray(decoded, dtype=np.float32)).all()
    assert episodes.query_x.max() == 255.0 and episodes.query_x.min() == 0.0
    for run in range(20):  # each run tests every class once
        assert sorted(episodes.query_y[run]) == list(range(20))


@needs_omniglot
def test_lake_error_rate_is_over_all_400_test_images():
    episodes = load_lake_runs(LAKE_RUNS, (28, 28), 1)
    assert error_rate(episodes.query_y, episodes) == 0.0
    # Label 0 is right for one test image of each run: 20 of 400.
    assert error_rate(np.zeros((20, 20), np.int32), episodes) == pytest.approx(1 - 20 / 400)
    with pytest.raises(ArgumentError, match="one predicted label per test image"):
        error_rate(np.zeros((20, 19), np.int32), episodes)


@needs_omniglot
def test_lake_runs_read_from_a_folder_and_refuse_a_missing_answer(tmp_path):
    with zipfile.ZipFile(LAKE_RUNS) as archive:
        archive.extractall(tmp_path / "runs", [name for name in archive.namelist() if name.startswith("run02/")])
    episodes = load_lake_runs(tmp_path / "runs", (16, 16), 3)
    assert episodes.query_x.shape == (1, 20, 16, 16, 3)
    with zipfile.ZipFile(LAKE_RUNS) as archive:
        assert episodes.query_y[0, 4] == _answer(archive, 2, 5)
    labels = tmp_path / "runs" / "run02" / "class_labels.txt"
    labels.write_text("\n".join(line for line in labels.read_text().splitlines() if "item07" not in line))
    with pytest.raises(DataError, match=r"class_labels.txt gives no answer for run02/test/item07.png"):
        load_lake_runs(tmp_path / "runs")


def test_lake_runs_missing_file_is_a_data_error_and_a_recipe_error_at_the_data_root(tmp_path, monkeypatch):
    with pytest.raises(DataError, match="No such file: Lake's one-shot runs"):
        load_lake_runs(tmp_path / "all_runs.zip")
    monkeypatch.setenv("WORKBENCH_DATA", str(tmp_path / "empty"))
    write(tmp_path, "glyphs.yaml", GLYPH_TRANSFER)
    path = write(tmp_path, "lake.yaml", "kind: compare\ntasks: {source: lake_runs}\nentrants:\n  - {name: a, recipe: glyphs.yaml}\n")
    with pytest.raises(RecipeError) as error:
        load_recipe(path)
    assert str(error.value).startswith(f"{path}:2:8: tasks: dataset not found at ")
    assert "omniglot/all_runs.zip" in str(error.value) and "$WORKBENCH_DATA" in str(error.value)


# ---------------------------------------------------------------- the recipe kind


@pytest.mark.parametrize(
    "entrants, expected",
    [
        ("  - {recipe: glyphs.yaml}\n", "6:5: entrants.0.name: field required: names the entrant in compare.json and the table"),
        (
            "  - {name: a, recipe: glyphs.yaml}\n  - {name: a, run: old}\n",
            "7:12: entrants.1.name: entrant name 'a' is used twice; give each entrant its own name",
        ),
        (
            "  - {name: a, recipe: glyphs.yaml, run: old}\n",
            "6:5: entrants.0: give either recipe (a recipe file) or run (a finished run directory), not both",
        ),
        ("  - {name: a}\n", "6:5: entrants.0: give either recipe (a recipe file) or run (a finished run directory)"),
        (
            "  - {name: a, recipe: glyphs.yaml, adapt: {method: head, unfreeze: all}}\n",
            "6:58: entrants.0.adapt.unfreeze: unknown field; unfreeze does not apply to method: head; "
            "expected one of: method, learning_rate, optimizer",
        ),
        (
            "  - {name: a, recipe: glyphs.yaml, adapt: {method: protos}}\n",
            "6:52: entrants.0.adapt.method: unknown method 'protos'; did you mean prototypes? expected one of: prototypes, head, finetune",
        ),
        ("  - {name: a, run: missing}\n", "6:20: entrants.0.run: run directory"),
    ],
    ids=["missing name", "duplicate name", "recipe and run", "neither", "field of another method", "unknown method", "missing run"],
)
def test_entrant_errors_name_file_line_and_field(tmp_path, entrants, expected):
    (tmp_path / "old").mkdir()
    write(tmp_path, "glyphs.yaml", GLYPH_TRANSFER)
    path = write(tmp_path, "compare.yaml", GLYPH_COMPARE.split("entrants:\n")[0] + "entrants:\n" + entrants)
    with pytest.raises(RecipeError) as error:
        load_recipe(path)
    assert str(error.value).startswith(f"{path}:{expected}")
    assert "\n" not in str(error.value)


@needs_omniglot
def test_compare_fields_of_other_kinds_and_sources_are_refused(tmp_path):
    write(tmp_path, "glyphs.yaml", GLYPH_TRANSFER)
    folder = GLYPH_COMPARE.replace(
        "{source: synthetic, name: glyphs, first_class: 500, classes: 8, samples: 4,",
        "{source: folder, path: omniglot/images_background_small2.zip, validation: 0.1,",
    )
    with pytest.raises(RecipeError, match=r":3:70: tasks.validation: unknown field; expected one of: source, shots, .*, path, include$"):
        load_recipe(write(tmp_path, "folder.yaml", folder))
    lake = "kind: compare\ntasks: {source: lake_runs}\nevaluation: {tasks: 20}\nentrants:\n  - {name: a, recipe: glyphs.yaml}\n"
    with pytest.raises(RecipeError, match=r":3:21: evaluation.tasks: lake_runs scores every run of the file, as published"):
        load_recipe(write(tmp_path, "lake.yaml", lake))
    sinusoid = GLYPH_COMPARE.replace(GLYPH_COMPARE.splitlines()[2], "tasks: {source: sinusoid, shots: 5}")
    with pytest.raises(RecipeError, match=r":6:57: entrants.0.adapt.method: prototypes classify, but sinusoid tasks are regression"):
        load_recipe(write(tmp_path, "sinusoid.yaml", sinusoid))


@needs_omniglot
def test_compare_recipe_defaults_and_resolved_round_trip(tmp_path):
    write(tmp_path, "glyphs.yaml", GLYPH_TRANSFER)
    (tmp_path / "runs" / "old").mkdir(parents=True)
    text = f"""\
    kind: compare
    tasks: {{source: folder, path: omniglot/images_background_small2.zip, include: {HELD_OUT}}}
    entrants:
      - {{name: transfer, recipe: glyphs.yaml, adapt: {{method: finetune, unfreeze: {{last: 2}}}}}}
      - {{name: head, recipe: glyphs.yaml, adapt: {{method: head}}}}
      - {{name: earlier, run: runs/old}}
    """
    recipe = load_recipe(write(tmp_path, "omniglot.yaml", text))
    assert (recipe.name, recipe.seed, recipe.evaluation.tasks, recipe.evaluation.steps) == ("omniglot", 1337, 600, [1])
    assert recipe.tasks.path == str(OMNIGLOT / "images_background_small2.zip")
    finetune, head, earlier = recipe.entrants
    assert (finetune.adapt.learning_rate, finetune.adapt.optimizer, finetune.adapt.unfreeze) == (1.0e-3, "adam", {"last": 2})
    assert (head.adapt.learning_rate, earlier.adapt, earlier.run) == (1.0e-2, None, str(tmp_path / "runs" / "old"))
    assert finetune.recipe == str(tmp_path / "glyphs.yaml")
    resolved = tmp_path / "runs" / "resolved.yaml"
    resolved.write_text(to_yaml(recipe))
    assert load_recipe(resolved).model_dump() == recipe.model_dump()
    lake = load_recipe(write(tmp_path, "lake.yaml", "kind: compare\ntasks: {source: lake_runs}\nentrants:\n  - {name: a, run: runs/old}\n"))
    assert (lake.tasks.path, lake.evaluation.tasks) == (str(LAKE_RUNS), None)


# Runs the CLI in a fresh interpreter and reports which heavy modules it imported.
PROBE = """
import sys
from workbench.cli import main
try:
    main(sys.argv[1:], prog_name="workbench")
except SystemExit as exit:
    code = exit.code
print("IMPORTED:" + ",".join(sorted(m for m in ("tensorflow", "keras", "numpy") if m in sys.modules)))
sys.exit(code)
"""


def test_validate_checks_a_compare_recipe_without_importing_tensorflow(tmp_path):
    write(tmp_path, "glyphs.yaml", GLYPH_TRANSFER)
    path = write(tmp_path, "compare.yaml", GLYPH_COMPARE)
    result = subprocess.run([sys.executable, "-c", PROBE, "validate", str(path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{path}: ok (compare: compare)\nIMPORTED:\n"


compare_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-3, 700), st.text(max_size=6), st.sampled_from(["prototypes", "head", "lake_runs"])),
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.dictionaries(st.sampled_from(["name", "recipe", "run", "adapt", "method", "tasks", "steps", "source", "unfreeze"]), children),
    ),
    max_leaves=12,
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.fixed_dictionaries(
        {"kind": st.just("compare")}, optional={"tasks": compare_values, "evaluation": compare_values, "entrants": compare_values}
    )
)
def test_random_compare_recipes_load_or_fail_with_a_recipe_error(tmp_path, mapping):
    path = tmp_path / "fuzz.yaml"
    path.write_text(yaml.safe_dump(mapping))
    try:
        load_recipe(path)
    except RecipeError as error:
        assert all(line.startswith(str(path)) for line in str(error).splitlines())


# ---------------------------------------------------------------- fixed episodes and digest


def test_the_same_recipe_gives_byte_identical_episodes_and_digest(tmp_path):
    write(tmp_path, "glyphs.yaml", GLYPH_TRANSFER)
    recipe = load_recipe(write(tmp_path, "compare.yaml", GLYPH_COMPARE))
    first, digest, classes = build_compare_episodes(recipe)
    again, same, _ = build_compare_episodes(load_recipe(tmp_path / "compare.yaml"))
    assert first.support_x.shape == (30, 3, 16, 16, 1) and first.query_x.shape == (30, 6, 16, 16, 1)
    for field in ("support_x", "support_y", "query_x", "query_y"):
        assert getattr(first, field).tobytes() == getattr(again, field).tobytes()
    assert same == digest == episodes_digest(first) and len(digest) == 64
    other, other_digest, other_classes = build_compare_episodes(
        load_recipe(write(tmp_path, "seed.yaml", GLYPH_COMPARE.replace("seed: 3", "seed: 4")))
    )
    assert other_digest != digest and other.support_x.tobytes() != first.support_x.tobytes()
    assert classes == other_classes == tuple(f"glyph-{index}" for index in range(500, 508))
    # The digest covers dtypes and shapes too, not only the bytes.
    assert episodes_digest(first.take(slice(0, 15))) != digest
    relabelled = type(first)(first.support_x, first.support_y.astype(np.int64), first.query_x, first.query_y)
    assert episodes_digest(relabelled) != digest


def test_sinusoid_episodes_are_the_fixed_tasks_of_the_seed(tmp_path):
    write(tmp_path, "glyphs.yaml", GLYPH_TRANSFER)
    text = GLYPH_COMPARE.replace(GLYPH_COMPARE.splitlines()[2], "tasks: {source: sinusoid, shots: 5, queries: 10}").replace(
        "method: prototypes", "method: head"
    )
    recipe = load_recipe(write(tmp_path, "sinusoid.yaml", text))
    episodes, digest, classes = build_compare_episodes(recipe)
    assert episodes.support_x.shape == (30, 5, 1) and episodes.query_y.shape == (30, 10, 1)
    assert build_compare_episodes(recipe)[1] == digest
    assert classes == ()


@needs_omniglot
def test_folder_episodes_draw_from_every_included_class_only(tmp_path):
    write(tmp_path, "glyphs.yaml", GLYPH_TRANSFER)
    text = f"""\
    kind: compare
    seed: 1
    tasks: {{source: folder, path: omniglot/images_background_small2.zip, include: {HELD_OUT}, ways: 5, shots: 1, queries: 3,
             rotations: [0, 180]}}
    evaluation: {{tasks: 40, steps: [0, 1, 5]}}
    entrants:
      - {{name: glyphs, recipe: glyphs.yaml}}
    """
    recipe = load_recipe(write(tmp_path, "omniglot.yaml", text))
    episodes, digest, classes = build_compare_episodes(recipe)
    assert len(classes) == 106 and {name.split("/")[0] for name in classes} == {"Japanese_(katakana)", "Sanskrit", "Tagalog"}
    assert episodes.support_x.shape == (40, 5, 28, 28, 1) and episodes.query_x.shape == (40, 15, 28, 28, 1)
    assert build_compare_episodes(recipe)[1] == digest
    # Every support image is a (possibly rotated) image of a test class.
    folder = ImageFolder.open(recipe.tasks.path)
    test_images = folder.load(classes, (28, 28), 1).images.astype(np.float32)
    pool = {image.tobytes() for image in test_images} | {np.rot90(image, 2).tobytes() for image in test_images}
    assert all(image.tobytes() in pool for image in episodes.support_x.reshape(-1, 28, 28, 1))


@needs_omniglot
def test_lake_recipe_episodes_are_the_files_runs(tmp_path):
    write(tmp_path, "glyphs.yaml", GLYPH_TRANSFER)
    recipe = load_recipe(
        write(tmp_path, "lake.yaml", "kind: compare\ntasks: {source: lake_runs}\nentrants:\n  - {name: a, recipe: glyphs.yaml}\n")
    )
    episodes, digest, classes = build_compare_episodes(recipe)
    assert digest == episodes_digest(load_lake_runs(LAKE_RUNS, (28, 28), 1))
    assert episodes.num_tasks == 20
    assert len(classes) == 40 and classes[:2] == ("run01/test", "run01/training")


# ---------------------------------------------------------------- leakage


def _omniglot_meta(validation: str, test: str, model: str = "{builtin: conv4}") -> str:
    return f"""\
    kind: meta
    seed: 1
    tasks:
      source: folder
      path: omniglot/images_background_small1.zip
      validation: {validation}
      test: {test}
      ways: 5
      shots: 1
      queries: 15
      rotations: [0, 90, 180, 270]
    model: {model}
    """


def _omniglot_transfer(archive: str, include: str = "null", base: str = "{source: builtin, name: conv4}") -> str:
    return f"""\
    kind: transfer
    data: {{source: folder, path: omniglot/{archive}, include: {include}, validation: 0.1, test: 0.1, image_size: [28, 28], channels: 1}}
    base: {base}
    schedule:
      - {{epochs: 1}}
    """


@pytest.fixture
def held_out_classes(tmp_path):
    if not LAKE_RUNS.is_file():
        pytest.skip("the Omniglot archives are not under the data root")
    write(tmp_path, "glyphs.yaml", GLYPH_TRANSFER)
    text = f"kind: compare\ntasks: {{source: folder, path: omniglot/images_background_small2.zip, include: {HELD_OUT}}}\nevaluation: {{tasks: 1}}\n"
    recipe = load_recipe(write(tmp_path, "compare.yaml", text + "entrants:\n  - {name: a, recipe: glyphs.yaml}\n"))
    return build_compare_episodes(recipe)[2]


def _check(tmp_path, classes, name, text):
    path = write(tmp_path, f"{name}.yaml", text)
    check_leakage(classes, name, path, load_recipe(path))
    return path


def test_leakage_accepts_recipes_trained_and_selected_on_small1(tmp_path, held_out_classes):
    _check(tmp_path, held_out_classes, "pretrain", _omniglot_transfer("images_background_small1.zip"))
    _check(tmp_path, held_out_classes, "maml", _omniglot_meta("0.1", "0.2"))
    # small2's Greek and Latin are no test classes here: a meta recipe may validate on them.
    _check(tmp_path, held_out_classes, "greek", _omniglot_transfer("images_background_small2.zip", "'^(Greek|Latin)/'"))


def test_leakage_refuses_a_meta_recipe_validated_on_small2(tmp_path, held_out_classes):
    with pytest.raises(RecipeError) as error:
        _check(tmp_path, held_out_classes, "maml", _omniglot_meta("omniglot/images_background_small2.zip", "0.2"))
    message = str(error.value)
    assert message.startswith(f"{tmp_path / 'maml.yaml'}:6:15: tasks.validation: entrant 'maml' meta-validates on class '")
    leaked = message.split(" on class '")[1].split("'")[0]
    assert leaked in held_out_classes and "@" not in leaked  # a rotated class is its unrotated class
    assert f"recipe='{tmp_path / 'maml.yaml'}'" in message and "\n" not in message


def test_leakage_refuses_a_transfer_recipe_on_small2(tmp_path, held_out_classes):
    with pytest.raises(
        RecipeError, match=r"transfer.yaml:2:30: data.path: entrant 'transfer' trains on class 'Japanese_\(katakana\)/character01'"
    ):
        _check(tmp_path, held_out_classes, "transfer", _omniglot_transfer("images_background_small2.zip"))


def test_leakage_follows_the_base_recipe(tmp_path, held_out_classes):
    write(tmp_path, "small2.yaml", _omniglot_transfer("images_background_small2.zip", HELD_OUT))
    with pytest.raises(RecipeError) as error:
        _check(tmp_path, held_out_classes, "anil", _omniglot_meta("0.1", "0.2", "{base: {source: recipe, path: small2.yaml}}"))
    message = str(error.value)
    assert message.startswith(
        f"{tmp_path / 'small2.yaml'}:2:30: data.path: entrant 'anil' trains on class 'Japanese_(katakana)/character01'"
    )
    assert f"through the base of {tmp_path / 'anil.yaml'}" in message


def test_leakage_of_glyph_classes_by_index(tmp_path):
    write(tmp_path, "glyphs.yaml", GLYPH_TRANSFER)
    recipe = load_recipe(write(tmp_path, "compare.yaml", GLYPH_COMPARE))
    classes = build_compare_episodes(recipe)[2]
    check_leakage(classes, "glyphs", tmp_path / "glyphs.yaml", load_recipe(tmp_path / "glyphs.yaml"))
    meta = "kind: meta\ntasks: {source: synthetic, name: glyphs, classes: 600}\nmodel: {builtin: conv4}\n"
    with pytest.raises(RecipeError, match=r"many.yaml:2:\d+: tasks.classes: entrant 'many' meta-\w+ on class 'glyph-50\d'"):
        _check(tmp_path, classes, "many", meta)


def test_tfds_classes_are_named_by_dataset_and_label(tmp_path):
    import tensorflow_datasets as tfds  # served by tfds.testing.mock_data: no downloads here

    write(
        tmp_path,
        "meta.yaml",
        "kind: meta\ntasks: {source: tfds, name: mnist, ways: 2, validation: 0.2, test: 0.2}\nmodel: {builtin: conv4}\n",
    )
    text = GLYPH_COMPARE.replace(GLYPH_COMPARE.splitlines()[2], "tasks: {source: tfds, name: 'mnist:3.0.1', ways: 3, shots: 1, queries: 2}")
    recipe = load_recipe(write(tmp_path, "compare.yaml", text.replace("glyphs.yaml", "meta.yaml")))
    with tfds.testing.mock_data(num_examples=200):
        episodes, digest, classes = build_compare_episodes(recipe)
        assert build_compare_episodes(recipe)[1] == digest
        with pytest.raises(RecipeError, match=r"meta.yaml:2:\d+: tasks.split: entrant 'meta' meta-learns on class 'mnist/\d'"):
            check_leakage(classes, "meta", tmp_path / "meta.yaml", load_recipe(tmp_path / "meta.yaml"))
    assert set(classes) == {f"mnist/{digit}" for digit in range(10)}
    assert episodes.support_x.shape == (30, 3, 28, 28, 1)
