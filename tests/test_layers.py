"""The package's layers and the one direction of their dependencies:

    core  <-  stores  <-  accounts  <-  http  <-  server, cli and their commands, dev

Below them all, read by every layer: ``constants``, ``config`` (and its ``configparse``, ``configvars``), ``redisurl``,
``keys``, ``sealing``, ``safefiles``, ``safetext``. ``logs`` (request ids, formatters) sits with HTTP.
A module may import its own layer and the ones below, never one above, and no chain of imports comes
back to where it started.
Imports inside functions count (they run too); those under ``if TYPE_CHECKING:`` do not.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import forwardauth

PACKAGE = Path(forwardauth.__file__).parent
BASE = {
    "forwardauth",
    "forwardauth.constants",
    "forwardauth.config",
    "forwardauth.configparse",
    "forwardauth.configvars",
    "forwardauth.redisurl",
    "forwardauth.keys",
    "forwardauth.sealing",
    "forwardauth.safefiles",
    "forwardauth.safetext",
}
LAYERS = {"core": 1, "stores": 2, "accounts": 3, "http": 4, "dev": 5}
NAMES = {0: "base", 1: "core", 2: "stores", 3: "accounts", 4: "http", 5: "server/cli"}


def layer(module: str) -> int:
    if module in BASE:
        return 0
    if module == "forwardauth.logs":
        return LAYERS["http"]
    parts = module.split(".")
    return LAYERS.get(parts[1], 5) if len(parts) > 1 else 0


def module_of(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def exists(module: str) -> bool:
    relative = Path(*module.split("."))
    return (PACKAGE.parent / relative).with_suffix(".py").is_file() or (PACKAGE.parent / relative).is_dir()


def type_checking_only(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def imports_of(path: Path) -> set[str]:
    """The package's modules that ``path`` imports at run time (at any depth of its code)."""
    found: set[str] = set()
    stack: list[ast.AST] = [ast.parse(path.read_text(), str(path))]
    while stack:
        node = stack.pop()
        if type_checking_only(node):
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("forwardauth"))
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: a relative import; the package uses absolute ones"
            if node.module and node.module.startswith("forwardauth"):
                for alias in node.names:  # `from forwardauth.stores import users` imports a module
                    sub = f"{node.module}.{alias.name}"
                    found.add(sub if exists(sub) else node.module)
        stack.extend(ast.iter_child_nodes(node))
    return found


GRAPH = {module_of(path): imports_of(path) for path in sorted(PACKAGE.rglob("*.py"))}


def test_every_import_points_down_the_layers() -> None:
    upward = [
        f"{importer} ({NAMES[layer(importer)]}) imports {imported} ({NAMES[layer(imported)]})"
        for importer, imported_set in GRAPH.items()
        for imported in sorted(imported_set)
        if layer(imported) > layer(importer)
    ]
    assert upward == []


def test_the_graph_is_read_whole() -> None:
    """The check above sees every layer and real edges (a parser that found nothing would pass it)."""
    assert {layer(module) for module in GRAPH} == set(NAMES)
    assert "forwardauth.core.policy" in GRAPH["forwardauth.http.authz"]
    assert "forwardauth.stores.sessions" in GRAPH["forwardauth.accounts.issue"]


def test_no_import_cycle() -> None:
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        if module in path:
            raise AssertionError("import cycle: " + " -> ".join([*path[path.index(module) :], module]))
        if module in done:
            return
        for imported in sorted(GRAPH.get(module, ())):
            visit(imported, [*path, module])
        done.add(module)

    for module in GRAPH:
        visit(module, [])


def loaded_after(modules: list[str]) -> set[str]:
    """Top-level packages a fresh interpreter has loaded after importing ``modules``."""
    code = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    return set(json.loads(result.stdout))


def test_the_core_loads_no_server_and_no_store_client() -> None:
    core = sorted(module for module in GRAPH if layer(module) == LAYERS["core"])
    assert "forwardauth.core.policy" in core and "forwardauth.core.tokens" in core
    loaded = loaded_after(core)
    assert "forwardauth" in loaded and "jwt" in loaded  # it did import them
    assert not loaded & {"aiohttp", "psycopg2", "redis"}


def test_accounts_load_no_http() -> None:
    """Account operations serve the CLI as well as the server: no web framework under them."""
    loaded = loaded_after(sorted(module for module in GRAPH if layer(module) <= LAYERS["accounts"]))
    assert {"psycopg2", "redis"} <= loaded
    assert "aiohttp" not in loaded
