"""The package's layout: stage folders whose imports form no circle, without configs/."""

import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "biskip_jax")
STAGES = {"config", "nn", "objective", "data", "train", "evaluation", "inference", "apps", "cli"}


def _modules() -> dict[str, str]:
  """``{dotted name: path}`` of every module of the package (packages by their __init__)."""
  out = {}
  for folder, _, files in os.walk(PACKAGE):
    for f in files:
      if f.endswith(".py"):
        rel = os.path.relpath(os.path.join(folder, f), ROOT)[:-3].split(os.sep)
        out[".".join(rel[:-1] if rel[-1] == "__init__" else rel)] = os.path.join(folder, f)
  return out


def _imports(tree: ast.AST, modules: dict[str, str]) -> list[tuple[ast.stmt, str]]:
  """(statement, module of the package it imports) for every import in ``tree``."""
  out = []
  for node in ast.walk(tree):
    if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      for alias in node.names:
        full = f"{node.module}.{alias.name}"
        out.append((node, full if full in modules else node.module))
    elif isinstance(node, ast.Import):
      out += [(node, a.name) for a in node.names]
  return [(n, m) for n, m in out if m.split(".")[0] == "biskip_jax"]


def _top_level(tree: ast.Module) -> set[ast.stmt]:
  """The statements a module runs on import (outside functions and classes)."""
  out, todo = set(), list(tree.body)
  while todo:
    node = todo.pop()
    out.add(node)
    if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
      todo += [c for c in ast.iter_child_nodes(node) if isinstance(c, ast.stmt)]
  return out


def test_the_package_has_one_folder_per_stage():
  folders = {d for d in os.listdir(PACKAGE)
             if os.path.isfile(os.path.join(PACKAGE, d, "__init__.py"))}
  assert folders == STAGES
  loose = {f for f in os.listdir(PACKAGE) if f.endswith(".py")}
  assert loose == {"__init__.py", "errors.py", "output_files.py"}


def test_imports_form_no_circle():
  """Importing a module imports its parent packages too, so they are edges as well."""
  modules = _modules()
  graph = {}
  for name, path in modules.items():
    tree = ast.parse(open(path, encoding="utf-8").read())
    top = _top_level(tree)
    targets = set()
    for node, target in _imports(tree, modules):
      if node in top:
        parts = target.split(".")
        targets |= {".".join(parts[:i]) for i in range(2, len(parts) + 1)}
    graph[name] = {t for t in targets if t in modules and t != name
                   and not name.startswith(t + ".")}  # A package's own parents are loaded.
  state: dict[str, int] = {}

  def visit(node, path):
    state[node] = 1
    for nxt in sorted(graph[node]):
      assert state.get(nxt) != 1, "import circle: " + " -> ".join(path + [nxt])
      if nxt not in state:
        visit(nxt, path + [nxt])
    state[node] = 2

  for name in sorted(graph):
    if name not in state:
      visit(name, [name])


def test_imports_inside_functions_say_why():
  """A function-local import of the package is for start-up time, never to dodge a circle,
  and a comment above it says what it spares."""
  modules = _modules()
  for path in modules.values():
    source = open(path, encoding="utf-8").read()
    lines = source.splitlines()
    tree = ast.parse(source)
    top = _top_level(tree)
    for node, target in _imports(tree, modules):
      if node not in top:
        above = lines[node.lineno - 2].strip()
        assert above.startswith("# Imported here:"), f"{path}:{node.lineno} imports {target}"


def test_the_package_does_not_import_configs():
  for path in _modules().values():
    for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
      names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
               [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
      assert not any(n.split(".")[0] == "configs" for n in names), path
