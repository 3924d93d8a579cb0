"""The import rules of docs/ARCHITECTURE.md, checked on the source: every import
statement counts, including the ones inside functions."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _modules(package: str) -> Iterator[Path]:
    yield from sorted(p for p in (ROOT / package).rglob("*.py") if "rpc" not in p.parts)


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def _violations(package: str, forbidden: tuple[str, ...]) -> list[str]:
    out = []
    for path in _modules(package):
        for name in sorted(_imports(path)):
            if any(name == f or name.startswith(f + ".") for f in forbidden):
                out.append(f"{path.relative_to(ROOT)} imports {name}")
    return out


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        # The shared core imports no role and not the composition roots.
        ("blindsum", ("party", "aggregator", "blindsum_app")),
        # Pure layers: no gRPC, no generated protobuf code.
        ("blindsum/crypto", ("grpc", "blindsum.rpc", "blindsum.transport", "blindsum.codec")),
        ("blindsum/protocol", ("grpc", "blindsum.rpc", "blindsum.transport", "blindsum.codec")),
        # The roles do not import each other, nor the layer above them.
        ("party", ("aggregator", "blindsum_app")),
        ("aggregator", ("party", "blindsum_app")),
    ],
)
def test_imports_flow_downward(package: str, forbidden: tuple[str, ...]) -> None:
    assert _violations(package, forbidden) == []


def test_the_demo_does_not_import_the_cli() -> None:
    """cli -> demo only: the two composition roots form no circle."""
    assert not any(
        name.startswith("blindsum_app.cli") for name in _imports(ROOT / "blindsum_app" / "demo.py")
    )


def test_the_checker_sees_imports_inside_functions(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from aggregator.rounds import RoundManager\n")
    assert "aggregator.rounds" in _imports(module)
