"""The layout the code promises (docs/architecture.md): no import cycles inside `influence`,
`influence` never imports the app (`influence_app`) or the demos, and no function over 60 lines."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAX_FUNCTION_LINES = 60
# Functions allowed to be longer, with the reason (keep this list short and argued).
LONG_FUNCTIONS: dict[str, str] = {
}


def modules(package: str) -> dict[str, Path]:
    out = {}
    for path in (ROOT / package).rglob("*.py"):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = path
    return out


def imports(path: Path, name: str, known: set[str], lazy: bool = False) -> set[str]:
    """Modules of `known` that `path` imports at module level, and with `lazy` also inside
    functions (never under `if TYPE_CHECKING:`, which does not run)."""
    tree = ast.parse(path.read_text())
    found = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    typing_only = {id(n) for node in ast.walk(tree)
                   if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
                   for n in ast.walk(node)}
    for node in ast.walk(tree) if lazy else tree.body:
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            # `from pkg import mod` depends on pkg.mod; `from mod import name` on mod
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        found |= {t for t in targets if t in known}
    return found - {name}


@pytest.mark.parametrize("lazy", [False, True], ids=["module level", "with lazy imports"])
def test_influence_has_no_import_cycles(lazy):
    mods = modules("influence")
    graph = {m: imports(p, m, set(mods), lazy) for m, p in mods.items()}
    # a package's __init__ importing its own submodules is how registration works, not a cycle
    graph = {m: {d for d in deps if not (m and d.startswith(m + "."))} for m, deps in graph.items()}
    state: dict[str, int] = {}

    def visit(m, stack):
        state[m] = 1
        for d in graph[m]:
            if state.get(d) == 1:
                pytest.fail("import cycle: " + " -> ".join(stack[stack.index(d):] + [d]))
            if d not in state:
                visit(d, stack + [d])
        state[m] = 2

    for m in graph:
        if m not in state:
            visit(m, [m])


def test_the_library_never_imports_the_app_or_the_demos():
    for name, path in modules("influence").items():
        if name.startswith("influence.demos") or name == "influence.cli":
            continue
        text = path.read_text()
        tree = ast.parse(text)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert not node.module.startswith(("influence_app", "influence.demos", "gradio")), f"{name} imports {node.module}"
            if isinstance(node, ast.Import):
                assert not any(a.name.startswith(("influence_app", "gradio")) for a in node.names), name


@pytest.mark.parametrize("package", ["influence", "app"])
def test_no_function_is_longer_than_60_lines(package):
    long = []
    for name, path in modules(package).items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                where = f"{name}.{node.name}"
                if length > MAX_FUNCTION_LINES and where not in LONG_FUNCTIONS:
                    long.append(f"{where} ({length} lines)")
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {long}"
