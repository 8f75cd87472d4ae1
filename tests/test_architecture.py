"""The import graph that docs/ARCHITECTURE.md draws: no circle among the modules of hamdata/ and trainers/ (imports
inside functions count too: a lazy import is still a dependency), hamdata never imports trainers, and no module
imports another module's private name."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("hamdata", "trainers")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))}


def imports_of(name: str, path: Path, known: set[str]) -> list[tuple[str, list[str]]]:
    """(module imported, names taken from it) for every import in the file that names a module of ours."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            names = [alias.name for alias in node.names]
            submodules = [f"{base}.{n}" for n in names if f"{base}.{n}" in known]
            found += [(m, []) for m in submodules]
            found.append((base, [n for n in names if f"{base}.{n}" not in known]))
    return [(m, names) for m, names in found if m in known and m != name]


def graph() -> dict[str, set[str]]:
    found = modules()
    return {name: {m for m, _ in imports_of(name, path, set(found))} for name, path in found.items()}


def test_no_import_circle():
    edges = graph()
    circles, state = [], {}

    def visit(node, trail):
        state[node] = "open"
        for nxt in sorted(edges[node]):
            if state.get(nxt) == "open":
                circles.append(trail[trail.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, trail + [nxt])
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    packages = {m for m in edges if "." not in m}  # a package's __init__ may gather its modules' public names
    assert [c for c in circles if not set(c) & packages] == []


def test_hamdata_never_imports_trainers():
    assert {m: sorted(d) for m, d in graph().items() if m.startswith("hamdata") and any(x.startswith("trainers") for x in d)} == {}


def test_no_private_name_crosses_a_module():
    found = modules()
    crossing = [f"{name} takes {target}.{n}" for name, path in found.items()
                for target, names in imports_of(name, path, set(found)) for n in names
                if n.startswith("_") and not n.startswith("__")]
    assert crossing == []


# hamdata's packages, lowest first: a module imports its own package and lower ones, never a higher one. The
# package root (hamdata/__init__.py: __version__, the public API) is outside the ladder.
LAYERS = [
    {"errors", "locks", "workspace", "parallel", "memory", "plots", "runfiles"},  # infrastructure
    {"inputs"},  # data as published, class sets
    {"store"},  # the build folder
    {"image", "split", "dedup"},  # rooms with one job each
    {"pages", "synth"},  # rooms built on those
    {"build", "balance", "verify", "stats", "report"},  # the commands
]


def layer_of(module: str) -> int:
    part = module.split(".")[1]
    return next(k for k, names in enumerate(LAYERS) if part in names)


def test_hamdata_imports_only_downward():
    upward = [f"{a} -> {b}" for a, targets in graph().items() if a.startswith("hamdata.")
              for b in targets if b.startswith("hamdata.") and layer_of(b) > layer_of(a)]
    assert upward == []
    placed = {p for names in LAYERS for p in names}
    assert {m.split(".")[1] for m in modules() if m.startswith("hamdata.")} == placed  # every module has its layer


def test_no_module_is_500_lines_or_more():
    long = {name: n for name, path in modules().items() if (n := len(path.read_text(encoding="utf-8").splitlines())) >= 500}
    assert long == {}


def source_outside_store() -> dict[str, str]:
    return {name: path.read_text(encoding="utf-8") for name, path in modules().items()
            if not name.startswith("hamdata.store")}


def test_the_build_folder_has_one_owner():
    """hamdata/store owns the build folder: nothing else reads dataset.json by string key (``card["..."]``,
    ``card.get(...)``: they read a typed Build), spells its name, or spells the balanced-N pattern; build and
    balance write through one BuildWriter."""
    import re

    keyed = re.compile(r"\bcard(\.get\(|\[)")
    readers = {name: keyed.findall(text) for name, text in source_outside_store().items()}
    assert {name: len(found) for name, found in readers.items() if found} == {}
    spelled = {name for name, text in source_outside_store().items() if '"dataset.json"' in text or '"balanced-' in text}
    assert spelled == set()
    everything = "".join(p.read_text(encoding="utf-8") for p in modules().values())
    assert everything.count('"dataset.json"') == 1 and everything.count('"balanced-"') == 1
    for command in ("build", "balance"):
        tree = ast.parse(modules()[f"hamdata.{command}"].read_text(encoding="utf-8"))
        called = {node.func.id for node in ast.walk(tree) if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)}
        assert "BuildWriter" in called and not {"ShardWriter", "ManifestWriter", "write_card", "write_info"} & called


def test_claiming_an_output_and_reading_a_temporary_name_are_written_once():
    """"Check, lock, check again" is Workspace.claim, and a ``.NAME.tmp-PID`` name is read by workspace.temporary_pid
    alone (the trainers' checkpoints ask workspace.left_behind)."""
    text = {name: path.read_text(encoding="utf-8") for name, path in modules().items()}
    assert [name for name, t in text.items() if 'rsplit("-", 1)' in t] == ["hamdata.workspace"]
    assert [name for name, t in text.items() if ".check()" in t and "hold(" in t] == ["hamdata.workspace"]
    for command in ("hamdata.build", "hamdata.balance"):
        assert ".claim()" in text[command] and "hold(" not in text[command]
