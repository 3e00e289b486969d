"""Mutation testing: plants one small bug at a time in a module and runs the tests mapped to it.

Run: `python tools/mutate.py [MODULE_OR_FOLDER[:N] ...] [--jobs N] [--out PATH]` (`make mutate`,
`make mutate MODULES=jaxreg/augment/mix.py`). With no modules, every module of `CORE` is
mutated; `MODULE:N` (or `--sample N` for all) runs a fixed random N of a module's mutants, an
estimate for a module too slow to run in full. The report (per-module scores, the surviving
mutants with file:line:column and diff, the functions not mutated) goes to
`benchmarks/results/mutation.md`.

How it works, and why it is written this way rather than with mutmut or cosmic-ray:

- Mutants are made from the `ast` of the module and written as a minimal edit of its text
  (one operator, one constant, one call): each edit is checked by parsing the mutated text
  and comparing it with the intended tree, so a mutant is exactly the bug it names.
  Decorated functions (`jax.jit`, `custom_vmap`, `functools.partial`) are mutated like any
  other code: nothing is wrapped or trampolined.
- Each mutant is written over the file in a temporary copy of the tree (never the real tree)
  and the mapped tests run in a fresh `python -m pytest -x` subprocess with a timeout: nothing
  forks a process in which JAX has already started its threads. `PYTHONDONTWRITEBYTECODE`
  keeps a stale `.pyc` of another mutant from being imported.
- A baseline run per module (the mapped tests on the unchanged tree) records, through the
  pytest plugin at the end of this file, which lines each test executes and how long it
  takes. A mutant on a line that no mapped test executes cannot be caught by them: it is
  reported as "no coverage" without running anything. The others run the tests that execute
  their line first, fastest first, so a caught mutant usually costs one test.
- Hypothesis runs derandomized and without its example database, so a run does not depend
  on the previous ones.
- Outcomes are cached in `.mutate/results.json` under a hash of the mutated module and of
  the mapped test files: an unchanged mutant is not run again (`--fresh` runs all).

Outcomes: killed (a test failed), timeout (the tests ran past the limit), error (pytest could
not run them, e.g. the mutant does not import), survived (every mapped test passed), no
coverage (no mapped test executes the line). The score is (killed + timeout + error) / total.
Survivors that are accepted (equivalent mutants, or behaviour that does not matter) are
listed with their reason in `tools/mutate_accepted.toml`; they still count as survivors.
"""

from __future__ import annotations

import argparse
import ast
import copy
import dataclasses
import difflib
import hashlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Module (or folder) -> the test files that cover it, run in this order.
CORE: dict[str, list[str]] = {
    "jaxreg/optim/decay.py": ["tests/optim/test_decay.py"],
    "jaxreg/optim/ema.py": ["tests/optim/test_ema.py"],
    "jaxreg/optim/factory.py": ["tests/optim/test_factory.py"],
    "jaxreg/optim/__init__.py": ["tests/optim/test_decay.py", "tests/optim/test_ema.py"],
    "jaxreg/losses.py": ["tests/test_losses.py"],
    "jaxreg/augment/mix.py": ["tests/augment/test_mix.py"],
    "jaxreg/augment/erase.py": ["tests/augment/test_erase.py"],
    "jaxreg/augment/geometric.py": [
        "tests/augment/test_geometric.py",
        "tests/augment/test_dm_pix.py",
    ],
    "jaxreg/train/early_stopping.py": ["tests/train/test_early_stopping.py"],
    "jaxreg/train/checkpoint.py": [
        "tests/train/test_checkpoint.py",
        "tests/train/test_loop.py",
        "tests/train/test_open_loop.py",
    ],
    "jaxreg/train/loop.py": ["tests/train/test_loop.py", "tests/train/test_open_loop.py"],
    "jaxreg/report.py": ["tests/test_report.py"],
}

# Folders and files the temporary copy of the tree leaves out.
COPY_IGNORE = (
    ".git",
    ".venv",
    ".venv-bench",
    "__pycache__",
    ".pytest_cache",
    ".hypothesis",
    ".mutate",
    ".ruff_cache",
    "*.egg-info",
    "runs",
    "workdirs",
)

NO_MUTATE = "pragma: no mutate"

# ---------------------------------------------------------------------------------------------
# Mutation operators.

_BINOPS = {
    ast.Add: ast.Sub,
    ast.Sub: ast.Add,
    ast.Mult: ast.Div,
    ast.Div: ast.Mult,
    ast.FloorDiv: ast.Div,
    ast.Mod: ast.FloorDiv,
    ast.Pow: ast.Mult,
    ast.BitAnd: ast.BitOr,
    ast.BitOr: ast.BitAnd,
    ast.LShift: ast.RShift,
    ast.RShift: ast.LShift,
}
_CMPOPS = {
    ast.Lt: ast.LtE,
    ast.LtE: ast.Lt,
    ast.Gt: ast.GtE,
    ast.GtE: ast.Gt,
    ast.Eq: ast.NotEq,
    ast.NotEq: ast.Eq,
    ast.Is: ast.IsNot,
    ast.IsNot: ast.Is,
    ast.In: ast.NotIn,
    ast.NotIn: ast.In,
}
_TOKENS = {
    ast.Add: "+",
    ast.Sub: "-",
    ast.Mult: "*",
    ast.Div: "/",
    ast.FloorDiv: "//",
    ast.Mod: "%",
    ast.Pow: "**",
    ast.BitAnd: "&",
    ast.BitOr: "|",
    ast.LShift: "<<",
    ast.RShift: ">>",
    ast.Lt: "<",
    ast.LtE: "<=",
    ast.Gt: ">",
    ast.GtE: ">=",
    ast.Eq: "==",
    ast.NotEq: "!=",
    ast.Is: "is",
    ast.IsNot: "is not",
    ast.In: "in",
    ast.NotIn: "not in",
    ast.And: "and",
    ast.Or: "or",
}
# Calls replaced by their first argument (`jnp.sqrt(x)` -> `x`), and names swapped.
UNWRAP = {"sqrt", "exp", "log", "abs", "floor", "ceil", "round", "clip", "square"}
SWAP = {
    "min": "max",
    "max": "min",
    "minimum": "maximum",
    "maximum": "minimum",
    "any": "all",
    "all": "any",
    "argmin": "argmax",
    "argmax": "argmin",
    "floor": "ceil",
    "ceil": "floor",
}


