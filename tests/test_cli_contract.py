"""The one error contract of every command: a user mistake is one line on stderr starting with ``error:`` and exit
2, click's own usage errors included; and the answer comes before torch, torchvision, albumentations or OpenCV is
imported (an import hook in a fresh interpreter watches for them), so that a typo costs well under a second."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "torchvision", "albumentations", "cv2")

# Runs cli.main with the arguments in a fresh interpreter whose import hook records any heavy module imported.
PROBE = """
import importlib.abc, json, sys
HEAVY = {heavy!r}
seen = []
class Watch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in HEAVY and name.split(".")[0] not in seen:
            seen.append(name.split(".")[0])
        return None
sys.meta_path.insert(0, Watch())
sys.path.insert(0, {root!r})
sys.argv = ["hamdata"] + {args!r}
import cli
try:
    cli.main()
    code = 0
except SystemExit as exc:
    code = exc.code
print(json.dumps({{"code": code, "heavy": seen}}))
"""

MISSING = "/nonexistent/hamdata-test"
CASES = [
    # (arguments, what the one line says)
    (["train", "phase5", "--shards", MISSING], "no such folder"),
    (["train", "phase5", "--resume", MISSING], "no such checkpoint"),
    (["train", "phase5", "--shards", ROOT / "manifests", "--weights", MISSING + ".pt"], "--weights"),
    (["train", "phase5", "--epochs", "many"], "Invalid value for '--epochs'"),
    (["train", "phase9"], "No such command 'phase9'"),
    (["evaluate", MISSING + ".pt"], "no such checkpoint"),
    (["evaluate", MISSING + ".pt", "--split", "tset"], "'tset' is not one of 'test', 'val', 'heldout'"),
    (["evaluate"], "Missing argument 'CHECKPOINT'"),
    (["predict", MISSING + ".pt", "a.jpg"], "no such checkpoint"),
    (["ensemble", MISSING + "-a", MISSING + "-b"], "no such checkpoint"),
    (["balance", "--target", "0"], "--target: expected a positive number"),
    (["balance", "--target", "5", "--shards", MISSING], "no such folder"),
    (["balance", "--target", "abc"], "is not a valid integer"),
    (["build-shards", "--data", MISSING], "--data: no such folder"),
    (["build-shards", "--data", ROOT / "manifests", "--size", "abc"], "--size: expected N or WxH"),
    (["build-shards", "--bogus"], "No such option '--bogus'"),
    (["build-shards", "--data", ROOT / "manifests", "--workers", "-2"], "-2 is not in the range x>=0"),
    (["build-shards", "--data", ROOT / "manifests", "--classes", "isic2020"], "Invalid value for '--classes'"),
    (["verify", MISSING], "no such folder"),
    (["stats", MISSING], "no such file or folder"),
    (["report", MISSING], "no such folder"),
]


def probe(args: list[str]) -> tuple[dict, str]:
    code = PROBE.format(heavy=HEAVY, root=str(ROOT), args=[str(a) for a in args])
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.stdout.strip(), done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr


@pytest.mark.parametrize("args,says", CASES, ids=[" ".join(map(str, a))[:60] for a, _ in CASES])
def test_a_user_mistake_is_one_line_exit_2_before_any_heavy_import(args, says):
    result, stderr = probe(args)
    lines = stderr.strip().splitlines()
    assert result["code"] == 2, stderr
    assert len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0], stderr
    assert "Traceback" not in stderr
    assert result["heavy"] == [], f"{' '.join(args)} imported {result['heavy']} before saying no"


def test_click_usage_errors_name_the_commands_help():
    _, stderr = probe(["evaluate", MISSING, "--split", "tset"])
    assert stderr.strip().endswith("(see `hamdata evaluate --help`)")


def test_help_and_no_arguments_show_the_help_without_heavy_imports():
    for args in (["--help"], [], ["train"], ["train", "phase5", "--help"], ["evaluate", "--help"]):
        result, stderr = probe(args)
        assert result["code"] == 0 and result["heavy"] == [], (args, result, stderr)


def test_verify_of_a_damaged_build_keeps_its_problem_lines_and_exit_1(build, tmp_path):
    import shutil

    damaged = tmp_path / "b"
    shutil.copytree(build, damaged)
    (damaged / "manifest.csv").write_text("key,split\n", encoding="utf-8")
    from helpers import verify

    code, lines = verify(damaged)
    assert code == 1 and lines


DOCUMENTS = ("README.md", *sorted(f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md")))


def documented_commands(document: str) -> list[list[str]]:
    """Every `python cli.py ...` line of a document's bash blocks (continuations joined, comments and `&& ...` cut)."""
    import shlex

    text = (ROOT / document).read_text(encoding="utf-8").replace("\\\n", " ")
    commands, in_bash = [], False
    for line in text.splitlines():
        if line.startswith("```"):
            in_bash = line.strip() in ("```bash", "```sh")
            continue
        if in_bash and line.startswith("python cli.py "):
            for part in line.split(" && "):
                words = shlex.split(part, comments=True)
                if words[:2] == ["python", "cli.py"]:
                    commands.append(words[2:])
    return commands


def test_every_documented_command_line_names_a_command_and_options_that_exist():
    """Each example of README.md and docs/*.md, run with --help appended: click rejects an unknown command or option
    (exit 2) before it looks at --help, so a renamed option in the code or a typo in the docs fails here."""
    from click.testing import CliRunner

    from cli import main

    found = {document: documented_commands(document) for document in DOCUMENTS}
    assert len(found["README.md"]) >= 12 and len(found["docs/commands.md"]) >= 30, {d: len(c) for d, c in found.items()}
    for document, commands in found.items():
        for words in commands:
            result = CliRunner().invoke(main, [*words, "--help"])
            assert result.exit_code == 0, (document, words, result.output)
