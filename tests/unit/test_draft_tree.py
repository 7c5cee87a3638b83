"""DraftTree: building trees from chains and from ranked candidates (no runtime needed)."""

from __future__ import annotations

import pytest

from gguf_mtp.runtime.tree import ROOT, DraftTree

def test_draft_tree_from_chains_merges_prefixes():
    tree = DraftTree.from_chains(7, [[1, 2, 3], [1, 2, 4], [1, 5], [6]])
    assert tree.root == 7
    assert tree.tokens == [1, 2, 3, 4, 5, 6]
    assert tree.parents == [ROOT, 0, 1, 1, 0, ROOT]
    assert tree.depths == [1, 2, 3, 3, 2, 1]
    assert tree.leaves() == [2, 3, 4, 5]
    assert tree.depth == 3 and len(tree) == 6 and not tree.is_chain()
    assert tree.path(3) == [0, 1, 3] and tree.path_tokens(3) == [1, 2, 4]
    assert tree.children(ROOT) == {1: 0, 6: 5} and tree.children(1) == {3: 2, 4: 3}
    assert tree.add(2, 0) == 1                      # an existing sibling is reused
    assert DraftTree.from_chains(7, [[1, 2]]).is_chain() and DraftTree(7).is_chain()
    with pytest.raises(IndexError):
        tree.add(1, 99)


def test_draft_tree_from_topk_static_and_callable():
    paths = [[0], [1], [2], [0, 0], [0, 1], [1, 0], [0, 0, 0]]
    cand = [[10, 11, 12], [20, 21], [30]]
    tree = DraftTree.from_topk(5, paths, cand)
    got = {tuple(tree.path_tokens(i)) for i in range(len(tree))}
    assert got == {(10,), (11,), (12,), (10, 20), (10, 21), (11, 20), (10, 20, 30)}
    # missing prefixes are added; a callable gives candidates per prefix
    tree = DraftTree.from_topk(5, [[1, 1]], lambda prefix: [sum(prefix) + 1, sum(prefix) + 2])
    assert [tree.path_tokens(i) for i in range(len(tree))] == [[2], [2, 4]]
    with pytest.raises(IndexError):
        DraftTree.from_topk(5, [[3]], cand)