@dataclasses.dataclass(frozen=True)
class Mutant:
    """One planted bug: the module's text with one edit."""

    path: str  # module path relative to the root
    index: int  # 0-based, in source order within the module
    lineno: int
    end_lineno: int
    col: int  # 1-based column (characters) where the edit starts
    function: str  # qualified name of the enclosing function, or "<module>"
    operator: str  # kind of edit, e.g. "binop", "compare", "constant"
    description: str  # e.g. "`<` -> `<=`"
    text: str  # the whole mutated module

    def diff(self, original: str) -> str:
        """Unified diff of this mutant against the original text (1 line of context)."""
        return "".join(
            difflib.unified_diff(
                original.splitlines(keepends=True),
                self.text.splitlines(keepends=True),
                f"a/{self.path}",
                f"b/{self.path}",
                n=1,
            )
        )

    @property
    def digest(self) -> str:
        """Key of this mutant's outcome in the cache."""
        return hashlib.sha256(f"{self.path}\0{self.text}".encode()).hexdigest()[:20]


class _Source:
    """A module's text with conversions from ast positions (UTF-8 byte columns) to offsets."""

    def __init__(self, text: str):
        self.text = text
        self.data = text.encode("utf-8")
        self.starts = [0]
        for line in self.data.splitlines(keepends=True):
            self.starts.append(self.starts[-1] + len(line))

    def offset(self, lineno: int, col: int) -> int:
        return self.starts[lineno - 1] + col

    def column(self, offset: int) -> int:
        """1-based character column of a byte offset."""
        k = max(i for i, start in enumerate(self.starts) if start <= offset)
        return len(self.data[self.starts[k] : offset].decode("utf-8")) + 1

    def span(self, node: ast.AST) -> tuple[int, int]:
        return (
            self.offset(node.lineno, node.col_offset),
            self.offset(node.end_lineno, node.end_col_offset),
        )

    def segment(self, node: ast.AST) -> str:
        a, b = self.span(node)
        return self.data[a:b].decode("utf-8")

    def splice(self, edits: Iterable[tuple[int, int, str]]) -> str:
        data = self.data
        for a, b, new in sorted(edits, reverse=True):
            data = data[:a] + new.encode("utf-8") + data[b:]
        return data.decode("utf-8")

    def find_token(self, start: int, end: int, token: str) -> tuple[int, int] | None:
        """Byte span of `token` between two operands (comments blanked, whole tokens only)."""
        gap = self.data[start:end].decode("utf-8")
        gap = re.sub(r"#[^\n]*", lambda m: " " * len(m.group().encode("utf-8")), gap)
        words = r"\s+".join(map(re.escape, token.split()))
        if token[0].isalpha():
            pattern = rf"(?<![\w.]){words}(?!\w)"
        else:
            pattern = rf"(?<![<>=!*/&|%+\-]){words}(?![<>=*/&|%])"
        hits = list(re.finditer(pattern, gap))
        if len(hits) != 1:
            return None
        m = hits[0]
        a = start + len(gap[: m.start()].encode("utf-8"))
        return a, a + len(m.group().encode("utf-8"))


def _skipped_subtrees(tree: ast.AST) -> set[int]:
    """The ids of nodes never mutated: annotations, f-strings, docstrings, raise statements."""
    skip: set[int] = set()

    def mark(node):
        if node is not None:
            for sub in ast.walk(node):
                skip.add(id(sub))

    for node in ast.walk(tree):
        if isinstance(node, (ast.JoinedStr, ast.Raise)):
            mark(node)
        elif isinstance(node, ast.arg):
            mark(node.annotation)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            mark(node.returns)
        elif isinstance(node, ast.AnnAssign):
            mark(node.annotation)
        elif isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
        ):
            mark(node)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                mark(body[0])
    return skip


def _context(tree: ast.AST) -> dict[int, tuple[str, ast.stmt | None, ast.AST | None]]:
    """id(node) -> (enclosing function's qualified name, innermost statement, parent)."""
    out: dict[int, tuple[str, ast.stmt | None, ast.AST | None]] = {}

    def visit(node, qual, stmt, parent):
        out[id(node)] = (qual, stmt, parent)
        inner_qual = qual
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            inner_qual = node.name if qual == "<module>" else f"{qual}.{node.name}"
        if isinstance(node, ast.Lambda):
            inner_qual = f"{qual}.<lambda>" if qual != "<module>" else "<lambda>"
        for field, value in ast.iter_fields(node):
            children = value if isinstance(value, list) else [value]
            for child in children:
                if not isinstance(child, ast.AST):
                    continue
                # Decorators, defaults and the def line run where the def stands.
                header = isinstance(
                    node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
                ) and field in ("decorator_list", "args", "bases", "keywords")
                q = qual if header else inner_qual
                s = child if isinstance(child, ast.stmt) else stmt
                visit(child, q, s, node)

    visit(tree, "<module>", None, None)
    return out


