"""When a tool call needs a human's approval: the policy model and its small condition language.

A flow author writes ``approval: {required: when, when: "amount > 100 and currency == 'USD'"}`` in YAML.
The condition is a data-only expression over the tool's arguments, so it is parsed with
``ast.parse(mode="eval")`` when the policy is validated and every node is checked against a short allow
list (names, dotted fields, constants, comparisons, ``and``/``or``/``not``, list/tuple literals). Nothing is
ever passed to ``eval``: a small walker evaluates the checked tree.

The gate must not be talked past, so evaluation fails closed: if the arguments make the condition
meaningless the answer is "requires approval". Meaningless means: a field the condition reads was left
out (``amount > 100`` or ``currency == 'USD'`` without that argument — only ``field == None`` and
``field != None`` may test whether it was given), a value that is not a finite number where numbers are
compared (``NaN``, ``Infinity``; ``NaN > 100`` is false, so it would otherwise wave the call through),
a string where a number was expected, or a dotted field into something that is not an object. Fields a
short-circuited ``and``/``or`` never reaches do not count.

Pure and synchronous (sans-I/O); safe to import from the flow models.
"""

from __future__ import annotations

import ast
import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = ["ALLOWED_SYNTAX", "ApprovalPolicy", "Condition", "ConditionError", "compile_condition"]

#: One sentence listing what a condition may contain; ends every rejection message.
ALLOWED_SYNTAX = (
    "a condition may use argument names (amount), dotted fields of object arguments (address.city), "
    "constants (strings, numbers, True/False/None — true/false/null also work), comparisons "
    "(== != < <= > >= in, not in), and/or/not, parentheses and [list] or (tuple) literals"
)

#: Longest condition accepted; conditions are one-liners, not programs.
MAX_CONDITION_LENGTH = 1000

#: JSON/YAML spellings of the constants, accepted because flow authors write YAML.
_CONSTANT_ALIASES: dict[str, Any] = {
    "true": True,
    "false": False,
    "null": None,
    "none": None,
    "True": True,
    "False": False,
    "None": None,
}

_COMPARISONS: dict[type[ast.cmpop], str] = {
    ast.Eq: "==",
    ast.NotEq: "!=",
    ast.Lt: "<",
    ast.LtE: "<=",
    ast.Gt: ">",
    ast.GtE: ">=",
    ast.In: "in",
    ast.NotIn: "not in",
}

#: Friendly names for the node types people most often try, for the rejection message.
_NODE_NAMES: dict[type[ast.AST], str] = {
    ast.Call: "function calls",
    ast.Subscript: "subscripts ([...] indexing)",
    ast.Lambda: "lambdas",
    ast.BinOp: "arithmetic operators",
    ast.IfExp: "if/else expressions",
    ast.Dict: "dict literals",
    ast.Set: "set literals",
    ast.ListComp: "comprehensions",
    ast.SetComp: "comprehensions",
    ast.DictComp: "comprehensions",
    ast.GeneratorExp: "comprehensions",
    ast.NamedExpr: "assignments (:=)",
    ast.Await: "await",
    ast.Starred: "* unpacking",
    ast.JoinedStr: "f-strings",
    ast.Slice: "slices",
}


class ConditionError(ValueError):
    """A condition uses syntax outside the allowed language; the message says what and what is allowed."""


class _Mismatch(Exception):
    """Raised inside evaluation when the arguments do not fit the condition; the policy fails closed."""


@dataclass(frozen=True)
class Condition:
    """A checked condition, ready to evaluate against tool arguments."""

    source: str
    tree: ast.expr
    #: Every argument path the condition reads, e.g. ``{"amount", "address.city"}``.
    fields: frozenset[str]

    def evaluate(self, arguments: Mapping[str, Any]) -> bool:
        """True when the condition holds; also True when it cannot be decided (fail closed)."""
        try:
            return bool(_truth(_eval(self.tree, arguments)))
        except _Mismatch:
            return True
        except Exception:  # comparisons of exotic values: still never raise, still fail closed
            return True


@functools.lru_cache(maxsize=512)
def compile_condition(source: str) -> Condition:
    """Parse and check ``source``; raise :class:`ConditionError` naming what is not allowed."""
    text = source.strip()
    if not text:
        raise ConditionError(f"the condition is empty; {ALLOWED_SYNTAX}")
    if len(text) > MAX_CONDITION_LENGTH:
        raise ConditionError(
            f"the condition is {len(text)} characters long (at most {MAX_CONDITION_LENGTH}); {ALLOWED_SYNTAX}"
        )
    # A condition written over several YAML lines (folded block) is still one expression.
    text = " ".join(text.splitlines())
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as exc:
        where = f" at column {exc.offset}" if exc.offset else ""
        raise ConditionError(
            f"{text!r} is not a valid expression{where} ({exc.msg}); {ALLOWED_SYNTAX}"
        ) from None
    fields: set[str] = set()
    checked = _check(tree.body, text, fields)
    return Condition(source=text, tree=checked, fields=frozenset(fields))


