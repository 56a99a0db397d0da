"""Plan the prefix-sharing text pass: a radix tree over token-id sequences (no torch here).

CLIP's text tower is causal: a token's hidden states depend only on the tokens before it,
so token sequences that start alike have identical hidden states over their common start.
Under the paper's template every prompt of a class begins with ``{class}, which``, the
baseline prompts all begin with ``a photo of a``, and every prompt begins with the start
token. :func:`plan_tree` turns the (already pooled-position-truncated) sequences into a
radix tree whose nodes are token *segments*: a node's tokens are computed once, attending to
its ancestors' cached keys and values, so every distinct prefix is computed exactly once.

Nodes are listed level by level (a parent's level before its children's), which is the
order they can be computed in. A sequence ends on exactly one node, on that node's last
token (the pooled position); identical sequences end on the same node.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass
class Node:
    parent: int  # index in TreePlan.nodes; -1 for a node with no context
    start: int  # position of the first token of the segment (= the parent's end)
    tokens: tuple[int, ...]  # the segment (never empty)
    ends: list[int] = field(default_factory=list)  # sequences pooled at this node's last token
    has_children: bool = False  # keys and values must be kept for the children

    @property
    def end(self) -> int:
        return self.start + len(self.tokens)


@dataclass
class TreePlan:
    nodes: list[Node]
    levels: list[list[int]]  # node indices per depth; each level depends only on the ones before

    @property
    def shared_tokens(self) -> int:
        """Tokens computed for nodes that other nodes attend to (the shared prefixes)."""
        return sum(len(n.tokens) for n in self.nodes if n.has_children)

    @property
    def own_tokens(self) -> int:
        """Tokens computed for nodes with no children (the suffixes)."""
        return sum(len(n.tokens) for n in self.nodes if not n.has_children)


def _common(a: Sequence[int], b: Sequence[int], start: int) -> int:
    """Length of the common prefix of ``a`` and ``b``, given that it is at least ``start``."""
    n = start
    limit = min(len(a), len(b))
    while n < limit and a[n] == b[n]:
        n += 1
    return n


def plan_tree(seqs: Sequence[Sequence[int]]) -> TreePlan:
    """A radix tree over ``seqs`` (each non-empty). Sorting puts sequences that share a
    prefix next to each other, and the common prefix of a sorted run is the common prefix
    of its first and last member, so the tree is built in one pass over sorted runs."""
    if any(len(s) == 0 for s in seqs):
        raise ValueError("every sequence needs at least one token (the pooled one)")
    order = sorted(range(len(seqs)), key=lambda i: tuple(seqs[i]))
    nodes: list[Node] = []
    depth: list[int] = []
    # Work items: a sorted run [lo, hi) of `order` whose members share `start` tokens, all
    # longer than `start`, to be split by their token at position `start`.
    work = [(0, len(order), 0, -1)]
    while work:
        lo, hi, start, parent = work.pop()
        i = lo
        while i < hi:
            token = seqs[order[i]][start]
            j = i + 1
            while j < hi and seqs[order[j]][start] == token:
                j += 1
            first, last = seqs[order[i]], seqs[order[j - 1]]
            end = len(first) if j - i == 1 else _common(first, last, start + 1)
            nodes.append(Node(parent, start, tuple(first[start:end])))
            depth.append(0 if parent < 0 else depth[parent] + 1)
            me = len(nodes) - 1
            k = i
            while k < j and len(seqs[order[k]]) == end:  # shorter sequences sort first
                nodes[me].ends.append(order[k])
                k += 1
            if k < j:
                nodes[me].has_children = True
                work.append((k, j, end, me))
            i = j
    levels: list[list[int]] = [[] for _ in range(max(depth, default=-1) + 1)]
    for idx, d in enumerate(depth):
        levels[d].append(idx)
    return TreePlan(nodes, levels)
