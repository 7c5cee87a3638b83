"""``draft="auto"``: pick the draft length that pays on this machine.

The target's batch-cost curve c(n) = time(n-token pass) / time(1-token pass)
is measured once per model file and machine settings (cached on disk); the
draft cost d is the time of one drafter step in the same unit. While
generating, the acceptance at each draft position is tracked (conditional on
the previous positions being accepted, with a decaying memory). For a draft
length K the expected tokens per pass are

    E(K) = 1 + sum_{i=1..K} prod_{j<=i} alpha_j

and a pass costs c(K+1) + K*d, so the speed relative to plain decoding is
E(K) / (c(K+1) + K*d); K = 0 (plain decoding) scores exactly 1. The chooser
takes the best K; while it sits at 0 it probes K = 1 now and then so that it
notices when drafting starts to pay.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..upstream import cache_dir, installed_runtime
from .engine import RuntimeErrorLlama


@dataclass
class CostModel:
    c: list[float]        # c[n-1] = cost of an n-token target pass, in 1-token passes
    t1_s: float           # seconds of a 1-token target pass
    draft: float          # one drafter step, in 1-token target passes
    branches: int = 1     # rows per draft depth in the verify batch (trees: one per leaf)

    def for_drafter(self, draft: float, branches: int = 1) -> "CostModel":
        """The same target curve for a drafter whose step costs ``draft`` and
        whose trees put ``branches`` rows per depth into the verify pass."""
        return CostModel(list(self.c), self.t1_s, draft, branches)

    def c_at(self, n: int) -> float:
        """c(n), extrapolated linearly from the last two measured points past them."""
        if n <= len(self.c):
            return self.c[max(1, n) - 1]
        slope = self.c[-1] - self.c[-2] if len(self.c) > 1 else 1.0
        return self.c[-1] + slope * (n - len(self.c))

    def pass_cost(self, k: int) -> float:
        return self.c_at(1 + k * self.branches) + k * self.draft

    def speedup_bound(self, tau: float, k: int) -> float:
        """The speed bound of a drafter with acceptance tau at draft length k."""
        return tau / self.pass_cost(k)


def _median_time(fn, repeats: int) -> float:
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return float(np.median(ts))


def measure_cost_model(eng, n_max: int = 9, repeats: int = 5, context: int = 64) -> CostModel:
    """Time target passes of 1..n_max tokens after a ``context``-token prefix,
    and one MTP drafting step when the model has an MTP head. The sizes are
    timed interleaved (1, 2, ..., n_max, then again), so that a slow stretch of
    the machine weighs on every size alike rather than bending the curve.
    Each timed pass follows an untimed one of its size, so it runs a kept graph.
    The passes are greedy passes (argmax in the graph, see ``Engine.greedy_target``),
    as greedy decoding runs them. The curve is made non-decreasing: the default
    model at f16 once measured c(2) = 0.96, and auto then took a second row for free."""
    with eng.greedy_passes():
        return _measure(eng, n_max, repeats, context)


def _measure(eng, n_max: int, repeats: int, context: int) -> CostModel:
    prefix = [int(t) % eng.n_vocab for t in range(1, context + 1)]
    rows = eng.opts.n_batch          # a context deeper than one batch (the bench's --depth) goes in chunks

    def reset():
        eng.clear()
        for at in range(0, context, rows):
            chunk = prefix[at:at + rows]
            eng.target_decode(chunk, at, [False] * (len(chunk) - 1) + [at + len(chunk) == context], prefill=True)

    def run(n) -> bool:
        eng.target_decode(prefix[:n], context, [True] * n)
        try:
            eng.target_truncate(context)
            return True
        except RuntimeErrorLlama:   # a recurrent state rolls back only draft_max + 1 rows: the
            return False            # caller starts again from the prefix, untimed

    reset()

    for n in range(1, n_max + 1):
        run(n) or reset()  # warm-up (graph allocation for this size)
    samples: list[list[float]] = [[] for _ in range(n_max)]
    for _ in range(repeats):
        for n in range(1, n_max + 1):
            # a pass of this size first, untimed: the timed one then runs its graph again, as
            # a decode loop does (patch 0014 keeps the graphs of eight batch sizes). Timing the
            # first pass after another size timed a graph rebuild with every size (+0.3-0.6 ms
            # on SmolLM2-135M's 5.6 ms pass): t1 came out ~10% slow and c(n) too flat
            run(n) or reset()
            t = time.perf_counter()
            ok = run(n)
            samples[n - 1].append(time.perf_counter() - t)
            if not ok:
                reset()
    times = [float(np.median(x)) for x in samples]
    draft = 0.0
    if eng.has_mtp:
        h = np.zeros((context, eng.n_embd), dtype=np.float32)
        for at in range(0, context, rows):
            eng.mtp_decode(prefix[at:at + rows], h[at:at + rows], at, [False] * len(prefix[at:at + rows]))

        def step():
            eng.mtp_decode([prefix[0]], h[:1], context, [True])
            eng.mtp_truncate(context)

        step()
        draft = _median_time(step, repeats) / times[0]
    eng.clear()
    return CostModel(list(np.maximum.accumulate([t / times[0] for t in times])), times[0], draft)


def _one_token_s(eng, repeats: int = 5, context: int = 16) -> float:
    """The median time of a 1-token (greedy) target pass now (leaves the cache cleared)."""
    prefix = [int(t) % eng.n_vocab for t in range(1, context + 1)]

    def run():
        eng.target_decode(prefix[:1], context, [True])
        eng.target_truncate(context)

    with eng.greedy_passes(mtp=False):
        eng.clear()
        eng.target_decode(prefix, 0, [False] * (context - 1) + [True], prefill=True)
        run()
        t = _median_time(run, repeats)
        eng.clear()
    return t


#: a cached cost model is re-measured when a 1-token pass now takes this much
#: longer or shorter than when it was measured: a cached curve measured on a busy
#: machine (or from a thread that ran llama.cpp 6x slower, see serve/worker.py) had
#: c(2..9) = 1.2-1.5 on SmolLM2 where it is 1.7-4.0, and auto then drafted at a loss
RECHECK_RATIO = 1.5


@functools.lru_cache(maxsize=1)
def _runtime_key() -> str | None:
    """The loaded runtime's build key (its libraries cannot change within a process)."""
    return installed_runtime().build.get("key")