def _segment(node: ast.AST, text: str) -> str:
    piece = ast.get_source_segment(text, node)
    return piece if piece is not None else ast.unparse(node)


def _reject(what: str, node: ast.AST, text: str) -> ConditionError:
    return ConditionError(f"{what} are not allowed (found {_segment(node, text)!r}); {ALLOWED_SYNTAX}")


def _dotted(node: ast.Attribute, text: str) -> str:
    """``address.city`` → ``"address.city"``; only chains that start from an argument name are allowed."""
    parts: list[str] = []
    current: ast.expr = node
    while isinstance(current, ast.Attribute):
        parts.append(current.attr)
        current = current.value
    if not isinstance(current, ast.Name) or current.id in _CONSTANT_ALIASES:
        raise _reject("attributes on anything but an argument name (dotted fields)", node, text)
    parts.append(current.id)
    parts.reverse()
    for part in parts:
        if "__" in part:
            raise _reject("names containing '__'", node, text)
    return ".".join(parts)


def _check(node: ast.expr, text: str, fields: set[str]) -> ast.expr:
    """Walk ``node``, rejecting anything outside the language; fold ``-5`` into a constant."""
    if isinstance(node, ast.Constant):
        if node.value is Ellipsis or not isinstance(node.value, str | int | float | bool | type(None)):
            raise _reject("constants other than strings, numbers, booleans and None", node, text)
        return node
    if isinstance(node, ast.Name):
        if "__" in node.id:
            raise _reject("names containing '__'", node, text)
        if node.id in _CONSTANT_ALIASES:
            return ast.copy_location(ast.Constant(_CONSTANT_ALIASES[node.id]), node)
        fields.add(node.id)
        return node
    if isinstance(node, ast.Attribute):
        fields.add(_dotted(node, text))
        return node
    if isinstance(node, ast.UnaryOp):
        if isinstance(node.op, ast.Not):
            return ast.copy_location(ast.UnaryOp(ast.Not(), _check(node.operand, text, fields)), node)
        if isinstance(node.op, ast.USub | ast.UAdd):
            operand = node.operand
            if (
                isinstance(operand, ast.Constant)
                and isinstance(operand.value, int | float)
                and not isinstance(operand.value, bool)
            ):
                value = -operand.value if isinstance(node.op, ast.USub) else operand.value
                return ast.copy_location(ast.Constant(value), node)
            raise _reject("signs on anything but a number", node, text)
        raise _reject("bitwise operators", node, text)
    if isinstance(node, ast.BoolOp):
        values = [_check(value, text, fields) for value in node.values]
        return ast.copy_location(ast.BoolOp(node.op, values), node)
    if isinstance(node, ast.Compare):
        for op in node.ops:
            if type(op) not in _COMPARISONS:
                raise _reject("'is' and 'is not' comparisons (use == or != instead)", node, text)
        left = _check(node.left, text, fields)
        comparators = [_check(value, text, fields) for value in node.comparators]
        return ast.copy_location(ast.Compare(left, list(node.ops), comparators), node)
    if isinstance(node, ast.List | ast.Tuple):
        # Both become lists: arguments come from JSON, where every array is a list.
        elements = [_check(value, text, fields) for value in node.elts]
        return ast.copy_location(ast.List(elements, ast.Load()), node)
    what = _NODE_NAMES.get(type(node), f"{type(node).__name__} expressions")
    raise _reject(what, node, text)


class _Missing:
    """The value of a field the arguments do not have; only ``== None`` / ``!= None`` accept it."""

    __slots__ = ("path",)

    def __init__(self, path: str) -> None:
        self.path = path


def _lookup(arguments: Mapping[str, Any], path: Sequence[str]) -> Any:
    value: Any = arguments
    for part in path:
        if not isinstance(value, Mapping):
            raise _Mismatch(f"{'.'.join(path)}: not an object")
        if part not in value:
            return _Missing(".".join(path))
        value = value[part]
    return value


def _checked(value: Any) -> Any:
    """``value`` if a comparison or truth test may use it; a missing field or a non-finite number is not."""
    if isinstance(value, _Missing):
        raise _Mismatch(f"{value.path} was not given")
    if isinstance(value, float) and not math.isfinite(value):
        raise _Mismatch(f"{value!r} is not a finite number")
    return value


def _attribute_path(node: ast.Attribute) -> list[str]:
    parts: list[str] = []
    current: ast.expr = node
    while isinstance(current, ast.Attribute):
        parts.append(current.attr)
        current = current.value
    assert isinstance(current, ast.Name)
    parts.append(current.id)
    parts.reverse()
    return parts


def _truth(value: Any) -> bool:
    return bool(_checked(value))