def _header_lines(stmt: ast.stmt | None) -> range:
    """Lines of a statement that belong to it and not to a nested block."""
    if stmt is None:
        return range(0)
    end = stmt.end_lineno
    for field in ("body", "orelse", "finalbody", "handlers"):
        block = getattr(stmt, field, None)
        if block:
            first = block[0]
            if isinstance(first, ast.excepthandler) or isinstance(first, ast.stmt):
                end = min(end, first.lineno - 1)
    if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        start = min([d.lineno for d in stmt.decorator_list] + [stmt.lineno])
        return range(start, max(end, stmt.lineno) + 1)
    return range(stmt.lineno, max(end, stmt.lineno) + 1)


def _func_name(call: ast.Call) -> str | None:
    f = call.func
    if isinstance(f, ast.Name):
        return f.id
    if isinstance(f, ast.Attribute):
        return f.attr
    return None


def _candidates(node: ast.AST, src: _Source, parent: ast.AST | None):
    """Yields (operator, description, text edits, tree edit) for one node."""
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        new = _BINOPS[type(node.op)]
        span = src.find_token(
            src.span(node.left)[1], src.span(node.right)[0], _TOKENS[type(node.op)]
        )
        if span:
            yield (
                "binop",
                f"`{_TOKENS[type(node.op)]}` -> `{_TOKENS[new]}`",
                [(*span, _TOKENS[new])],
                lambda n, new=new: setattr(n, "op", new()),
            )
    elif isinstance(node, ast.AugAssign) and type(node.op) in _BINOPS:
        new = _BINOPS[type(node.op)]
        old_tok, new_tok = _TOKENS[type(node.op)] + "=", _TOKENS[new] + "="
        span = src.find_token(src.span(node.target)[1], src.span(node.value)[0], old_tok)
        if span:
            yield (
                "binop",
                f"`{old_tok}` -> `{new_tok}`",
                [(*span, new_tok)],
                lambda n, new=new: setattr(n, "op", new()),
            )
    elif isinstance(node, ast.Compare):
        for i, op in enumerate(node.ops):
            if type(op) not in _CMPOPS:
                continue
            new = _CMPOPS[type(op)]
            left = node.left if i == 0 else node.comparators[i - 1]
            span = src.find_token(
                src.span(left)[1], src.span(node.comparators[i])[0], _TOKENS[type(op)]
            )
            if span:

                def edit(n, i=i, new=new):
                    n.ops[i] = new()

                yield (
                    "compare",
                    f"`{_TOKENS[type(op)]}` -> `{_TOKENS[new]}`",
                    [(*span, _TOKENS[new])],
                    edit,
                )
    elif isinstance(node, ast.BoolOp):
        old, new = type(node.op), ast.Or if isinstance(node.op, ast.And) else ast.And
        spans = [
            src.find_token(src.span(a)[1], src.span(b)[0], _TOKENS[old])
            for a, b in zip(node.values, node.values[1:])
        ]
        if all(spans):
            yield (
                "boolop",
                f"`{_TOKENS[old]}` -> `{_TOKENS[new]}`",
                [(*s, _TOKENS[new]) for s in spans],
                lambda n, new=new: setattr(n, "op", new()),
            )
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.Not, ast.USub, ast.Invert)):
        word = {ast.Not: "not", ast.USub: "-", ast.Invert: "~"}[type(node.op)]
        yield (
            "unary",
            f"`{word}` removed",
            [(*src.span(node), f"({src.segment(node.operand)})")],
            ("replace", lambda n: n.operand),
        )
    elif isinstance(node, ast.Constant):
        v = node.value
        if isinstance(v, bool):
            new = not v
        elif isinstance(v, int):
            new = {0: 1, 1: 0}.get(v, v + 1)
        elif isinstance(v, float):
            new = {0.0: 1.0, 1.0: 0.0}.get(v, v + 1.0)
        else:
            return
        yield (
            "constant",
            f"`{v!r}` -> `{new!r}`",
            [(*src.span(node), repr(new))],
            lambda n, new=new: setattr(n, "value", new),
        )
    elif isinstance(node, ast.Call):
        name = _func_name(node)
        plain = node.args and not any(isinstance(a, ast.Starred) for a in node.args)
        if name in UNWRAP and plain:
            yield (
                "call",
                f"`{name}(x, ...)` -> `x`",
                [(*src.span(node), f"({src.segment(node.args[0])})")],
                ("replace", lambda n: n.args[0]),
            )
        if name in SWAP:
            b = src.span(node.func)[1]
            new = SWAP[name]

            def rename(n, new=new):
                if isinstance(n.func, ast.Name):
                    n.func.id = new
                else:
                    n.func.attr = new

            yield ("call", f"`{name}` -> `{new}`", [(b - len(name.encode()), b, new)], rename)
    elif isinstance(node, ast.Return) and node.value is not None:
        if not isinstance(node.value, ast.Constant):  # constants: the constant operator
            yield (
                "return",
                "returns `None`",
                [(*src.span(node.value), "None")],
                lambda n: setattr(n, "value", ast.Constant(None)),
            )
    elif (
        isinstance(node, ast.Expr)
        and isinstance(node.value, ast.Call)
        and not isinstance(parent, ast.Lambda)
    ):
        yield (
            "statement",
            "call statement removed",
            [(*src.span(node), "pass")],
            ("replace", lambda n: ast.Pass()),
        )


