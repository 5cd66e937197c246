"""The import graph of asr/: no module reaches itself, however late it imports (function-local
imports included), so the layers of ARCHITECTURE.md hold and no import circle hides in a function."""
import ast
from pathlib import Path

from .conftest import ROOT

PACKAGE = Path(ROOT) / "asr"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, modules: set[str]) -> set[str]:
    """The asr modules `path` imports anywhere in it: at the top, in a function, under a condition."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package
            for _ in range(node.level - 1):
                base = base.rpartition(".")[0]
            target = node.module if not node.level else ".".join(p for p in (base, node.module) if p)
            # `from . import x` and `from .models import acoustic` name modules as well as objects
            submodules = {f"{target}.{a.name}" for a in node.names} & modules
            found.update(submodules)
            if len(submodules) < len(node.names):  # some names are objects of `target` itself
                found.add(target)
    # `import asr.models.speaker` runs asr/__init__ and asr/models/__init__ too, but those are
    # the package's doors, not a dependency of this module's own code: only the module itself counts
    return {m for m in found if m in modules and m != name}


def import_graph() -> dict[str, set[str]]:
    paths = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: imports(path, set(paths)) for name, path in paths.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of the graph as a path that ends where it starts, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_cycle_finder_finds_a_cycle_and_only_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_relative_imports_are_read_as_python_reads_them():
    modules = {"asr.models.speaker", "asr.metrics", "asr.models", "asr.models.rnn", "asr.config"}
    assert imports(PACKAGE / "models" / "speaker.py", modules) >= {"asr.config", "asr.models.rnn", "asr.metrics"}
    assert module_name(PACKAGE / "models" / "__init__.py") == "asr.models"


def test_asr_has_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


# What the models stand on; they import nothing else of the toolkit but each other...
BELOW_MODELS = {"asr.config", "asr.audio", "asr.features", "asr.text", "asr.tts_text", "asr.decode", "asr.metrics"}
# ...and the pipelines behind their convenience methods (whisper's model.transcribe), which import
# only asr.models.checks of the models: see test_asr_has_no_import_cycle.
CONVENIENCE = {("asr.models.base", "asr.transcribe"), ("asr.models.acoustic", "asr.streaming")}


def test_models_never_import_a_pipeline():
    graph = import_graph()
    upward = sorted((m, dep) for m, deps in graph.items() if m.startswith("asr.models")
                    for dep in deps if not dep.startswith("asr.models") and dep not in BELOW_MODELS)
    assert set(upward) == CONVENIENCE, upward
    for low in BELOW_MODELS:  # nor does what they stand on, even late
        assert not [dep for dep in graph[low] if dep.startswith("asr.models")], low
