"""The suite's own wiring for parallel runs: a session-scoped fixture is defined once, and
`free_port` gives ports no other worker or outgoing connection takes.

pytest makes a fixture function imported into a test module a fixture of that module: each
importing module then gets its own "session" server (BIND9, Pebble, ...), all kept running to
the end of the session, and under `make test` one per module and xdist worker. Session
servers are therefore imported in tests/conftest.py only (docs/ARCHITECTURE.md, "Test speed").
"""

from __future__ import annotations

import ast
import os
import socket
from pathlib import Path

from tests.helpers import LOWEST_PORT, bindable, ephemeral_ports, free_port, port_share

TESTS = Path(__file__).resolve().parents[1]


def session_fixtures(tree: ast.Module) -> set[str]:
    """Names of the functions of a module decorated @pytest.fixture(scope="session", ...)."""
    found = set()
    for node in tree.body:
        if not isinstance(node, ast.FunctionDef):
            continue
        for deco in node.decorator_list:
            if not isinstance(deco, ast.Call):
                continue
            scope = [k.value for k in deco.keywords if k.arg == "scope"]
            if scope and isinstance(scope[0], ast.Constant) and scope[0].value == "session":
                found.add(node.name)
    return found


def module_name(path: Path, root: Path) -> str:
    return ".".join(path.relative_to(root).with_suffix("").parts)


def imported_names(tree: ast.Module) -> set[tuple[str, str]]:
    """(module, name) of every `from module import name` at the top of a module."""
    return {
        (node.module, alias.name)
        for node in tree.body
        if isinstance(node, ast.ImportFrom) and node.module
        for alias in node.names
    }


def session_fixture_imports(files: list[Path], root: Path) -> list[str]:
    """`test module: fixture` for each test module importing a session fixture function
    (`root`: the directory the modules' dotted names start from)."""
    trees = {path: ast.parse(path.read_text()) for path in files}
    defined = {
        (module_name(path, root), name)
        for path, tree in trees.items()
        for name in session_fixtures(tree)
    }
    return sorted(
        f"{path.relative_to(root)}: {name}"
        for path, tree in trees.items()
        if path.name.startswith("test_")
        for module, name in imported_names(tree) & defined
    )


def test_no_test_module_imports_a_session_fixture() -> None:
    files = sorted(p for p in TESTS.rglob("*.py") if "bench" not in p.parts)
    assert session_fixture_imports(files, TESTS.parent) == []


def test_the_check_finds_an_imported_session_fixture(tmp_path: Path) -> None:
    servers = tmp_path / "tests" / "servers.py"
    servers.parent.mkdir()
    servers.write_text(
        "import pytest\n\n"
        '@pytest.fixture(scope="session", name="dns")\ndef dns_server():\n    yield 1\n\n'
        '@pytest.fixture(scope="module")\ndef per_module():\n    return 2\n'
    )
    user = tmp_path / "tests" / "test_user.py"
    user.write_text("from tests.servers import dns_server, per_module\n")
    found = session_fixture_imports([servers, user], tmp_path)
    assert found == ["tests/test_user.py: dns_server"]  # the module-scoped one is fine


def test_free_port_is_below_the_ephemeral_range_in_this_workers_share() -> None:
    below = ephemeral_ports().start
    share = port_share(
        os.environ.get("PYTEST_XDIST_WORKER", "gw0"),
        int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")),
        below,
    )
    ports = [free_port() for _ in range(50)]
    assert len(set(ports)) == len(ports), "a port handed out twice"
    assert all(p in share and LOWEST_PORT <= p < below for p in ports), (ports, share)
    assert all(bindable(p) for p in ports)


def test_worker_shares_are_disjoint_and_below_the_ephemeral_range() -> None:
    shares = [set(port_share(f"gw{i}", 4, 32768)) for i in range(4)]
    assert all(len(s) == (32768 - LOWEST_PORT) // 4 for s in shares)
    assert not any(shares[i] & shares[j] for i in range(4) for j in range(i + 1, 4))
    assert max(max(s) for s in shares) < 32768 and min(min(s) for s in shares) == LOWEST_PORT
    assert port_share("gw0", 1, 32768) == range(LOWEST_PORT, 32768)


def test_a_port_in_use_is_not_bindable() -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        assert not bindable(held.getsockname()[1])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as held_udp:
        held_udp.bind(("127.0.0.1", 0))
        assert not bindable(held_udp.getsockname()[1])