def _replace_child(parent: ast.AST, old: ast.AST, new: ast.AST) -> None:
    for field, value in ast.iter_fields(parent):
        if value is old:
            setattr(parent, field, new)
            return
        if isinstance(value, list):
            for i, item in enumerate(value):
                if item is old:
                    value[i] = new
                    return
    raise LookupError("child not found")


def _dump(tree: ast.AST) -> str:
    return ast.dump(tree, include_attributes=False)


def generate(path: str, text: str, *, quiet: bool = False) -> list[Mutant]:
    """All mutants of one module (path relative to the root, text its source)."""
    tree = ast.parse(text)
    src = _Source(text)
    skip = _skipped_subtrees(tree)
    ctx = _context(tree)
    lines = text.splitlines()
    nodes = list(ast.walk(tree))
    position = {id(n): k for k, n in enumerate(nodes)}
    found: list[Mutant] = []
    for i, node in enumerate(nodes):
        if id(node) in skip or not hasattr(node, "lineno"):
            continue
        if any(NO_MUTATE in lines[k - 1] for k in range(node.lineno, node.end_lineno + 1)):
            continue
        qual, _stmt, parent = ctx[id(node)]
        for operator, description, edits, tree_edit in _candidates(node, src, parent):
            # The intended tree: the same edit made on a copy of the parsed module.
            want = copy.deepcopy(tree)
            want_nodes = list(ast.walk(want))
            if isinstance(tree_edit, tuple):  # ("replace", node -> new node)
                target = want_nodes[i]
                want_parent = want_nodes[position[id(parent)]]
                _replace_child(want_parent, target, tree_edit[1](target))
            else:
                tree_edit(want_nodes[i])
            want_dump = _dump(want)
            # An operator swap can change how the text groups (`a & b & c` -> `a | b & c`):
            # then the edited expression is put in parentheses.
            # Or its operands (`a | b | c` -> `a | b & c` needs `(a | b) & (c)`), or both.
            paren = lambda n: [
                (src.span(n)[0], src.span(n)[0], "("),
                (src.span(n)[1],) * 2 + (")",),
            ]
            around = paren(node)
            inside = paren(node.left) + paren(node.right) if isinstance(node, ast.BinOp) else []
            for extra in ([], around, inside, around + inside):
                mutated = src.splice(edits + extra)
                try:
                    ok = _dump(ast.parse(mutated)) == want_dump
                except SyntaxError:
                    ok = False
                if ok:
                    break
            if not ok:
                if not quiet:
                    print(
                        f"  skipped (edit does not parse as intended): {path}:{node.lineno} {description}"
                    )
                continue
            found.append(
                Mutant(
                    path=path,
                    index=0,
                    lineno=node.lineno,
                    col=src.column(min(e[0] for e in edits)),
                    end_lineno=node.end_lineno,
                    function=qual,
                    operator=operator,
                    description=description,
                    text=mutated,
                )
            )
    found.sort(key=lambda m: (m.lineno, m.col, m.end_lineno))
    return [dataclasses.replace(m, index=k) for k, m in enumerate(found)]


def functions(text: str) -> list[tuple[str, int, range]]:
    """(qualified name, def line, lines of its body after the docstring) of every function."""
    out = []

    def visit(node, qual):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                q = child.name if qual == "<module>" else f"{qual}.{child.name}"
                if not isinstance(child, ast.ClassDef):
                    body = child.body
                    if (
                        len(body) > 1
                        and isinstance(body[0], ast.Expr)
                        and isinstance(body[0].value, ast.Constant)
                    ):
                        body = body[1:]
                    out.append((q, child.lineno, range(body[0].lineno, child.end_lineno + 1)))
                visit(child, q)
            else:
                visit(child, qual)

    visit(ast.parse(text), "<module>")
    return out


# ---------------------------------------------------------------------------------------------
# Running tests.


@dataclasses.dataclass
class Baseline:
    """What the mapped tests of one module do on the unchanged tree."""

    seconds: float
    lines: dict[str, set[int]]  # test node id (or "<import>") -> lines of the module it ran
    durations: dict[str, float]  # test node id -> seconds
    order: list[str]  # node ids in collection order


