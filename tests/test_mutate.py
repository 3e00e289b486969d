"""tools/mutate.py on a tiny project: mutants made as named, and classified as the tests decide."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

TOOL = Path(__file__).resolve().parent.parent / "tools" / "mutate.py"

CALC = '''\
"""A module to mutate."""

SIZE = 1
SCALE = 2 / SIZE  # SIZE = 0 fails at import: the tests cannot even be collected


def add(a, b):
    """A docstring is never mutated."""
    return a + b


def is_small(x):
    return x < 10  # only 3 and 20 are tested: `<=` and 11 survive


def spin(n):
    i = 0
    while i < n:  # `-=` never ends
        i += 2
    return i


def unused(x):
    return x * 2  # no test runs this
'''

TESTS = """\
from pkg.calc import add, is_small, spin


def test_add():
    assert add(2, 3) == 5


def test_small():
    assert is_small(3) and not is_small(20)


def test_spin():
    assert spin(4) == 4
"""


def _tool():
    if "mutate_tool" not in sys.modules:
        spec = importlib.util.spec_from_file_location("mutate_tool", TOOL)
        mod = importlib.util.module_from_spec(spec)
        sys.modules["mutate_tool"] = mod  # dataclasses look their module up
        spec.loader.exec_module(mod)
    return sys.modules["mutate_tool"]


def test_mutants_are_the_edits_they_name():
    m = _tool()
    got = {(x.lineno, x.operator, x.description) for x in m.generate("pkg/calc.py", CALC)}
    assert (9, "binop", "`+` -> `-`") in got
    assert (13, "compare", "`<` -> `<=`") in got
    assert (13, "constant", "`10` -> `11`") in got
    assert (19, "binop", "`+=` -> `-=`") in got
    assert (19, "constant", "`2` -> `3`") in got
    assert (9, "return", "returns `None`") in got
    assert not any(line == 8 for line, _, _ in got)  # the docstring
    text = (
        "def f(x):\n    y = jnp.sqrt(1 - x) * 2  # pragma: no mutate\n    return jnp.sqrt(x) + 1\n"
    )
    by_desc = {x.description: x for x in m.generate("f.py", text)}
    assert by_desc["`sqrt(x, ...)` -> `x`"].text.splitlines()[2] == "    return (x) + 1"
    assert all(x.lineno == 3 for x in by_desc.values())  # line 2 opted out


def test_runner_classifies_killed_survived_timeout_error_and_no_coverage(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text('"""Package."""\n')
    (tmp_path / "pkg" / "calc.py").write_text(CALC)
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_calc.py").write_text(TESTS)
    before = (tmp_path / "pkg" / "calc.py").read_text()
    cmd = [
        sys.executable,
        str(TOOL),
        "--root",
        str(tmp_path),
        "--map",
        "pkg/calc.py=tests/test_calc.py",
        "--min-timeout",
        "4",
        "--out",
        "report.md",
        "pkg/calc.py",
    ]
    # Without Hypothesis's pytest plugin (not needed here) each test run starts in half the time.
    env = {**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False, env=env)
    assert run.returncode == 0, run.stdout + run.stderr
    assert (tmp_path / "pkg" / "calc.py").read_text() == before  # the real tree is untouched
    outcomes = json.loads((tmp_path / ".mutate" / "results.json").read_text())
    m = _tool()
    by_mutant = {
        (x.lineno, x.description): outcomes[x.digest]["status"]
        for x in m.generate("pkg/calc.py", CALC)
    }
    assert by_mutant[(3, "`1` -> `0`")] == "error"  # ZeroDivisionError at import
    assert by_mutant[(9, "`+` -> `-`")] == "killed"
    assert by_mutant[(13, "`<` -> `<=`")] == "survived"
    assert by_mutant[(13, "`10` -> `11`")] == "survived"
    assert by_mutant[(13, "returns `None`")] == "killed"
    assert by_mutant[(19, "`+=` -> `-=`")] == "timeout"
    assert by_mutant[(24, "`*` -> `/`")] == "no coverage"
    report = (tmp_path / "report.md").read_text()
    assert "`pkg/calc.py:13:14` in `is_small`: `<` -> `<=` (survived)" in report
    assert "-    return x < 10" in report and "+    return x <= 10" in report
    assert "`pkg/calc.py:23` `unused`: no mapped test runs it" in report
    # A second run takes every outcome from the cache and runs no test.
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False, env=env)
    assert "0 to run" in again.stdout, again.stdout + again.stderr
