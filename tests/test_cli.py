"""The thin CLI: exit codes, messages, start-up without TensorFlow."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from workbench.cli import main
from workbench.recipe import json_schema

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "recipes").glob("*.yaml"))

# Runs the CLI in a fresh interpreter and reports which heavy modules it imported.
PROBE = """
import sys
from workbench.cli import main
try:
    main(sys.argv[1:], prog_name="workbench")
except SystemExit as exit:
    code = exit.code
heavy = sorted(m for m in ("tensorflow", "keras", "numpy", "matplotlib") if m in sys.modules)
print("IMPORTED:" + ",".join(heavy))
sys.exit(code)
"""


def run_cli_in_subprocess(*args):
    return subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, cwd=ROOT, timeout=120)


def test_help_and_validate_never_import_tensorflow():
    help_result = run_cli_in_subprocess("--help")
    assert help_result.returncode == 0 and "validate" in help_result.stdout
    assert "IMPORTED:\n" in help_result.stdout, help_result.stdout
    validate = run_cli_in_subprocess("validate", *map(str, RECIPES))
    assert validate.returncode == 0, validate.stderr
    assert "IMPORTED:\n" in validate.stdout, validate.stdout
    assert validate.stdout.count(": ok (") == len(RECIPES)


def test_runs_never_imports_tensorflow_or_matplotlib(tmp_path):
    run_dir = tmp_path / "runs" / "listed-20260101-000000"
    run_dir.mkdir(parents=True)
    (run_dir / "manifest.json").write_text('{"status": "finished", "kind": "meta", "created": "2026-01-01T00:00:00+00:00"}')
    listed = run_cli_in_subprocess("runs", str(tmp_path / "runs"))
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.startswith("name ") and "listed-20260101-000000  meta  finished" in listed.stdout
    assert listed.stdout.endswith("IMPORTED:numpy\n"), listed.stdout  # numpy comes with workbench.runs; nothing heavier


def test_example_recipes_are_valid_and_point_at_the_schema():
    assert len(RECIPES) >= 2
    result = CliRunner().invoke(main, ["validate", *map(str, RECIPES)])
    assert result.exit_code == 0, result.output
    for recipe in RECIPES:
        assert recipe.read_text().startswith("# yaml-language-server: $schema=recipe.schema.json"), recipe


def test_shipped_schema_files_are_current():
    current = json_schema()
    for path in (ROOT / "recipes" / "recipe.schema.json", ROOT / "workbench" / "recipe.schema.json"):
        assert json.loads(path.read_text()) == current, f"{path} is stale: regenerate with `workbench schema -o {path}`"


def test_schema_command_prints_json_schema():
    result = CliRunner().invoke(main, ["schema"])
    assert result.exit_code == 0
    assert json.loads(result.output)["discriminator"]["propertyName"] == "kind"


@pytest.mark.parametrize("kind", ["transfer", "meta"])
def test_init_writes_a_valid_recipe_and_never_overwrites(tmp_path, kind):
    path = tmp_path / f"{kind}.yaml"
    runner = CliRunner()
    result = runner.invoke(main, ["init", "--kind", kind, str(path)])
    assert result.exit_code == 0, result.output
    assert runner.invoke(main, ["validate", str(path)]).exit_code == 0
    schema_path = path.read_text().splitlines()[0].split("$schema=")[1]
    assert Path(schema_path).is_file()
    before = path.read_bytes()
    again = runner.invoke(main, ["init", "--kind", kind, str(path)])
    assert again.exit_code == 2 and "already exists" in again.output
    assert path.read_bytes() == before


def test_init_and_schema_make_missing_folders_and_leave_no_temporary_file(tmp_path):
    recipe = tmp_path / "new" / "deeper" / "meta.yaml"
    result = CliRunner().invoke(main, ["init", "--kind", "meta", str(recipe)])
    assert result.exit_code == 0, result.output
    assert result.output == f"wrote {recipe}; check it with: workbench validate {recipe}\n"
    assert CliRunner().invoke(main, ["validate", str(recipe)]).exit_code == 0
    schema_path = tmp_path / "schemas" / "recipe.schema.json"
    result = CliRunner().invoke(main, ["schema", "-o", str(schema_path)])
    assert result.exit_code == 0, result.output
    assert json.loads(schema_path.read_text()) == json_schema()
    schema_path.write_text("stale")
    assert CliRunner().invoke(main, ["schema", "-o", str(schema_path)]).exit_code == 0
    assert json.loads(schema_path.read_text()) == json_schema()  # regenerating replaces the old file
    assert [path.name for path in recipe.parent.iterdir()] == ["meta.yaml"]
    assert [path.name for path in schema_path.parent.iterdir()] == ["recipe.schema.json"]


def test_an_output_under_a_file_is_a_one_line_error(tmp_path):
    (tmp_path / "taken").write_text("a file, not a folder")
    for args in (["init", str(tmp_path / "taken" / "transfer.yaml")], ["schema", "-o", str(tmp_path / "taken" / "deeper" / "schema.json")]):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 2, result.output
        folder = Path(args[-1]).parent
        assert result.output == f"{folder}: cannot make this folder (a file is in the way); choose another path\n"


def test_validate_reports_each_file_and_fails_if_any_is_invalid(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: meta\n")
    result = CliRunner().invoke(main, ["validate", str(RECIPES[0]), str(bad)])
    assert result.exit_code == 2
    assert f"{RECIPES[0]}: ok" in result.output and f"{bad}:1:1: tasks: field required" in result.output


def test_bad_override_syntax_is_a_usage_error():
    result = CliRunner().invoke(main, ["validate", str(RECIPES[0]), "--set", "no-equals-sign"])
    assert result.exit_code == 2 and "expected --set field.path=value" in result.output


def test_python_dash_m_works():
    result = subprocess.run([sys.executable, "-m", "workbench", "--help"], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert result.returncode == 0 and "Usage: workbench" in result.stdout