def _pytest_cmd(python: str, tests: Sequence[str]) -> list[str]:
    return [python, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-p", "mutate", *tests]


def _env(tree: Path, extra: dict[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    env.update(extra)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(
        [str(Path(__file__).resolve().parent), str(tree)]
        + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    )
    env["JAXREG_MUTATE"] = "1"
    return env


def _run(cmd, cwd, env, timeout) -> tuple[int | None, float, str]:
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
        return proc.returncode, time.perf_counter() - t0, out
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)  # the pytest process and anything it started
        out, _ = proc.communicate()
        return None, time.perf_counter() - t0, out


def baseline(tree: Path, path: str, tests: Sequence[str], python: str, env: dict) -> Baseline:
    """Runs the mapped tests once on the unchanged copy, recording lines and durations."""
    record = tree / ".mutate-baseline.json"
    env = _env(
        tree, {**env, "JAXREG_MUTATE_TRACE": str(tree / path), "JAXREG_MUTATE_OUT": str(record)}
    )
    rc, seconds, out = _run(_pytest_cmd(python, tests), tree, env, timeout=None)
    if rc != 0:
        raise RuntimeError(f"the tests of {path} fail on the unchanged tree:\n{out[-3000:]}")
    data = json.loads(record.read_text())
    record.unlink()
    return Baseline(
        seconds=seconds,
        lines={k: set(v) for k, v in data["lines"].items()},
        durations=data["durations"],
        order=data["order"],
    )


def _covering(mutant: Mutant, stmt_lines: range, base: Baseline) -> list[str] | None:
    """Node ids of the tests that run the mutated statement (None: none does)."""
    want = set(stmt_lines) | set(range(mutant.lineno, mutant.end_lineno + 1))
    hits = [t for t, lines in base.lines.items() if lines & want]
    return hits or None


def _classify(rc: int | None, out: str) -> str:
    if rc is None:
        return "timeout"
    if rc == 0:
        return "survived"
    if rc == 1:
        return "killed"
    return "error"  # 2: interrupted (e.g. a collection error), 3: internal error, ...


# ---------------------------------------------------------------------------------------------
# Driver.


@dataclasses.dataclass
class Result:
    """The outcome of one mutant."""

    mutant: Mutant
    status: str  # killed, timeout, error, survived, no coverage
    seconds: float
    cached: bool = False
    killer: str = ""  # the failing test, when killed


@dataclasses.dataclass
class ModuleRun:
    """The outcome of one module's pass."""

    results: list[Result]
    seconds: float
    generated: int  # mutants made (more than `results` when sampled)
    executed: set[int] | None  # lines the mapped tests run (None: unknown)


def _copy_tree(root: Path, dest: Path) -> Path:
    shutil.copytree(root, dest, ignore=shutil.ignore_patterns(*COPY_IGNORE), symlinks=True)
    return dest


def _expand(
    root: Path, modules: Iterable[str], mapping: dict[str, list[str]], sample: int | None
) -> dict[str, int | None]:
    """Module paths -> how many of their mutants to run (None: all); `path:N` samples N."""
    out: dict[str, int | None] = {}
    for arg in modules:
        m, _, n = arg.partition(":")
        n = int(n) if n else sample
        m = m.rstrip("/")
        if (root / m).is_dir():
            found = sorted(
                str(p.relative_to(root))
                for p in (root / m).rglob("*.py")
                if "__pycache__" not in str(p)
            )
            out |= {f: n for f in found if f in mapping}
            missing = [f for f in found if f not in mapping]
            if missing:
                print(f"no tests mapped for {missing}: left out")
        elif m in mapping:
            out[m] = n
        else:
            raise SystemExit(f"{m}: no tests mapped to it (see CORE in {Path(__file__).name})")
    return out


def _hash_files(root: Path, files: Iterable[str]) -> str:
    h = hashlib.sha256()
    for f in files:
        h.update(f.encode() + b"\0" + (root / f).read_bytes())
    return h.hexdigest()[:20]


def _killer(out: str) -> str:
    m = re.search(r"^FAILED (\S+)", out, re.M)
    return m.group(1) if m else ""


def mutate_module(
    root: Path,
    path: str,
    tests: Sequence[str],
    *,
    trees: Sequence[Path],
    python: str,
    env: dict[str, str],
    cache: dict,
    fresh: bool,
    log: Callable[[str], None],
    sample: int | None = None,
    min_timeout: float = 120.0,
    keep_killed: bool = False,
    save: Callable[[], None] = lambda: None,
) -> tuple[list[Result], set[int] | None, float]:
    """Runs and classifies the mutants of one module.

    Returns:
      (results, the lines of the module the mapped tests run (None if unknown), seconds).
    """
    t0 = time.perf_counter()
    # Everything is read from the copy made when the pass started (edits made to the real tree
    # during a pass do not mix into it).
    snapshot = trees[0]
    text = (snapshot / path).read_text()
    mutants = generate(path, text)
    if sample is not None and sample < len(mutants):  # a fixed random subset, for an estimate
        chosen = sorted(random.Random(path).sample(range(len(mutants)), sample))
        mutants = [mutants[k] for k in chosen]
    tests_hash = _hash_files(snapshot, [*tests, *_conftests(snapshot, tests)])
    todo, results = [], {}
    for m in mutants:
        hit = cache.get(m.digest)
        if (
            not fresh
            and hit
            and (hit["tests"] == tests_hash or (keep_killed and hit["status"] == "killed"))
        ):
            results[m.index] = Result(m, hit["status"], hit["seconds"], True, hit.get("killer", ""))
        else:
            todo.append(m)
    log(f"{path}: {len(mutants)} mutants, {len(todo)} to run ({len(mutants) - len(todo)} cached)")
    lines_key = f"lines:{path}:{hashlib.sha256(text.encode()).hexdigest()[:20]}:{tests_hash}"
    if not todo:
        executed = cache.get(lines_key)
        return (
            [results[m.index] for m in mutants],
            None if executed is None else set(executed),
            time.perf_counter() - t0,
        )
    base = baseline(trees[0], path, tests, python, env)
    cache[lines_key] = sorted(set().union(*base.lines.values()))
    timeout = max(min_timeout, 3.0 * base.seconds)
    log(f"  baseline {base.seconds:.0f} s ({len(base.order)} tests); timeout {timeout:.0f} s")
    tree = ast.parse(text)
    ctx = _context(tree)
    stmt_of = {}
    for node in ast.walk(tree):
        if hasattr(node, "lineno"):
            stmt_of.setdefault((node.lineno, node.end_lineno), ctx[id(node)][1])
    lock = threading.Lock()
    free = list(trees)
    done = [0]

    def run_one(m: Mutant) -> Result:
        stmt = stmt_of.get((m.lineno, m.end_lineno))
        covering = _covering(m, _header_lines(stmt), base)
        if covering is None:
            return Result(m, "no coverage", 0.0)
        first = sorted(
            (t for t in covering if t != "<import>"), key=lambda t: base.durations.get(t, 0.0)
        )
        with lock:
            tree_dir = free.pop()
        try:
            order_file = tree_dir / ".mutate-order.json"
            order_file.write_text(json.dumps(first))
            (tree_dir / path).write_text(m.text)
            rc, seconds, out = _run(
                _pytest_cmd(python, tests),
                tree_dir,
                _env(tree_dir, {**env, "JAXREG_MUTATE_ORDER": str(order_file)}),
                timeout,
            )
        finally:
            (tree_dir / path).write_text(text)
            with lock:
                free.append(tree_dir)
        status = _classify(rc, out)
        return Result(m, status, seconds, killer=_killer(out) if status == "killed" else "")

    with ThreadPoolExecutor(max_workers=len(trees)) as pool:
        for r in pool.map(run_one, todo):
            results[r.mutant.index] = r
            cache[r.mutant.digest] = {
                "tests": tests_hash,
                "status": r.status,
                "seconds": r.seconds,
                "killer": r.killer,
            }
            save()  # an interrupted pass keeps what it ran
            done[0] += 1
            if r.status in ("survived", "timeout", "error"):
                log(
                    f"  [{done[0]}/{len(todo)}] {r.status}: {path}:{r.mutant.lineno}:{r.mutant.col} "
                    f"{r.mutant.function} {r.mutant.description} ({r.seconds:.0f} s)"
                )
            elif done[0] % 10 == 0:
                log(f"  [{done[0]}/{len(todo)}] {time.perf_counter() - t0:.0f} s")
    return [results[m.index] for m in mutants], set(cache[lines_key]), time.perf_counter() - t0


def _conftests(root: Path, tests: Sequence[str]) -> list[str]:
    out = []
    for t in tests:
        p = (root / t).parent
        while True:
            c = p / "conftest.py"
            if c.exists():
                out.append(str(c.relative_to(root)))
            if p == root or root not in p.parents:
                break
            p = p.parent
    return sorted(set(out))


# ---------------------------------------------------------------------------------------------
# Report.

DETECTED = ("killed", "timeout", "error")


def _accepted(root: Path) -> list[dict]:
    f = root / "tools" / "mutate_accepted.toml"
    if not f.exists():
        return []
    import tomllib

    return tomllib.loads(f.read_text()).get("accepted", [])


def _reason(r: Result, original: str, accepted: list[dict]) -> str | None:
    line = original.splitlines()[r.mutant.lineno - 1].strip()
    for a in accepted:
        if (
            a["path"] == r.mutant.path
            and a["function"] == r.mutant.function
            and a["mutation"] == r.mutant.description
            and a["line"].strip() in line
            and a.get("column", r.mutant.col) == r.mutant.col
        ):
            return a["reason"]
    return None


def report(
    root: Path,
    per_module: dict[str, ModuleRun],
    *,
    command: str,
    total_seconds: float,
    note: str = "",
    sources: dict[str, str] | None = None,
) -> str:
    """Markdown: scores per module, survivors with diffs, functions not mutated."""
    accepted = _accepted(root)
    sources = sources or {path: (root / path).read_text() for path in per_module}
    out = [
        "# Mutation testing",
        "",
        f"Command: `{command}` ({_machine()}). Generated by `tools/mutate.py`; see its docstring.",
        "",
        f"Whole pass: {total_seconds / 60:.1f} min wall time"
        + (" (cached outcomes counted at the time they took when run)" if note else "")
        + ".",
        "",
    ]
    if note:
        out += [note, ""]
    out += [
        "Not mutated by design: docstrings, strings, f-strings (messages), `raise` statements,",
        "annotations and `__all__`; lines marked `# pragma: no mutate`. Score: (killed + timeout +",
        "error) / mutants. Accepted: survivors with a reason in `tools/mutate_accepted.toml`",
        "(equivalent mutants, or behaviour that does not matter); they still count as survivors.",
        "Time: the mutants' test runs (their sum, one at a time), without the baseline run.",
        "",
        "| module | mutants | killed | timeout | error | survived | no coverage | accepted | score"
        " | time | s / mutant run |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    keys = ("killed", "timeout", "error", "survived", "no coverage", "accepted")
    totals = dict.fromkeys(keys, 0)
    n_all, ran_all, runs_all = 0, 0.0, 0
    for path, run in per_module.items():
        results, total = run.results, run.generated
        counts = dict.fromkeys(keys, 0)
        for r in results:
            counts[r.status] += 1
            if r.status in ("survived", "no coverage") and _reason(r, sources[path], accepted):
                counts["accepted"] += 1
        for k in totals:
            totals[k] += counts[k]
        n = len(results)
        n_all += n
        det = sum(counts[k] for k in DETECTED)
        ran = sum(r.seconds for r in results)
        runs = n - counts["no coverage"]
        ran_all, runs_all = ran_all + ran, runs_all + runs
        size = f"{n}" if n == total else f"{n} of {total} (a random sample)"
        out.append(
            f"| `{path}` | {size} | {counts['killed']} | {counts['timeout']} | {counts['error']} | "
            f"{counts['survived']} | {counts['no coverage']} | {counts['accepted']} | "
            f"{det}/{n} ({100 * det / max(n, 1):.0f} %) | {ran / 60:.1f} min | "
            f"{ran / max(runs, 1):.1f} |"
        )
    det = sum(totals[k] for k in DETECTED)
    out.append(
        f"| all | {n_all} | {totals['killed']} | {totals['timeout']} | {totals['error']} | "
        f"{totals['survived']} | {totals['no coverage']} | {totals['accepted']} | "
        f"{det}/{n_all} ({100 * det / max(n_all, 1):.0f} %) | {ran_all / 60:.1f} min | "
        f"{ran_all / max(runs_all, 1):.1f} |"
    )
    out += ["", "## Surviving mutants", ""]
    any_survivor = False
    for path, run in per_module.items():
        results = run.results
        original = sources[path]
        for r in results:
            if r.status not in ("survived", "no coverage"):
                continue
            any_survivor = True
            reason = _reason(r, original, accepted)
            out.append(
                f"- `{path}:{r.mutant.lineno}:{r.mutant.col}` in `{r.mutant.function}`:"
                f" {r.mutant.description}"
                f" ({r.status})" + (f". Accepted: {reason}" if reason else ". No reason recorded.")
            )
            out += ["", "  ```diff"]
            out += [
                "  " + line
                for line in r.mutant.diff(original).splitlines()
                if not line.startswith(("---", "+++"))
            ]
            out += ["  ```", ""]
    if not any_survivor:
        out.append("None.")
    out += [
        "",
        "## Functions not mutated",
        "",
        "Every function is mutated, decorated or not, unless no operator applies to it or no",
        "mapped test runs it (then its mutants are counted as no coverage).",
        "",
    ]
    for path, run in per_module.items():
        text = sources[path]
        made = {m.function for m in generate(path, text, quiet=True)}
        for name, a, body in functions(text):
            inner = [f for f in made if f == name or f.startswith(name + ".")]
            mine = [r for r in run.results if r.mutant.function in inner]
            if not inner:
                why = "no operator applies (nothing but names, strings and calls to keep)"
            elif (run.executed is not None and not run.executed & set(body)) or (
                run.executed is None and mine and all(r.status == "no coverage" for r in mine)
            ):
                why = "no mapped test runs it (its mutants count as no coverage)"
            else:
                continue
            out.append(f"- `{path}:{a}` `{name}`: {why}")
    out.append("")
    return "\n".join(out)


def _machine() -> str:
    import platform

    return f"{os.cpu_count()} CPU cores, Python {platform.python_version()}"


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: mutate the given modules (default: all of `CORE`) and write the report."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "modules",
        nargs="*",
        help="modules or folders (default: every core module); PATH:N runs a random N of them",
    )
    p.add_argument("--jobs", type=int, default=1, help="mutants run at once (default 1)")
    p.add_argument("--out", default="benchmarks/results/mutation.md", help="report file")
    p.add_argument("--fresh", action="store_true", help="ignore cached outcomes")
    p.add_argument(
        "--keep-killed",
        action="store_true",
        help="after tests were added: keep killed outcomes, run only the other mutants again",
    )
    p.add_argument("--list", action="store_true", help="print the mutants and stop")
    p.add_argument(
        "--sample", type=int, help="run a fixed random N of every module's mutants (an estimate)"
    )
    p.add_argument("--root", default=str(ROOT), help="project root (default: this checkout)")
    p.add_argument(
        "--map",
        action="append",
        default=[],
        metavar="MODULE=TEST[,TEST]",
        help="tests of a module, instead of those in CORE (repeatable)",
    )
    p.add_argument(
        "--min-timeout",
        type=float,
        default=120.0,
        help="seconds a mutant's tests may run at least (limit: max(this, 3 x baseline))",
    )
    args = p.parse_args(argv)
    root = Path(args.root).resolve()
    mapping = dict(CORE)
    for item in args.map:
        module, _, tests = item.partition("=")
        mapping[module] = tests.split(",")
    modules = _expand(root, args.modules or list(CORE), mapping, args.sample)
    if args.list:
        for path in modules:
            for m in generate(path, (root / path).read_text()):
                print(f"{path}:{m.lineno}:{m.col} {m.function} {m.operator} {m.description}")
        return 0
    cache_file = root / ".mutate" / "results.json"
    cache = json.loads(cache_file.read_text()) if cache_file.exists() else {}

    def save():
        cache_file.parent.mkdir(exist_ok=True)
        tmp = cache_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(cache, indent=0, sort_keys=True))
        tmp.replace(cache_file)

    # SIGTERM unwinds like Ctrl-C: the temporary trees are removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    env = _xla_cache_env(root)
    t0 = time.perf_counter()
    per_module: dict[str, ModuleRun] = {}
    sources: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="jaxreg-mutate-") as tmp:
        trees = [_copy_tree(root, Path(tmp) / f"tree{j}") for j in range(args.jobs)]
        for path in modules:
            results, executed, seconds = mutate_module(
                root,
                path,
                mapping[path],
                trees=trees,
                python=sys.executable,
                env=env,
                cache=cache,
                fresh=args.fresh,
                log=lambda s: print(s, flush=True),
                sample=modules[path],
                min_timeout=args.min_timeout,
                keep_killed=args.keep_killed,
                save=save,
            )
            generated = len(generate(path, (trees[0] / path).read_text(), quiet=True))
            per_module[path] = ModuleRun(results, seconds, generated, executed)
            sources[path] = (trees[0] / path).read_text()
            save()
    total = time.perf_counter() - t0
    command = "make mutate" + (f" MODULES='{' '.join(args.modules)}'" if args.modules else "")
    if args.sample is not None:
        command = f"tools/mutate.py --sample {args.sample}" + (
            f" {' '.join(args.modules)}" if args.modules else ""
        )
    cached = any(r.cached for run in per_module.values() for r in run.results)
    note = (
        f"This run took {total / 60:.1f} min; some outcomes came from the cache." if cached else ""
    )
    wall = sum(r.seconds for run in per_module.values() for r in run.results) if cached else total
    text = report(root, per_module, command=command, total_seconds=wall, note=note, sources=sources)
    out = root / args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"report: {out}")
    return 0