def _eval(node: ast.expr, arguments: Mapping[str, Any]) -> Any:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        return _lookup(arguments, (node.id,))
    if isinstance(node, ast.Attribute):
        return _lookup(arguments, _attribute_path(node))
    if isinstance(node, ast.UnaryOp):  # only ``not`` survives checking
        return not _truth(_eval(node.operand, arguments))
    if isinstance(node, ast.BoolOp):
        if isinstance(node.op, ast.And):
            return all(_truth(_eval(value, arguments)) for value in node.values)
        return any(_truth(_eval(value, arguments)) for value in node.values)
    if isinstance(node, ast.Compare):
        left = _eval(node.left, arguments)
        for op, comparator in zip(node.ops, node.comparators, strict=True):
            right = _eval(comparator, arguments)
            if not _compare(type(op), left, right):
                return False
            left = right
        return True
    if isinstance(node, ast.List):
        return [_checked(_eval(value, arguments)) for value in node.elts]
    raise _Mismatch(f"unexpected node {type(node).__name__}")  # unreachable after _check


#: Comparisons that order their operands (a boolean operand makes them fail closed).
_ORDERED = (ast.Lt, ast.LtE, ast.Gt, ast.GtE)


def _compare(op: type[ast.cmpop], left: Any, right: Any) -> bool:
    if op is ast.Eq or op is ast.NotEq:
        # ``field == None`` / ``field != None``: whether the field was given (a missing one counts as None)
        if right is None and isinstance(left, _Missing):
            left = None
        elif left is None and isinstance(right, _Missing):
            right = None
    left, right = _checked(left), _checked(right)
    if op in _ORDERED and (isinstance(left, bool) or isinstance(right, bool)):
        # True/False order as 1/0 in Python: ``amount > 0`` must not be waved through by ``false``.
        raise _Mismatch(f"cannot order {left!r} and {right!r}")
    try:
        if op is ast.Eq:
            return bool(left == right)
        if op is ast.NotEq:
            return bool(left != right)
        if op is ast.Lt:
            return bool(left < right)
        if op is ast.LtE:
            return bool(left <= right)
        if op is ast.Gt:
            return bool(left > right)
        if op is ast.GtE:
            return bool(left >= right)
        if op is ast.In:
            return bool(_contains(right, left))
        if op is ast.NotIn:
            return not _contains(right, left)
    except TypeError as exc:
        raise _Mismatch(str(exc)) from None
    raise _Mismatch(f"unknown comparison {op.__name__}")


def _contains(container: Any, item: Any) -> bool:
    if isinstance(container, str):
        if not isinstance(item, str):
            raise _Mismatch("'in' a string needs a string on the left")
        return item in container
    if isinstance(container, list | tuple):
        return any(_checked(element) == item for element in container)
    if isinstance(container, Mapping):
        return item in container
    raise _Mismatch(f"'in' needs a list, string or object on the right, not {type(container).__name__}")


class ApprovalPolicy(BaseModel):
    """Whether a tool call waits for a human: never, always, or when a condition on its arguments holds."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    required: Literal["never", "always", "when"] = "never"
    #: Condition over the tool's arguments, e.g. ``"amount > 100 and currency == 'USD'"``.
    when: str | None = None
    #: Shown to the operator, e.g. "Refunds over $100 need a manager".
    reason: str | None = Field(default=None, min_length=1, max_length=500)
    #: After this long without a decision the request is denied (expired).
    timeout_s: float = 120.0

    @field_validator("when")
    @classmethod
    def _parse_when(cls, value: str | None) -> str | None:
        if value is None:
            return None
        return compile_condition(value).source

    @field_validator("timeout_s")
    @classmethod
    def _timeout_range(cls, value: float) -> float:
        if not 5.0 <= value <= 3600.0:
            raise ValueError(f"{value} seconds is out of range (use 5 to 3600)")
        return value

    @model_validator(mode="after")
    def _when_matches_required(self) -> ApprovalPolicy:
        if self.required == "when" and self.when is None:
            raise ValueError(
                "required: when needs a 'when' condition, e.g. when: \"amount > 100\" "
                "(or use required: always / never)"
            )
        if self.required != "when" and self.when is not None:
            raise ValueError(
                f"'when' is only used with required: when (this policy says required: {self.required}); "
                "set required: when or remove 'when'"
            )
        return self

    @property
    def condition(self) -> Condition | None:
        """The compiled condition (cached per source text), or None unless ``required`` is ``when``."""
        return compile_condition(self.when) if self.when is not None else None

    @property
    def fields(self) -> frozenset[str]:
        """Argument paths the condition reads, so a tool config can check them against its schema."""
        condition = self.condition
        return condition.fields if condition is not None else frozenset()

    def requires_approval(self, arguments: Mapping[str, Any]) -> bool:
        """Decide for one call's arguments; never raises, and answers True when in doubt."""
        if self.required == "never":
            return False
        if self.required == "always":
            return True
        condition = self.condition
        if condition is None:  # unreachable after validation; fail closed anyway
            return True
        if not isinstance(arguments, Mapping):
            return True
        return condition.evaluate(arguments)
