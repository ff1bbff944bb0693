"""The layering is kept by a check, not by memory: imports only point down, and no module imports itself back
through another (a cycle), counting the imports written inside functions too.

The layers, low to high (see ``labcore/__init__.py``)::

    ground   errors, paths, units
    kernel   the mechanisms and the one door to the kernel
    image    images: store, layers, archive, registry
    runtime  a container's life
    api      Docker's Engine API: schema, routes, labd, client
    lessons  one module per notebook, and the drawings
    cli      one `labcore` verb per module
"""
import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[2] / "labcore"
LAYERS = ["ground", "kernel", "image", "runtime", "api", "lessons", "cli"]
GROUND = {"labcore", "labcore.errors", "labcore.paths", "labcore.units"}


def module_name(path):
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module):
    """The layer a module belongs to: the subpackage it sits in, or the ground."""
    if module == "labcore.__main__":     # `python -m labcore` is the CLI's door
        return "cli"
    if module in GROUND or module.count(".") == 0:
        return "ground"
    return module.split(".")[1]


def imports_of(path, module):
    """Every labcore module this file imports, at module level or inside a function, with its line."""
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names if alias.name.startswith("labcore")]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:     # relative: resolve against this module's package
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            if not base.startswith("labcore"):
                continue
            for alias in node.names:     # `from labcore.kernel import journal` imports a module
                candidate = f"{base}.{alias.name}"
                found.append((candidate if known(candidate) else base, node.lineno))
    return found


def known(module):
    relative = pathlib.Path(*module.split(".")[1:])
    return (PACKAGE / relative).with_suffix(".py").exists() or (PACKAGE / relative / "__init__.py").exists()


def graph(package=PACKAGE):
    edges = {}
    for path in sorted(package.rglob("*.py")):
        module = module_name(path)
        edges[module] = [(target, line) for target, line in imports_of(path, module) if target != module]
    return edges


def upward_imports(edges):
    """Imports from a lower layer into a higher one, as 'module:line -> target'."""
    rank = {layer: index for index, layer in enumerate(LAYERS)}
    return sorted({f"{module}:{line} -> {target}" for module, targets in edges.items() for target, line in targets
                   if rank[layer_of(target)] > rank[layer_of(module)]})


def cycles(edges):
    """Every strongly connected group of more than one module (Tarjan's algorithm), each sorted."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target, _ in edges.get(node, []):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in list(edges):
        if node not in index:
            visit(node)
    return found


def test_imports_only_point_down():
    assert upward_imports(graph()) == []


def test_no_import_cycles():
    # a package's __init__ importing its own modules is not a cycle worth naming; everything else is
    assert [group for group in cycles(graph()) if not all(m.startswith(group[0]) for m in group)] == []


@pytest.mark.parametrize("source, expected", [
    ("from labcore.lessons import diagrams\n", ["labcore.kernel.overlay:1 -> labcore.lessons.diagrams"]),
    ("def draw():\n    from labcore.cli import rmi\n", ["labcore.kernel.overlay:2 -> labcore.cli.rmi"]),
    ("from labcore.kernel import syscalls\n", []),
])
def test_the_check_fails_on_an_upward_import(tmp_path, source, expected):
    fake = tmp_path / "labcore"
    for name in ["kernel", "lessons", "cli"]:
        (fake / name).mkdir(parents=True)
        (fake / name / "__init__.py").write_text("")
    (fake / "lessons" / "diagrams.py").write_text("")
    (fake / "cli" / "rmi.py").write_text("")
    (fake / "kernel" / "syscalls.py").write_text("")
    (fake / "kernel" / "overlay.py").write_text(source)
    global PACKAGE
    real, PACKAGE = PACKAGE, fake
    try:
        assert upward_imports(graph(fake)) == expected
    finally:
        PACKAGE = real


def test_the_check_finds_a_cycle_through_a_function_level_import(tmp_path):
    fake = tmp_path / "labcore" / "runtime"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "engine.py").write_text("from labcore.runtime import container\n")
    (fake / "container.py").write_text("def start():\n    from labcore.runtime.engine import Engine\n")
    global PACKAGE
    real, PACKAGE = PACKAGE, fake.parent
    try:
        assert cycles(graph(fake.parent)) == [["labcore.runtime.container", "labcore.runtime.engine"]]
    finally:
        PACKAGE = real