def _cost_key(eng, n_max: int) -> str:
    st = Path(eng.path).stat()
    o = eng.opts
    # the runtime build too: a patch can change the costs (0012 made the draft-vocabulary MTP step
    # ~1.5x cheaper), and a curve cached before it priced drafting at the old step cost
    ident = [str(Path(eng.path).resolve()), st.st_size, int(st.st_mtime), o.n_threads or os.cpu_count(),
             o.n_gpu_layers, o.kv_type, o.flash_attn, platform.machine(), platform.node(), n_max, eng.has_mtp,
             _runtime_key()]
    return hashlib.sha256(json.dumps(ident).encode()).hexdigest()[:16]


def cost_model(eng, n_max: int = 9, refresh: bool = False) -> CostModel:
    """The cached cost model of this model file on this machine (measured on first use)."""
    path = cache_dir() / "cost-models.json"
    key = _cost_key(eng, n_max)
    table = {}
    if path.exists():
        try:
            table = json.loads(path.read_text())
        except json.JSONDecodeError:
            table = {}
    if key in table and not refresh:
        cm = CostModel(**table[key])
        if getattr(eng, "_cost_checked", None) == key:
            return cm
        # once per engine: is the cached curve still this machine's?
        now = _one_token_s(eng)
        eng._cost_checked = key
        if 1 / RECHECK_RATIO <= now / cm.t1_s <= RECHECK_RATIO:
            return cm
    cm = measure_cost_model(eng, n_max)
    eng._cost_checked = key
    table[key] = asdict(cm)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(table, indent=1))
    os.replace(tmp, path)
    return cm


class AutoDraft:
    """Chooses the draft length before each pass from the cost model and the
    acceptance seen so far. The estimates are short Python lists, not numpy arrays:
    auto prices and updates every pass right after the target pass, when each numpy
    call on an 8-element array costs several microseconds (the caches are cold)."""

    def __init__(self, cost: CostModel, k_max: int, prior: float = 0.6, prior_weight: float = 2.0,
                 decay: float = 0.97, probe_every: int = 32):
        self.cost = cost
        self.k_max = k_max
        self.decay = decay
        self.probe_every = probe_every
        self.tried = [float(prior_weight)] * k_max
        self.kept = [float(prior * prior_weight)] * k_max
        self.since_draft = 0
        self.history: list[int] = []

        self._costs = [cost.pass_cost(k) for k in range(1, k_max + 1)]
        self._scores: list[float] | None = None

    def carry_over(self, weight: float) -> None:
        """Keep what earlier generations taught as a prior of at most ``weight`` passes per
        draft position, so that this generation's own passes outweigh it within a few:
        acceptance is a property of the text as much as of the drafter (n-grams pooled
        over the bench's prompts predicted 0.35 on a prose prompt where they were right
        once in six, and auto kept drafting 8 tokens there at 0.86x plain)."""
        scale = [min(1.0, weight / max(t, 1e-9)) for t in self.tried]
        self.tried = [t * s for t, s in zip(self.tried, scale)]
        self.kept = [k * s for k, s in zip(self.kept, scale)]
        self._scores = None

    def alphas(self) -> np.ndarray:
        return np.array(self.kept) / np.array(self.tried)

    def scores(self) -> list[float]:
        """Predicted speed over plain decoding at K = 1 .. k_max (kept until the next
        drafted pass changes the estimates: auto asks every pass)."""
        if self._scores is None:
            e, p, out = 1.0, 1.0, []
            for kept, tried, cost in zip(self.kept, self.tried, self._costs):
                p *= kept / tried
                e += p
                out.append(e / cost)
            self._scores = out
        return self._scores

    def best(self, k_cap: int) -> tuple[float, int]:
        """(score, K) of the best K in 1 .. k_cap (K = 0 scores 1; the shortest among equals)."""
        if k_cap <= 0:
            return 1.0, 0
        sc = self.scores()
        i = max(range(min(k_cap, len(sc))), key=sc.__getitem__)
        return sc[i], i + 1

    def expected_tokens(self, k: int) -> float:
        e, p = 1.0, 1.0
        for kept, tried in zip(self.kept[:k], self.tried[:k]):
            p *= kept / tried
            e += p
        return e

    def score(self, k: int) -> float:
        return self.expected_tokens(k) / self.cost.pass_cost(k) if k else 1.0

    def choose(self) -> int:
        score, best = self.best(self.k_max)
        if score <= 1.0:
            best = 1 if self.since_draft >= self.probe_every else 0
        self.history.append(best)
        return best

    def update(self, drafted: int, accepted: int) -> None:
        if drafted == 0:
            self.since_draft += 1
            return
        self.since_draft = 0
        self._scores = None
        d = self.decay
        # position i was tried iff positions 1..i-1 were accepted
        n_tried = min(drafted, accepted + 1)
        self.tried = [t * d + (i < n_tried) for i, t in enumerate(self.tried)]
        self.kept = [k * d + (i < accepted) for i, k in enumerate(self.kept)]
