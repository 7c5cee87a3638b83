"""``drafter="auto"``: the drafter AND the draft length that pay, per pass, on this
machine -- including none at all.

Before every pass each candidate (the file's MTP head as a chain, prompt-lookup
n-grams, and plain decoding) is priced from measured costs: the target's batch
cost c(n) (:mod:`gguf_mtp.runtime.autodraft`, measured once per file and
machine), the candidate's own draft-step cost (the MTP step as measured; n-grams
are host-side and cost nothing) and the acceptance per draft position it has had
so far (a decaying estimate). A candidate at draft length K is expected to give

    E(K) / (c(K+1) + K * d)     (plain decoding scores 1)

and the best one drafts. Two safeguards keep the promise "never slower":

* the choice must beat plain decoding by a margin (``min_gain``), so model
  noise does not turn into slowdowns;
* the realized speed of each candidate is tracked against plain decoding's (the
  wall time of whole passes, loop included) and scales its estimate, so a cost
  model that flatters a drafter on this machine is corrected within a few passes.

N-grams are priced only on passes where a match exists (their acceptance is
tracked over those passes), and by the length of the match: each match length
(n = 1, 2, 3) has its own estimate and a proposal is priced by its own. A
continuation of a 3-token match is kept far more often than one of a single
token (12 held-out prompts, n-gram K = 2, the first draft token kept after a
1 / 2 / 3-token match: Gemma 3 270M 0.37 / 0.55 / 0.71, SmolLM2-135M 0.22 /
0.57 / 0.90), so a pooled estimate drafted weak matches and held back strong
ones. They are also scored in the shadow: every
``SHADOW_EVERY`` passes the n-gram proposal is looked up even when another
choice wins, and once the target has produced that many tokens the proposal's
matching prefix is what drafting it would have kept (exact under greedy
decoding), so the n-gram estimate keeps learning without paying for a single
rejected verify row (on the default model at q4_0 auto had never tried n-grams
that ran 1.20x plain). Every candidate sees every pass's outcome, so the
MTP head's cache stays in step whichever drafter proposed. Trees are not
candidates: on CPU a tree's verify rows cost more than its extra acceptance
buys (docs/runtime.md).
"""

from __future__ import annotations

import time


from ..autodraft import AutoDraft, cost_model
from .base import Drafter, Proposal
from .mtp_chain import MTPDrafter
from .ngram import NgramDrafter


class _Arm:
    """One candidate: its drafter, its acceptance tracker and its realized-speed correction."""

    def __init__(self, drafter: Drafter, chooser: AutoDraft):
        self.drafter = drafter
        self.chooser = chooser
        self.factor = 1.0          # realized / predicted speed (EMA)
        self.passes = 0
        self.active = True         # False: written off for this generation (its cache is not kept up)
        #: n-grams: an acceptance tracker per match length (the pooled ``chooser`` keeps the
        #: arm's pass counts for probes and the skip test)
        self.by_order: dict[int, AutoDraft] = {}


#: what an engine has learned about each candidate (acceptance, speed correction, passes),
#: kept on the Engine so that every generation after the first starts from it
_MEMORY = "_auto_drafter_memory"


#: an n-gram proposal is looked up and scored in the shadow every this many passes
SHADOW_EVERY = 4

#: the longest n-gram draft of a generation until its proposals prove out (see _ngram_outcome)
NGRAM_START = 2

#: at most this many passes in a row answer "none" without pricing (the estimates do not
#: move on passes that draft nothing; only the realized-speed factors drift, slowly)
QUIET_MAX = 16


