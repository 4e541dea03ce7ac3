"""The graph of related notes that a pairs table defines: notes are nodes, every pair an undirected edge.

It is the graph ``mine-pairs`` writes as ``pairs_train`` (co-occurrence pairs) and the one hard-negative mining
excludes from (docs/method.md#hard-negatives): two notes are *related at depth k* when a path of at most ``k`` pairs
joins them (depth 1: a pair; depth 2: a shared partner; a note is related to itself at depth 0).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence


class PairGraph:
    """Undirected graph over note positions, built from (query id, target id) pairs.

    Args:
        pairs: The pairs (orientation ignored; self-pairs add no edge).
        note_ids: The nodes, in position order; every id of ``pairs`` must be among them.
    """

    def __init__(self, pairs: Iterable[tuple[str, str]], note_ids: Sequence[str]) -> None:
        self.note_ids = list(note_ids)
        self.position = {n: i for i, n in enumerate(self.note_ids)}
        self.adjacency: list[set[int]] = [set() for _ in self.note_ids]
        for q, t in pairs:
            a, b = self.position[q], self.position[t]
            if a != b:
                self.adjacency[a].add(b)
                self.adjacency[b].add(a)

    @classmethod
    def from_pairs(cls, pairs: Sequence[tuple[str, str]]) -> PairGraph:
        """The graph over exactly the notes of ``pairs``, positions in sorted id order."""
        return cls(pairs, sorted({n for p in pairs for n in p}))

    def __len__(self) -> int:
        return len(self.note_ids)

    def ball(self, node: int, radius: int) -> set[int]:
        """Positions at most ``radius`` edges from ``node`` (``node`` included)."""
        seen, frontier = {node}, {node}
        for _ in range(radius):
            frontier = {m for n in frontier for m in self.adjacency[n]} - seen
            if not frontier:
                break
            seen |= frontier
        return seen

    def within(self, a: int, b: int, depth: int) -> bool:
        """True when a path of at most ``depth`` pairs joins positions ``a`` and ``b`` (``a == b`` at depth 0).

        Depths 1 and 2 (the exclusion of hard-negative mining) cost one set lookup and one set intersection; deeper
        ones meet two balls in the middle.
        """
        if a == b:
            return True
        if depth <= 0:
            return False
        near = self.adjacency[a]
        if b in near or depth == 1:
            return b in near
        if depth == 2:
            return not near.isdisjoint(self.adjacency[b])
        return not self.ball(a, (depth + 1) // 2).isdisjoint(self.ball(b, depth // 2))
