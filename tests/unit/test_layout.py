"""The package layout's rules, checked on the source (docs/architecture.md):

- no cycle in the graph of imports between taskorbit's modules, counting every
  import: at module level, under ``TYPE_CHECKING`` and inside functions;
- a broker's client library is imported only inside that broker's folder (and a
  framework's only inside its integration), so that nothing else knows a broker.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import taskorbit

ROOT = Path(taskorbit.__file__).parent

# Third-party top-level package -> the only places (package prefixes) that may import it.
CLIENT_HOMES = {
    "redis": ("taskorbit.transports.redis",),
    "boto3": ("taskorbit.transports.sqs",),
    "botocore": ("taskorbit.transports.sqs",),
    "google": ("taskorbit.transports.pubsub",),
    "grpc": ("taskorbit.transports.pubsub",),
    "django": ("taskorbit.contrib.django",),
    "flask": ("taskorbit.contrib.flask",),
    "prometheus_client": ("taskorbit.observability.prometheus",),
    "opentelemetry": ("taskorbit.observability.otel",),
    "confluent_kafka": ("taskorbit.transports.kafka",),
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in ROOT.rglob("*.py")}


def imports(name: str, path: Path) -> Iterator[str]:
    """Every module ``name`` imports, absolute, wherever the import statement is."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            yield base
            for alias in node.names:
                yield f"{base}.{alias.name}"  # `from pkg import module` imports a module


def graph() -> dict[str, set[str]]:
    known = modules()
    edges: dict[str, set[str]] = {}
    for name, path in known.items():
        targets = {t for t in imports(name, path) if t in known and t != name}
        # Importing a.b.c runs a/__init__ and a/b/__init__ too, but a package's own
        # __init__ importing its submodules is not a cycle with them: skip parents.
        edges[name] = {t for t in targets if not name.startswith(t + ".")}
    return edges


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 visiting, 2 done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_module_imports_itself_back_through_others() -> None:
    cycle = find_cycle(graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_a_client_library_is_imported_only_in_its_own_folder() -> None:
    wrong = []
    for name, path in modules().items():
        for target in set(imports(name, path)):
            top = target.split(".")[0]
            homes = CLIENT_HOMES.get(top)
            if homes and not any(name == h or name.startswith(h + ".") for h in homes):
                wrong.append(f"{name} imports {target}")
    assert not wrong, "client libraries outside their folders:\n  " + "\n  ".join(sorted(wrong))