def _xla_cache_env(root: Path) -> dict[str, str]:
    """A persistent XLA cache for mutants, apart from the tests' own (seeded from it)."""
    import importlib.util

    # jaxreg/_paths.py alone (standard library only): this process never imports JAX.
    spec = importlib.util.spec_from_file_location("_jaxreg_paths", root / "jaxreg" / "_paths.py")
    if spec is None or not (root / "jaxreg" / "_paths.py").exists():
        return {}
    _paths = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(_paths)
    base = _paths.cache_root()
    target = base / "mutate" / "xla"
    if not target.exists():
        _paths.private_dir(base / "mutate")
        seed = base / "tests" / "xla"
        if seed.is_dir():
            shutil.copytree(seed, target)
            os.chmod(target, 0o700)
    return {"JAX_COMPILATION_CACHE_DIR": str(_paths.private_dir(target))}


# ---------------------------------------------------------------------------------------------
# pytest plugin (loaded in the test subprocesses with `-p mutate`; inert without JAXREG_MUTATE).

_state: dict = {"test": "<import>", "lines": {}, "durations": {}, "order": []}


def _start_tracing(target: str) -> None:
    """Records the lines of `target` that run, under the current test's node id."""
    target = os.path.realpath(target)
    lines = _state["lines"]

    def local(frame, event, arg):
        if event == "line":
            lines.setdefault(_state["test"], set()).add(frame.f_lineno)
        return local

    seen: dict[str, bool] = {}  # co_filename -> is the target (this hook sees every call)

    def on_call(frame, event, arg):
        f = frame.f_code.co_filename
        hit = seen.get(f)
        if hit is None:
            hit = seen[f] = os.path.realpath(f) == target
        if hit:
            lines.setdefault(_state["test"], set()).add(frame.f_lineno)
            return local
        return None

    sys.settrace(on_call)
    threading.settrace(on_call)


