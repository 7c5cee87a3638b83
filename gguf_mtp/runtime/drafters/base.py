"""The drafter interface and its implementations.

A drafter proposes tokens that follow the newest sampled token; the target
verifies them in one pass and tells the drafter how many it kept. The loop in
:mod:`gguf_mtp.runtime.loop` drives any drafter through these calls:

    begin(eng, prompt, hidden)           after the prompt's target pass
    propose(eng, context, tok, pos, k)   -> Proposal (chain), k >= 1; ``context``
                                         is every token so far, ``tok`` (the
                                         newest, at ``pos``) included
    accept(eng, tok, pos, proposal, n_accepted, hidden)
                                         after verification; ``hidden`` holds the
                                         target's NextN rows of the verify batch

``Proposal.q`` carries the drafter's distribution at each position (needed by
the rejection rule when sampling); ``None`` means a deterministic drafter
(q = one-hot at the proposed token).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..engine import Engine, RuntimeOptions
from ..sampling import SamplingParams
from ..tree import DraftTree


@dataclass
class Proposal:
    tokens: list[int] = field(default_factory=list)   # a chain (for a tree: its first branch)
    q: list[np.ndarray] | None = None   # one distribution per proposed token, or None (one-hot)
    tree: DraftTree | None = None       # several branches, verified in one pass
    #: set by the loop after verification: the target batch rows of the root
    #: token and of each accepted draft token (the last one's logits gave the
    #: next token)
    rows: list[int] = field(default_factory=list)


class Drafter:
    """Base class: a drafter that proposes nothing (plain decoding)."""

    name = "none"
    #: one line for ``--help`` (the CLI lists the registry with these)
    summary = "plain decoding, one token per target pass"
    #: constructor options this drafter takes (``make_drafter`` passes only these)
    options: tuple[str, ...] = ()
    #: the engine must load the MTP layers and create the MTP context
    needs_mtp = False
    #: the target must export its NextN hidden states for this drafter
    needs_hidden = False
    #: most branches of a proposed tree (1 = chains only); the target context
    #: needs n_seq_max > branches and a unified KV cache for more
    max_branches = 1
    #: the target pass must compute the model's Medusa heads for this drafter
    needs_medusa = False
    #: the drafter picks the draft length itself each pass (the loop passes the cap)
    chooses_length = False
    #: in greedy decoding the drafter reads only the MTP head's winners, never its logits:
    #: the MTP context may run greedy passes (``Engine.greedy_mtp``, argmax in the graph)
    argmax_drafts = False

    def step_cost(self, measured_mtp_step: float) -> float:
        """Cost of one drafted token in 1-token target passes (for draft='auto');
        host-side drafters cost next to nothing."""
        return 0.0

    def configure(self, opts: RuntimeOptions) -> RuntimeOptions:
        """Adjust engine options this drafter needs (before the Engine is made)."""
        opts.load_mtp = self.needs_mtp
        if self.max_branches > 1:
            opts.n_seq_max = max(opts.n_seq_max, self.max_branches + 1)
            opts.kv_unified = True
        return opts

    def prepare(self, eng: Engine) -> None:
        """Before the prompt is prefilled (the cache may be used here, e.g. to
        measure costs; it is cleared afterwards)."""

    def begin(self, eng: Engine, prompt: list[int], hidden: np.ndarray | None) -> None:
        pass

    def propose(self, eng: Engine, context: list[int], tok: int, pos: int, k: int,
                params: SamplingParams, rng: np.random.Generator) -> Proposal:
        return Proposal()

    def accept(self, eng: Engine, tok: int, pos: int, proposal: Proposal, n_accepted: int,
               hidden: np.ndarray | None) -> None:
        pass
