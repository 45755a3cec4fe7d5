"""A bound on what YAML aliases may expand to, checked before anything is built.

An alias (``*name``) is cheap to write and costs its whole anchored value each
time it is used: a 208 KB file that uses one 200 KB string 2,000 times builds
400 MB of job specs. :class:`ExpansionBudget` measures a composed node graph
the way the constructor will expand it (every use of a node counts again,
merge keys included) and refuses once the file's budget is spent.

- Cost of a node: :data:`NODE_COST` plus, for a scalar, its length; a list or
  mapping adds the cost of each item, key and value. Without aliases a file
  costs less than :data:`FACTOR` times its size, so only aliases can exhaust it.
- Budget per file: :data:`FACTOR` times its size, at least :data:`FLOOR`.
- Nesting deeper than :data:`MAX_DEPTH` (no job field needs more than 3) and
  recursive aliases (an anchor used inside itself) are refused too.
- The walk is iterative and visits each distinct node once (costs are memoised
  per node id, capped just over the budget), so time and memory stay
  proportional to the file.
"""

from __future__ import annotations

import yaml

from scheduler.limits import format_size

__all__ = ["FACTOR", "FLOOR", "MAX_DEPTH", "NODE_COST", "ExpansionBudget"]

NODE_COST = 8
FACTOR = 10
FLOOR = 8 * 1024 * 1024
MAX_DEPTH = 32
_TOO_DEEP = f"YAML nesting is more than {MAX_DEPTH} levels deep"


class ExpansionBudget:
    """What one file's aliases may still expand to; :meth:`charge` spends it."""

    def __init__(self, file_bytes: int) -> None:
        self.total = max(FLOOR, FACTOR * file_bytes)
        self.left = self.total
        self._memo: dict[int, tuple[int, int]] = {}  # id(node) -> (cost, depth)
        self._keep: list[yaml.Node] = []  # memoised nodes stay alive: ids stay unique

    def charge(self, node: yaml.Node) -> str | None:
        """Spend the cost of building ``node``; a problem message when it cannot be built."""
        measured = self._measure(node)
        if isinstance(measured, str):
            return measured
        cost, depth = measured
        if depth > MAX_DEPTH:
            return _TOO_DEEP
        self.left -= cost
        if self.left < 0:
            return (
                f"YAML aliases expand to more than {format_size(self.total)} "
                f"(the bound is {FACTOR} times the file's size, at least {format_size(FLOOR)}); "
                "use fewer aliases"
            )
        return None

    def _measure(self, root: yaml.Node) -> tuple[int, int] | str:
        cap = self.total + 1
        memo = self._memo
        open_ids: set[int] = set()  # nodes whose children are being measured: the path
        stack: list[tuple[yaml.Node, bool]] = [(root, False)]
        while stack:
            node, done = stack.pop()
            key = id(node)
            kids = _children(node)
            if done:
                open_ids.discard(key)
                cost = NODE_COST + (len(node.value) if isinstance(node, yaml.ScalarNode) else 0)
                depth = 0
                for kid in kids:
                    kid_cost, kid_depth = memo[id(kid)]
                    cost, depth = min(cap, cost + kid_cost), max(depth, kid_depth)
                memo[key] = (cost, depth + 1)
                self._keep.append(node)
                continue
            if key in memo:
                continue
            if key in open_ids:
                return "a YAML alias is used inside its own anchor (a recursive structure)"
            if len(open_ids) > MAX_DEPTH:
                return _TOO_DEEP
            open_ids.add(key)
            stack.append((node, True))
            stack.extend((kid, False) for kid in kids if id(kid) not in memo)
        return memo[id(root)]


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []
