"""The small expression language of `--where`, `--sort` and `gates:`: metric names, numbers,
arithmetic, comparisons (chained too), `and` / `or` / `not`, `abs`, `min`, `max`.

`size_mb <= 300 and decode_tok_s >= 40`, `ppl_awq <= 1.10 * ppl_base`. Parsed with Python's own
parser and checked node by node before anything is evaluated: a name is a metric, never a variable
of this program, and there are no attributes, calls other than the three above, or subscripts.
"""

from __future__ import annotations

import ast
import difflib
import operator

from tasks.errors import ParamsError

_BINARY = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Pow: operator.pow,
}
_COMPARE = {
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
}
_FUNCTIONS = {"abs": abs, "min": min, "max": max}


class Missing(Exception):
    """A metric the expression names has no value for this row (a failed trial, an older record)."""


class Expression:
    def __init__(self, text: str, what: str):
        self.text, self.what = text, what
        try:
            self.tree = ast.parse(text.strip(), mode="eval").body
        except SyntaxError as exc:
            raise ParamsError(f"{what}: {text!r} is not an expression ({exc.msg})") from None
        self._check(self.tree)

    def _check(self, node) -> None:
        allowed = (ast.BoolOp, ast.BinOp, ast.UnaryOp, ast.Compare, ast.Name, ast.Constant, ast.Call)
        allowed += (ast.And, ast.Or, ast.Not, ast.USub, ast.UAdd, ast.Load, *_BINARY, *_COMPARE)
        if not isinstance(node, allowed):
            raise ParamsError(f"{self.what}: {type(node).__name__} is not allowed in {self.text!r}")
        if isinstance(node, ast.Constant) and not isinstance(node.value, (int, float)):
            raise ParamsError(f"{self.what}: only numbers are constants in {self.text!r}")
        if isinstance(node, ast.Call) and (not isinstance(node.func, ast.Name) or node.func.id not in _FUNCTIONS):
            raise ParamsError(f"{self.what}: only {', '.join(_FUNCTIONS)} may be called in {self.text!r}")
        for child in ast.iter_child_nodes(node):
            if not (isinstance(node, ast.Call) and child is node.func):
                self._check(child)

    def names(self) -> list[str]:
        """The metric names it reads, in order of appearance."""
        calls = {id(n.func) for n in ast.walk(self.tree) if isinstance(n, ast.Call)}
        found = [n.id for n in ast.walk(self.tree) if isinstance(n, ast.Name) and id(n) not in calls]
        return list(dict.fromkeys(found))

    def check_names(self, known: list[str]) -> None:
        """Refuse a name no row can have, listing the known ones."""
        for name in self.names():
            if name not in known:
                close = difflib.get_close_matches(name, known, n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                raise ParamsError(f"{self.what}: unknown metric {name!r}{hint}; known: {', '.join(sorted(known))}")

    def __call__(self, values: dict):
        return _eval(self.tree, values)


def _eval(node, values: dict):
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        if values.get(node.id) is None:
            raise Missing(node.id)
        return values[node.id]
    if isinstance(node, ast.BoolOp):
        results = (_eval(v, values) for v in node.values)
        return all(results) if isinstance(node.op, ast.And) else any(results)
    if isinstance(node, ast.UnaryOp):
        value = _eval(node.operand, values)
        return not value if isinstance(node.op, ast.Not) else (-value if isinstance(node.op, ast.USub) else value)
    if isinstance(node, ast.BinOp):
        return _BINARY[type(node.op)](_eval(node.left, values), _eval(node.right, values))
    if isinstance(node, ast.Call):
        return _FUNCTIONS[node.func.id](*(_eval(a, values) for a in node.args))
    left = _eval(node.left, values)  # a Compare: a < b <= c
    for op, right_node in zip(node.ops, node.comparators, strict=True):
        right = _eval(right_node, values)
        if not _COMPARE[type(op)](left, right):
            return False
        left = right
    return True


def figures(expression: Expression, values: dict) -> str:
    """The values an expression read, for a message: `ppl_awq 12.3, ppl_base 10.1`."""
    return ", ".join(f"{n} {values.get(n)}" for n in expression.names())