# Tracing starts when pytest loads this plugin (`-p mutate`), before the conftest files import
# the package: lines that run at import (module constants, defaults) count as "<import>".
if __name__ != "__main__" and os.environ.get("JAXREG_MUTATE_TRACE"):
    _start_tracing(os.environ["JAXREG_MUTATE_TRACE"])


def pytest_configure(config):
    """Hypothesis derandomized and without its example database, in the test subprocesses."""
    if not os.environ.get("JAXREG_MUTATE"):
        return
    if "hypothesis" in sys.modules:  # imported by its pytest plugin, before any test module
        from hypothesis import settings

        settings.register_profile("jaxreg-mutate", database=None, derandomize=True)
        settings.load_profile("jaxreg-mutate")


def pytest_collection_modifyitems(session, config, items):
    """Runs the tests named in JAXREG_MUTATE_ORDER first, in that order; records the order."""
    _state["order"] = [it.nodeid for it in items]
    order_file = os.environ.get("JAXREG_MUTATE_ORDER")
    if not order_file:
        return
    first = {t: k for k, t in enumerate(json.loads(Path(order_file).read_text()))}
    items.sort(key=lambda it: first.get(it.nodeid, len(first)))


def pytest_runtest_logstart(nodeid, location):
    """Lines run from here on belong to this test (its setup, call and teardown)."""
    _state["test"] = nodeid


def pytest_runtest_logreport(report):
    """Adds up each test's time (setup, call, teardown)."""
    d = _state["durations"]
    d[report.nodeid] = d.get(report.nodeid, 0.0) + report.duration


def pytest_unconfigure(config):
    """Writes the baseline record."""
    out = os.environ.get("JAXREG_MUTATE_OUT")
    if os.environ.get("JAXREG_MUTATE") and out:
        sys.settrace(None)
        Path(out).write_text(
            json.dumps(
                {
                    "lines": {k: sorted(v) for k, v in _state["lines"].items()},
                    "durations": _state["durations"],
                    "order": _state["order"],
                }
            )
        )


if __name__ == "__main__":
    sys.exit(main())
