"""``gguf-mtp check MODEL.gguf``: is greedy speculative decoding exactly plain
decoding on this file, on this backend?

For every prompt the reference is plain one-token-at-a-time greedy decoding in
its own default context (what ``gguf-mtp generate --drafter none`` runs),
recording the top-2 logit margin at every step. Then every drafter the file
supports runs at every draft length in one speculative context, and its
tokens are compared with the reference: exact, or the first divergent token,
with the plain margin there (a divergence at a margin of 1e-3 is a rounding
difference; at 5 it is a bug). Where the file has native MTP layers and
llama.cpp's own ``llama-speculative-simple`` is built
(``python -m gguf_mtp.bench.upstream_mtp build``), upstream draft-mtp is
checked the same way (on its printed token pieces).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

HELDOUT_FILE = Path(__file__).resolve().parents[1] / "data" / "heldout_prompts.json"

#: drafters ``check`` runs by default, where the file supports them
DEFAULT_DRAFTERS = ("mtp", "eagle", "medusa", "ngram", "ngram-tree")


def heldout_prompts(n: int | None = None) -> list[str]:
    """The built-in held-out prompts (C, JSON, SQL, Markdown, shell, Q&A, prose, Python)."""
    items = json.loads(HELDOUT_FILE.read_text())["prompts"]
    return [p["text"] for p in items][:n]


def load_prompts(path: str | Path) -> list[str]:
    """A prompt file: ``.jsonl`` (one JSON string, or an object with "text"/"prompt", per line),
    ``.json`` (a list of strings, or gguf-mtp's {"prompts": [{"text": ...}]}), or text
    (prompts separated by blank lines)."""
    p = Path(path)
    text = p.read_text()
    if p.suffix == ".jsonl":
        out = []
        for line in text.splitlines():
            if line.strip():
                obj = json.loads(line)
                out.append(obj if isinstance(obj, str) else obj.get("text") or obj["prompt"])
        return out
    if p.suffix == ".json":
        obj = json.loads(text)
        items = obj["prompts"] if isinstance(obj, dict) else obj
        return [i if isinstance(i, str) else i["text"] for i in items]
    return [b.strip("\n") for b in text.split("\n\n") if b.strip()]


@dataclass
class Divergence:
    prompt: int        # prompt index
    token: int         # index of the first generated token that differs
    plain: int | str   # plain decoding's token there (a piece for upstream)
    spec: int | str
    margin: float      # plain decoding's top-2 logit margin at that step


@dataclass
class CheckRow:
    drafter: str
    draft: int
    prompts: int = 0
    exact: int = 0
    tokens: int = 0
    tau: float = 0.0
    divergences: list[Divergence] = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.exact == self.prompts


@dataclass
class PlainRun:
    tokens: list[int]
    margins: list[float]   # top-2 logit margin before each generated token


def plain_reference(eng, prompt_tokens: list[int], n: int) -> PlainRun:
    """Plain greedy decoding, one token per pass, recording the top-2 margins
    (the same computation as ``generate(..., drafter="none")``)."""
    from ..runtime.loop import _prefill

    eng.clear()
    logits, _, _ = _prefill(eng, prompt_tokens, False)
    toks, margins = [], []
    pos = len(prompt_tokens)
    while True:
        top2 = np.partition(logits, -2)[-2:]
        margins.append(float(top2[1] - top2[0]))
        t = int(np.argmax(logits))
        toks.append(t)
        if len(toks) >= n or eng.is_eog(t):
            break
        eng.target_decode([t], pos, [True])
        logits = eng.target_logits(0)
        pos += 1
    return PlainRun(toks, margins)


def _first_diff(a, b) -> int | None:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def applicable(eng, names) -> list[str]:
    """The drafters of ``names`` the loaded file supports."""
    out = []
    for name in names:
        if name in ("mtp", "eagle") and not eng.n_nextn:
            continue
        if name == "eagle" and eng.n_nextn > 1:
            continue
        if name == "medusa" and not eng.n_medusa:
            continue
        out.append(name)
    return out


@dataclass
class CheckReport:
    path: str
    exact_mode: bool
    n_tokens: int
    n_prompts: int
    rows: list[CheckRow]

    @property
    def ok(self) -> bool:
        """Every row of gguf-mtp's own drafters exact. llama.cpp's draft-mtp rows
        (its pristine build, whose kernels are not ours) are reported, not held to it."""
        return all(r.ok for r in self.rows if not r.drafter.startswith("upstream"))

    def as_dict(self) -> dict:
        d = asdict(self)
        d["ok"] = self.ok
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "CheckReport":
        rows = [CheckRow(**{**r, "divergences": [Divergence(**x) for x in r.get("divergences", [])]})
                for r in d["rows"]]
        return cls(d["path"], d["exact_mode"], d["n_tokens"], d["n_prompts"], rows)


def run_check(path, prompts: list[str], *, n_tokens: int = 256, drafts=(1, 3, 8), drafters=DEFAULT_DRAFTERS,
              exact: bool = True, threads: int | None = None, n_gpu_layers: int | None = None,
              upstream: bool = True, progress=None) -> CheckReport:
    from ..runtime import Engine, RuntimeOptions, generate
    from ..runtime.drafters import configure_for

    def opts(**kw):
        o = RuntimeOptions(n_threads=threads, **kw)
        if n_gpu_layers is not None:
            o.n_gpu_layers = n_gpu_layers
        return o

    rows: list[CheckRow] = []
    with Engine(path, opts(load_mtp=False)) as eng:
        toks = [eng.tokenize(p) for p in prompts]
        plain = []
        for i, t in enumerate(toks):
            plain.append(plain_reference(eng, t, n_tokens))
            if progress:
                progress(f"plain {i + 1}/{len(toks)}")
    # one speculative context for every drafter: the union of what they need
    spec_opts = opts(exact=exact, draft_max=max(drafts), load_mtp=True)
    names = list(drafters)
    spec_opts = configure_for(names, spec_opts)
    spec_opts.load_mtp = True
    with Engine(path, spec_opts) as eng:
        for name in applicable(eng, names):
            for k in drafts:
                row = CheckRow(name, k, prompts=len(prompts))
                passes = produced = 0
                try:
                    for i, t in enumerate(toks):
                        g = generate(eng, t, n_tokens, drafter=name, draft=k)
                        passes += g.stats.target_passes
                        produced += g.stats.n_generated - 1
                        row.tokens += len(g.tokens)
                        j = _first_diff(plain[i].tokens, g.tokens)
                        if j is None:
                            row.exact += 1
                        else:
                            m = plain[i].margins[j] if j < len(plain[i].margins) else float("nan")
                            row.divergences.append(Divergence(
                                i, j, plain[i].tokens[j] if j < len(plain[i].tokens) else -1,
                                g.tokens[j] if j < len(g.tokens) else -1, m))
                except (ValueError, RuntimeError) as e:
                    row.error = str(e)
                row.tau = produced / passes if passes else 0.0
                rows.append(row)
                if progress:
                    progress(f"{name} K={k}: {row.exact}/{row.prompts} exact")
        has_mtp = bool(eng.n_nextn)
        if upstream and has_mtp:
            rows += _check_upstream(path, eng, prompts, toks, plain, n_tokens, drafts, threads, n_gpu_layers,
                                    progress)
    return CheckReport(str(path), exact, n_tokens, len(prompts), rows)


def _check_upstream(path, eng, prompts, toks, plain, n_tokens, drafts, threads, n_gpu_layers, progress):
    from . import upstream_mtp as um

    tool = um.tool_path()
    if tool is None:
        return [CheckRow("upstream draft-mtp", 0, prompts=len(prompts),
                         error="llama-speculative-simple is not built (python -m gguf_mtp.bench.upstream_mtp build)")]
    rows = []
    for k in drafts:
        row = CheckRow("upstream draft-mtp", k, prompts=len(prompts))
        try:
            for i, p in enumerate(prompts):
                run = um.run_draft_mtp(tool, path, p, n_tokens, k, threads, n_ctx=max(1024, len(toks[i]) + n_tokens + 16),
                                       n_gpu_layers=n_gpu_layers)
                pieces = [eng.token_bytes(t).decode(errors="replace") for t in plain[i].tokens]
                theirs = run.tokens[:len(pieces)]
                row.tokens += len(theirs)
                j = _first_diff(pieces, theirs)
                if j is None:
                    row.exact += 1
                else:
                    row.divergences.append(Divergence(i, j, pieces[j] if j < len(pieces) else "",
                                                      theirs[j] if j < len(theirs) else "",
                                                      plain[i].margins[j] if j < len(plain[i].margins) else float("nan")))
                row.tau = run.tau or 0.0
        except (um.UpstreamRunError, OSError, ValueError) as e:
            row.error = str(e)
        rows.append(row)
        if progress:
            progress(f"upstream draft-mtp K={k}: {row.exact}/{row.prompts} exact")
    return rows


def format_table(rep: CheckReport) -> str:
    head = ["drafter", "K", "exact", "tau", "first divergence (prompt:token, plain margin)"]
    lines = [head]
    for r in rep.rows:
        if r.error:
            detail = "error: " + r.error.splitlines()[0][:100]
        else:
            detail = ", ".join(f"{d.prompt}:{d.token} ({d.margin:.3g})" for d in r.divergences[:6]) or "-"
            if len(r.divergences) > 6:
                detail += f", +{len(r.divergences) - 6} more"
        lines.append([r.drafter, str(r.draft), f"{r.exact}/{r.prompts}", f"{r.tau:.2f}", detail])
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    out = ["  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines]
    theirs = [r for r in rep.rows if r.drafter.startswith("upstream")]
    verdict = "all exact" if rep.ok else "DIVERGED"
    if theirs:      # llama.cpp's own draft-mtp (its pristine build): reported, not gguf-mtp's to make exact
        verdict += (f"; llama.cpp draft-mtp {'exact' if all(r.ok for r in theirs) else 'diverged'} "
                    f"({sum(r.exact for r in theirs)}/{sum(r.prompts for r in theirs)} prompt runs)")
    out.append(f"{rep.n_prompts} prompts x {rep.n_tokens} tokens, exact mode {'on' if rep.exact_mode else 'off'}: "
               f"{verdict}")
    return "\n".join(out)
