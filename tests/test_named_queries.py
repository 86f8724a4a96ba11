"""Every named statement in ``sql/queries`` is used, and every name the code uses exists.

A statement is used when the code names it literally where pgflow runs statements: the first
argument of ``fetchone``/``fetchall``/``run``/``with_identifiers``, the name argument of
``Database.execute(conn, name, ...)``, or a key of ``queries[...]`` (``q[...]`` in pgflow/).
A name picked by a condition (``"a" if newest else "b"``) counts both branches. A name passed
through a variable is invisible here: name statements literally at the call.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

from pgflow.db.sql import _PLACEHOLDER, _raw_queries

ROOT = Path(__file__).resolve().parents[1]
IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]*$")
NAME_FIRST = {"fetchone", "fetchall", "run", "with_identifiers"}

# Statements only tests or benchmarks run (none today). A statement listed here must not be
# used by pgflow/, and must be used by tests/ or benchmarks/.
TEST_ONLY: dict[str, str] = {}


def _literals(node: ast.expr) -> Iterator[str]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        yield node.value
    elif isinstance(node, ast.IfExp):
        yield from _literals(node.body)
        yield from _literals(node.orelse)


def _named_uses(tree: ast.AST, mapping_names: set[str]) -> Iterator[tuple[str, str, int]]:
    """``(name, how, line)`` for every statement name used literally in ``tree``; ``how`` is
    "identifiers" for ``with_identifiers`` and "plain" otherwise."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            attr = node.func.attr
            if attr in NAME_FIRST:
                candidates = node.args[:1]
            elif attr == "execute":  # Database.execute(conn, name, params)
                candidates = node.args[1:2]
            else:
                continue
            how = "identifiers" if attr == "with_identifiers" else "plain"
            for arg in candidates:
                for text in _literals(arg):
                    if IDENTIFIER.match(text):
                        yield text, how, node.lineno
        elif isinstance(node, ast.Subscript):
            value = node.value
            name = value.attr if isinstance(value, ast.Attribute) else getattr(value, "id", None)
            if name in mapping_names:
                for text in _literals(node.slice):
                    if IDENTIFIER.match(text):
                        yield text, "plain", node.lineno


def _uses(folders: list[str], mapping_names: set[str]) -> dict[str, list[tuple[str, str]]]:
    found: dict[str, list[tuple[str, str]]] = {}
    for folder in folders:
        for path in sorted((ROOT / folder).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
            for name, how, line in _named_uses(tree, mapping_names):
                where = f"{path.relative_to(ROOT)}:{line}"
                found.setdefault(name, []).append((how, where))
    return found


def package_uses() -> dict[str, list[tuple[str, str]]]:
    # In pgflow/ a `q` is always the Queries of a Database (db/migrate.py).
    return _uses(["pgflow"], {"queries", "q"})


def harness_uses() -> dict[str, list[tuple[str, str]]]:
    # In tests a `q` is often a row or a queue: only `.queries[...]` names a statement.
    return _uses(["tests", "benchmarks"], {"queries"})


def test_every_statement_is_used() -> None:
    defined = set(_raw_queries())
    in_package = set(package_uses())
    unused = sorted(defined - in_package - set(TEST_ONLY))
    assert not unused, (
        f"named statements nothing in pgflow/ runs: {unused}; delete them from sql/queries, "
        "or list them in TEST_ONLY with the test that needs them"
    )


def all_uses() -> dict[str, list[tuple[str, str]]]:
    merged = package_uses()
    for name, uses in harness_uses().items():
        merged.setdefault(name, []).extend(uses)
    return merged


def test_test_only_statements_are_test_only() -> None:
    in_package = set(package_uses())
    in_tests = set(harness_uses())
    for name in TEST_ONLY:
        assert name in _raw_queries(), f"TEST_ONLY names {name!r}, which sql/queries lacks"
        assert name not in in_package, f"{name!r} is used by pgflow/: drop it from TEST_ONLY"
        assert name in in_tests, f"{name!r} is used by no test or benchmark: delete it"


def test_every_name_used_exists() -> None:
    defined = set(_raw_queries())
    missing = {
        name: [where for _, where in uses]
        for name, uses in all_uses().items()
        if name not in defined
    }
    # Tests' own SQL runs through the same methods: anything shaped like a name and called
    # like one must be a statement.
    assert not missing, f"statement names used but not in sql/queries: {missing}"


def test_identifier_statements_are_filled_at_the_call() -> None:
    """A statement with places besides {schema} ({role}, {channel}, ...) is reachable only
    through ``with_identifiers``; one without them only through the plain calls."""
    raw = _raw_queries()
    wrong = []
    for name, uses in all_uses().items():
        if name not in raw:
            continue
        needs = bool(set(_PLACEHOLDER.findall(raw[name])) - {"schema"})
        for how, where in uses:
            if needs != (how == "identifiers"):
                wrong.append(f"{name} at {where}")
    assert not wrong, (
        "statements called the wrong way (identifier places need "
        f"with_identifiers, others must not use it): {wrong}"
    )


def test_the_scan_sees_each_kind_of_call() -> None:
    """The scanner itself: every shape of call pgflow uses is found."""
    source = """
db.fetchone("a", {"x": 1})
db.fetchall("b")
db.run("c", params)
db.execute(conn, "d", {"e": 2})
conn.execute(q["f"])
db.queries.with_identifiers("g", role=r)
db.fetchall("h" if newest else "i")
db.retrying(lambda: db.fetchone("j", {"k": 3}))
"""
    found = {(name, how) for name, how, _ in _named_uses(ast.parse(source), {"q"})}
    assert found == {
        ("a", "plain"),
        ("b", "plain"),
        ("c", "plain"),
        ("d", "plain"),
        ("f", "plain"),
        ("g", "identifiers"),
        ("h", "plain"),
        ("i", "plain"),
        ("j", "plain"),
    }