class AutoDrafter(Drafter):
    name = "auto"
    summary = "picks the drafter (mtp, ngram or none) and draft length that pay on this machine, per pass"
    needs_mtp = True
    needs_hidden = True
    #: picks its own draft length each pass (the loop passes the cap)
    chooses_length = True
    argmax_drafts = True         # its MTP arm is a chain of the head's winners

    def __init__(self, k_max: int = 8, min_gain: float = 0.03, ema: float = 0.1, carry: float = 4.0):
        self.k_max = k_max
        self.carry = carry          # passes of earlier generations' acceptance a new one starts from
        self.min_gain = min_gain
        self.ema = ema
        self.arms: list[_Arm] = []
        self.last: tuple[_Arm | None, int, int] | None = None   # (arm, K, drafted) of the pending pass
        self.t_last: float | None = None
        #: per-pass choices, for statistics: (drafter name or "none", K)
        self.choices: list[tuple[str, int]] = []

    def step_cost(self, measured_mtp_step: float) -> float:
        return 0.0

    def prepare(self, eng):
        self.cost = cost_model(eng, n_max=self.k_max + 1)   # measured once per file and machine (clears the cache)
        # the target's hidden rows feed the MTP head only: a file without one (Gemma 3 as
        # published) exports none, and asking for them failed every auto generation there
        self.needs_hidden = bool(eng.has_mtp)

    def begin(self, eng, prompt, hidden):
        cm = self.cost
        k_max = min(self.k_max, eng.opts.draft_max)
        memory = getattr(eng, _MEMORY, None)
        if memory is None or memory.get("k_max") != k_max:
            memory = {"k_max": k_max}
            setattr(eng, _MEMORY, memory)
        self.memory = memory
        self.arms = []
        if eng.has_mtp:
            arm = memory.get("mtp") or _Arm(None, AutoDraft(cm.for_drafter(cm.draft), k_max))
            arm.drafter, arm.active = MTPDrafter(), True
            # a head that has never paid here is not kept up to date (its cache costs an MTP pass
            # per FLUSH_ROWS tokens); it is tried again, from a fresh prompt, now and then
            hopeless = arm.passes >= 2 and self._best(arm, k_max)[0] < 0.8
            limit = memory.get("mtp_skip_limit", 4)
            if hopeless and memory.get("mtp_skipped", 0) < limit:
                memory["mtp_skipped"] = memory.get("mtp_skipped", 0) + 1
                arm.active = False
                self.needs_hidden = False
            else:
                # retried after `limit` skipped generations; a head that still does not pay waits
                # twice as long next time (each retry costs its prompt pass and cache following)
                memory["mtp_skip_limit"] = min(64, 2 * limit) if hopeless else 4
                memory["mtp_skipped"] = 0
                arm.drafter.begin(eng, prompt, hidden)
            memory["mtp"] = arm
            self.arms.append(arm)
        arm = memory.get("ngram") or _Arm(None, AutoDraft(cm.for_drafter(0.0), k_max, prior=0.5))
        arm.drafter = NgramDrafter()
        for n in range(1, arm.drafter.max_ngram_size + 1):
            arm.by_order.setdefault(n, AutoDraft(cm.for_drafter(0.0), k_max, prior=0.5))
        memory["ngram"] = arm
        self.arms.append(arm)
        # the MTP arm starts each generation from a light prior (earlier generations worth
        # `carry` passes): its priced cost can flatter it (a cached c(2) = 0.96 at f16) and a
        # long memory of high acceptance kept it drafting at 0.84x (the bench's f16 auto fell to
        # 0.96x without this). N-grams keep their full memory: their shadow look-ups learn for
        # free, and a short memory kept them off Gemma's prose and chat prompts where they pay
        # (a probe: 1.05x with it, 1.35x without)
        for arm in self.arms:
            if isinstance(arm.drafter, MTPDrafter):
                arm.chooser.carry_over(self.carry)
        self.k_max_eff = k_max
        self.last = None
        self.observed = None
        self.t_last = None
        self.choices = []
        #: (position of its root token, proposal, its match length)
        self.shadow: tuple[int, list[int], int] | None = None
        self.last_order = 0         # the match length of the last n-gram proposal drafted
        self.n_pass = 0
        self.quiet_until = 0
        self.n_priced = 0           # passes whose choice was priced (the others were quiet)
        self.ngram_len = NGRAM_START

    def _score_shadow(self, context: list[int], pos: int) -> None:
        """Score a pending shadow proposal once the target has produced its length
        (or diverged from it): the accepted prefix it would have had."""
        root, toks, order = self.shadow
        made = context[root + 1:pos + 1]
        m = 0
        while m < len(made) and m < len(toks) and made[m] == toks[m]:
            m += 1
        if m == len(toks) or m < len(made):
            arm = next(a for a in self.arms if isinstance(a.drafter, NgramDrafter))
            arm.chooser.update(len(toks), m)
            arm.by_order[order].update(len(toks), m)
            self._ngram_outcome(len(toks), m)
            self.shadow = None

    def _best(self, arm: _Arm, k_cap: int, chooser: AutoDraft | None = None) -> tuple[float, int]:
        s, k = (chooser or arm.chooser).best(k_cap)
        return (s * arm.factor, k) if k else (0.0, 0)

    def _best_any_order(self, arm: _Arm, k_cap: int) -> float:
        """The best score an n-gram proposal of any match length could have."""
        return max(self._best(arm, k_cap, c)[0] for c in arm.by_order.values())

    def propose(self, eng, context, tok, pos, k, params, rng):
        if self.n_pass < self.quiet_until:
            # nothing can be chosen before a probe or a shadow look-up is due: the pricing
            # below would answer "none" again (on the default model at q4_0, 1 ms a token,
            # that answer cost 24 us a pass, and auto ran 0.91x plain where it never drafted)
            self.n_pass += 1
            for arm in self.arms:
                arm.chooser.since_draft += 1          # what update(0, 0) records
            self.t_last = None                        # this pass is not timed for the factors
            self.last = (None, 0, 0)
            self.choices.append(("none", 0))
            return Proposal()
        self.n_priced += 1
        now = time.perf_counter()
        self._observe(now)
        k_cap = min(k, self.k_max_eff)
        choice, choice_k, score = None, 0, 1.0 + self.min_gain
        ngram_prop = None
        #: the next pass index at which this answer can change (quiet until then)
        resume = self.n_pass + 1 + QUIET_MAX
        for arm in self.arms:
            if not arm.active:
                continue
            probe_due = arm.passes < 2 or arm.chooser.since_draft >= 4 * arm.chooser.probe_every
            if isinstance(arm.drafter, NgramDrafter):
                if self.shadow is not None:
                    self._score_shadow(context, pos)
                # looking the n-grams up costs every pass (0.15 ms of SmolLM2's 4.7 ms): skip it when
                # even the longest proposal could not win, unless a probe or a shadow score is due
                shadow_due = self.shadow is None and self.n_pass % SHADOW_EVERY == 0 and params.greedy
                if not probe_due and not shadow_due and self._best_any_order(arm, k_cap) <= score:
                    probe_in = 4 * arm.chooser.probe_every - arm.chooser.since_draft
                    if self.shadow is not None:      # scored once the target has produced its length
                        shadow_in = self.shadow[0] + len(self.shadow[1]) - pos
                    else:
                        shadow_in = SHADOW_EVERY - self.n_pass % SHADOW_EVERY if params.greedy else QUIET_MAX
                    resume = min(resume, self.n_pass + max(1, min(probe_in, shadow_in)))
                    continue
                resume = self.n_pass + 1
                ngram_prop = arm.drafter.propose(eng, context, tok, pos, k_cap, params, rng)
                if not ngram_prop.tokens:
                    continue
                order = arm.drafter.order
                if shadow_due:
                    self.shadow = (pos, list(ngram_prop.tokens), order)
                cap = min(len(ngram_prop.tokens), self.ngram_len)
                s, kk = self._best(arm, cap, arm.by_order[order])
            else:
                cap = k_cap
                s = self._best(arm, cap)[0]
                # (a probe is only forced within reach of paying: a head whose probe was due but
                # scored <= 0.85 was neither tried nor let go, and was followed for ever)
                if not (arm.passes < 2 or (probe_due and s > 0.85)) and s <= score:
                    # a head that cannot win this pass will not win a later one of this generation
                    # either (its estimate moves only when it drafts, or a probe is due), and keeping
                    # it up to date costs a hidden-row copy and its catch-up every pass and an MTP
                    # pass per FLUSH_ROWS tokens: on the default model at q4_0 (1 ms a token) a head
                    # scored 0.83 was followed and never chosen, and auto ran 0.95x plain on a prompt
                    # where it drafted nothing (50 us a token). Stop following it; the next
                    # generation tries it again once a probe is due (or begin() skips it).
                    arm.active = False
                    self.needs_hidden = False     # the target's hidden rows feed that head only
                    continue
                s, kk = self._best(arm, cap)
            resume = self.n_pass + 1
            # a candidate that is never tried never learns: try it first, then probe it now and
            # then while its estimate is within reach of paying
            if arm.passes < 2 or (probe_due and s > 0.85):
                s, kk = max(s, score + 1e-9), max(kk, 1)
            if s > score:
                choice, choice_k, score = arm, kk, s
        self.n_pass += 1
        for arm in self.arms:
            if arm is not choice:
                arm.chooser.update(0, 0)
        if choice is not None and isinstance(choice.drafter, NgramDrafter):
            self.shadow = None          # drafted for real: its own update counts
            self.last_order = order
        if choice is None:
            self.quiet_until = resume
            self.last = (None, 0, 0)
            self.choices.append(("none", 0))
            return Proposal()
        choice.passes += 1
        if isinstance(choice.drafter, NgramDrafter):
            prop = Proposal(ngram_prop.tokens[:choice_k], None)
        else:
            prop = choice.drafter.propose(eng, context, tok, pos, choice_k, params, rng)
        self.last = (choice, choice_k, len(prop.tokens))
        self.choices.append((choice.drafter.name, choice_k))
        return prop

    def accept(self, eng, tok, pos, proposal, n_accepted, hidden):
        arm, k, drafted = self.last or (None, 0, 0)
        self.observed, self.last = self.last, None   # this pass, for the timing at the next propose
        for a in self.arms:
            if isinstance(a.drafter, MTPDrafter) and a.active:
                if a is arm:
                    a.drafter.accept(eng, tok, pos, proposal, n_accepted, hidden)
                else:
                    a.drafter.follow(eng, tok, pos, proposal.tokens[:n_accepted], hidden)
        if arm is not None:
            arm.chooser.update(drafted, n_accepted)
            if isinstance(arm.drafter, NgramDrafter):
                arm.by_order[self.last_order].update(drafted, n_accepted)
                self._ngram_outcome(drafted, n_accepted)
        self.produced = n_accepted + 1

    def _ngram_outcome(self, drafted: int, accepted: int) -> None:
        """Slow start for n-gram drafts: each generation drafts at most NGRAM_START
        tokens until a proposal is accepted whole, which doubles the limit; a rejected
        one sets it back. Whether a lookup continues the way the model does depends on
        the text more than on what other prompts taught (the default model at q4_0 tried
        8-token proposals first on prose where they failed, 1.5 wasted passes each)."""
        if accepted == drafted:
            self.ngram_len = min(self.k_max_eff, 2 * self.ngram_len)
        elif accepted == 0:
            self.ngram_len = NGRAM_START

    def _observe(self, now: float) -> None:
        """Scale the chosen arm's estimate by its realized speed (the whole last
        pass, loop included) against plain decoding's realized one-token pass
        (the passes where nothing was drafted, loop included, kept on the engine).
        Comparing with the cost model's pure compute time instead made every
        drafter look slower by the loop's own share, and on the default model
        (1.2 ms a token) that sank the n-gram arm's factor to 0.65, so it was never
        chosen again although it ran 1.20x plain. A factor nobody observes drifts
        back toward 1, so a drafter is not written off for good by a bad stretch."""
        obs = getattr(self, "observed", None)
        mem = self.memory
        if obs is not None and self.t_last is not None:
            arm, k, drafted = obs
            dt = max(1e-9, now - self.t_last)
            if arm is None or not drafted:
                if getattr(self, "produced", 1) == 1:
                    mem["plain_pass_s"] = dt if "plain_pass_s" not in mem else 0.9 * mem["plain_pass_s"] + 0.1 * dt
            elif "plain_pass_s" in mem:
                realized = getattr(self, "produced", 1) * mem["plain_pass_s"] / dt
                # (last_order is still the observed pass's: propose sets it after this call)
                chooser = arm.by_order.get(self.last_order) if isinstance(arm.drafter, NgramDrafter) else None
                predicted = (chooser or arm.chooser).score(k) or 1.0
                arm.factor = (1 - self.ema) * arm.factor + self.ema * min(2.0, realized / predicted)
        for a in self.arms:
            if a is not (obs[0] if obs else None):
                a.factor += (1.0 - a.factor) * 0.002
        self.t_last = now
