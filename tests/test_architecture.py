"""The floor plan, read from the code (ast, nothing imported): no import cycles among f5app's modules,
no lower layer importing a higher one, and every import hidden inside a function says why.

The layers, lowest first (docs/architecture.md draws them). A module may import its own layer and
those below; an import under ``if TYPE_CHECKING:`` is a type annotation, not an arrow, and is not
counted. A new module or package is placed here before its first import passes.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "f5app"

#: Lowest first. Keys are module names under f5app (a package covers its modules unless a module is
#: named on its own).
LAYERS: list[tuple[str, set[str]]] = [
    ("foundation", {"f5app", "errors", "files", "safe_load", "config", "devices", "hub", "free_text"}),
    ("audio", {"audio"}),
    ("speech and text", {"speech", "text"}),  # ASR, speaker embedders, transcript scoring; text normalisation
    ("data", {"data"}),
    ("checkpoints and the model", {"ckpt", "model"}),
    ("run state", {"run_state"}),
    ("evaluation", {"evaluation"}),  # drives a synthesiser it is handed; never imports inference
    ("inference", {"inference"}),
    ("training", {"training"}),
    ("serving and studio", {"serving", "studio"}),
    ("entry-point support", {"cli_help", "hydra_setup", "sweep"}),
    ("entry points", {"train", "infer", "eval", "serve", "prepare", "report", "ckpt_cli", "ckpt.__main__", "studio.__main__"}),
]

#: Allow-lists for known violations: empty, and nothing may be added (fix the import instead).
KNOWN_CYCLES: list[set[str]] = []
KNOWN_UPWARD_IMPORTS: set[tuple[str, str]] = set()
KNOWN_UNEXPLAINED_IMPORTS: set[str] = set()


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _type_checking_only(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _targets(module: str, node: ast.Import | ast.ImportFrom) -> list[str]:
    """The f5app modules an import statement loads (a package's own name when it names no module)."""
    known = modules()
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:
            package = module.split(".") if modules()[module].name == "__init__.py" else module.split(".")[:-1]
            base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
        names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
    found = []
    for name in names:
        while name and name not in known:
            name = name.rpartition(".")[0]
        if name.startswith("f5app"):
            found.append(name)
    return found


@cache
def imports() -> dict[str, list[tuple[int, str, bool]]]:
    """module -> [(line, imported f5app module, inside a function)], TYPE_CHECKING blocks left out."""
    found: dict[str, list[tuple[int, str, bool]]] = {}
    for module, path in modules().items():
        rows: list[tuple[int, str, bool]] = []

        def walk(node: ast.AST, in_function: bool) -> None:
            for child in ast.iter_child_nodes(node):
                if _type_checking_only(child):
                    continue
                if isinstance(child, (ast.Import, ast.ImportFrom)):
                    rows.extend((child.lineno, target, in_function) for target in _targets(module, child) if target != module)
                walk(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

        walk(ast.parse(path.read_text(encoding="utf-8")), False)
        found[module] = rows
    return found


def layer_of(module: str) -> int:
    """Index in LAYERS of the longest key naming ``module`` (``f5app.ckpt.__main__`` before ``ckpt``)."""
    name = module.removeprefix("f5app.") if module != "f5app" else "f5app"
    best: tuple[int, int] | None = None
    for index, (_, keys) in enumerate(LAYERS):
        for key in keys:
            if name == key or name.startswith(key + "."):
                if best is None or len(key) > best[1]:
                    best = (index, len(key))
    assert best is not None, f"{module} is in no layer: add it to LAYERS in tests/test_architecture.py"
    return best[0]


def cycles() -> list[set[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    graph = {module: {target for _, target, _ in rows} for module, rows in imports().items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in graph.get(node, ()):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_every_module_has_a_layer():
    for module in modules():
        layer_of(module)


def test_no_import_cycles_among_f5app_modules():
    unknown = [sorted(cycle) for cycle in cycles() if cycle not in KNOWN_CYCLES]
    assert not unknown, f"import cycles: {unknown}"


def test_no_lower_layer_imports_a_higher_one():
    upward = sorted(
        (module, target, line, LAYERS[layer_of(module)][0], LAYERS[layer_of(target)][0])
        for module, rows in imports().items()
        for line, target, _ in rows
        if layer_of(target) > layer_of(module) and (module, target) not in KNOWN_UPWARD_IMPORTS
    )
    assert not upward, "imports against the layers (module, imported, line, its layer, imported layer):\n" + "\n".join(map(str, upward))


def unexplained_function_imports(path: Path) -> list[int]:
    """Lines of imports inside functions with no comment saying why. Consecutive import statements
    form a block; a comment on one of its lines, or a comment line just above it, explains the block."""
    lines = path.read_text(encoding="utf-8").splitlines()
    tree = ast.parse("\n".join(lines))
    missing: list[int] = []
    for function in ast.walk(tree):
        if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for node in ast.walk(function):
            for field in ("body", "orelse", "finalbody"):
                statements = getattr(node, field, None)
                if not isinstance(statements, list):
                    continue
                block: list[ast.stmt] = []
                for statement in [*statements, None]:
                    if isinstance(statement, (ast.Import, ast.ImportFrom)):
                        block.append(statement)
                        continue
                    if block:
                        above = block[0].lineno - 2
                        explained = above >= 0 and lines[above].strip().startswith("#")
                        explained |= any("#" in lines[i] for i in range(block[0].lineno - 1, block[-1].end_lineno))
                        if not explained:
                            missing += [item.lineno for item in block]
                        block = []
    return sorted(set(missing))


def test_every_import_inside_a_function_says_why():
    """Imports belong at the top of a file, where a reader sees the arrows; one inside a function
    needs a reason (a measured import cost, an optional package, a cycle it breaks), in a comment."""
    missing = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        if relative in KNOWN_UNEXPLAINED_IMPORTS:
            continue
        missing += [f"f5app/{relative}:{line}" for line in unexplained_function_imports(path)]
    assert not missing, "imports inside functions without a comment giving the reason:\n" + "\n".join(missing)


def test_the_known_cases_are_still_cases():
    """An allow-list entry that no longer matches anything is removed, so the lists only shrink."""
    found_cycles = cycles()
    assert all(cycle in found_cycles for cycle in KNOWN_CYCLES), "a known cycle is gone: remove it from KNOWN_CYCLES"
    edges = {(module, target) for module, rows in imports().items() for _, target, _ in rows}
    assert KNOWN_UPWARD_IMPORTS <= edges, f"gone: {sorted(KNOWN_UPWARD_IMPORTS - edges)}; remove from KNOWN_UPWARD_IMPORTS"
    unexplained = {
        path.relative_to(PACKAGE).as_posix() for path in PACKAGE.rglob("*.py") if unexplained_function_imports(path)
    }
    assert KNOWN_UNEXPLAINED_IMPORTS <= unexplained | {name for name in KNOWN_UNEXPLAINED_IMPORTS if not (PACKAGE / name).exists()}, (
        f"these now explain every import: {sorted(KNOWN_UNEXPLAINED_IMPORTS - unexplained)}; remove them from KNOWN_UNEXPLAINED_IMPORTS"
    )


def test_one_helper_gives_the_first_line_of_an_error():
    """errors.first_line only: the copies raised IndexError on an empty message."""
    copies = [
        f"{path.relative_to(PACKAGE)}:{number}"
        for path in PACKAGE.rglob("*.py") if path.name != "errors.py"
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if "str(" in line and ("splitlines()[0]" in line or 'split("\\n")[0]' in line or 'partition("\\n")' in line)
    ]
    assert not copies, copies
