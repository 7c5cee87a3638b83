"""gguf-mtp serve measured through the official openai client.

    python benchmarks/serve_bench.py --model smollm2 [--repeats 5]
    python benchmarks/serve_bench.py --model default

1. **Time to first token on the 5th turn of a chat**, with the prompt cache
   (``cache_prompt``: the server reuses the 4th turn's prompt) and without,
   interleaved (with, without, with, ...) over --repeats conversations: the
   client's wall time to the first streamed content chunk, and the server's
   own ``timings`` (prompt_ms, cache_n, prompt_n). Turns 1-4 always run with
   the cache on, so turn 5 finds turn 4's prompt there; all turns are greedy,
   so every repeat sends the same conversation.
2. **Decode speed through the server against** ``generate`` in this process
   (the same file, drafter and draft length): --prompts greedy completions of
   --tokens tokens, interleaved (server, generate, server, ...) per repeat;
   medians and IQRs of tokens/s as the server reports it (``timings``) and as
   the client sees it (completion tokens / wall time, HTTP and JSON included).
   Each server text is compared with plain decoding (``lossless``).

Writes results/serve_<model>.json and prints a Markdown summary.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

SYSTEM = "You are a helpful assistant. Answer briefly."
TURNS = ["Write a Python function that checks whether a number is prime.",
         "Now make it faster for large numbers.",
         "Add a docstring and type hints.",
         "Write three unit tests for it.",
         "Explain in two sentences why the faster version is correct."]


def iqr(xs):
    if len(xs) < 2:
        return [xs[0], xs[0]] if xs else [0.0, 0.0]
    q = statistics.quantiles(xs, n=4)
    return [q[0], q[2]]


def summary(xs):
    return {"median": statistics.median(xs), "iqr": iqr(xs), "n": len(xs)}


def model_path(name: str) -> Path:
    if name == "default":
        from gguf_mtp.models.default import default_gguf

        return default_gguf("q8_0")
    from gguf_mtp.models.fetch import MODELS

    return MODELS[name].path()


def ttft(client, model_id, max_tokens, repeats):
    """Turn 5's time to first token, cache on and off, interleaved."""
    res = {"with_cache": [], "without_cache": []}
    convo = None
    for r in range(repeats):
        for mode in ("with_cache", "without_cache"):
            msgs = [{"role": "system", "content": SYSTEM}]
            for turn, text in enumerate(TURNS):
                msgs.append({"role": "user", "content": text})
                last = turn == len(TURNS) - 1
                cache = mode == "with_cache" or not last
                t0 = time.perf_counter()
                first = None
                content, final = [], None
                for chunk in client.chat.completions.create(model=model_id, messages=msgs, max_tokens=max_tokens,
                                                            temperature=0, stream=True,
                                                            extra_body={"cache_prompt": cache}):
                    if chunk.choices and chunk.choices[0].delta.content and first is None:
                        first = time.perf_counter() - t0
                    if chunk.choices and chunk.choices[0].delta.content:
                        content.append(chunk.choices[0].delta.content)
                    final = chunk
                msgs.append({"role": "assistant", "content": "".join(content)})
                if last:
                    t = final.model_extra["timings"]
                    res[mode].append({"ttft_s": first, "prompt_ms": t["prompt_ms"], "cache_n": t["cache_n"],
                                      "prompt_n": t["prompt_n"], "prompt_tokens": final.usage.prompt_tokens})
            if convo is None:
                convo = msgs
            else:
                assert [m["content"] for m in msgs] == [m["content"] for m in convo], "conversation changed"
        print(f"  repeat {r}: ttft with cache {res['with_cache'][-1]['ttft_s']*1e3:.1f} ms "
              f"(cache_n {res['with_cache'][-1]['cache_n']}), without {res['without_cache'][-1]['ttft_s']*1e3:.1f} ms",
              flush=True)
    out = {}
    for mode, rows in res.items():
        out[mode] = {"ttft_ms": summary([1e3 * x["ttft_s"] for x in rows]),
                     "server_prompt_ms": summary([x["prompt_ms"] for x in rows]),
                     "cache_n": rows[0]["cache_n"], "prompt_n": rows[0]["prompt_n"],
                     "prompt_tokens": rows[0]["prompt_tokens"]}
    return out


def speed(client, model_id, path, prompts, n_tokens, repeats, threads, drafter, draft):
    from gguf_mtp.runtime import Engine, RuntimeOptions, generate, make_drafter

    srv_rep, srv_wall, gen_tps, plain_tps, lossless = [], [], [], [], True
    dr = make_drafter(drafter)
    with Engine(path, dr.configure(RuntimeOptions(n_threads=threads, n_ctx=2048, draft_max=8))) as eng:
        plain = {p: generate(eng, p, n_tokens, drafter="none") for p in prompts}
        for r in range(repeats):
            for p in prompts:
                t0 = time.perf_counter()
                res = client.completions.create(model=model_id, prompt=p, max_tokens=n_tokens, temperature=0,
                                                extra_body={"drafter": drafter, "draft": draft})
                wall = time.perf_counter() - t0
                lossless &= res.choices[0].text == plain[p].text
                srv_rep.append(res.model_extra["timings"]["predicted_per_second"])
                srv_wall.append(res.usage.completion_tokens / wall)
                g = generate(eng, p, n_tokens, drafter=dr, draft=draft)
                gen_tps.append(g.stats.tokens_per_s)
                q = generate(eng, p, n_tokens, drafter="none")
                plain_tps.append(q.stats.tokens_per_s)
            print(f"  repeat {r}: server {statistics.median(srv_rep):.1f} tok/s (client wall "
                  f"{statistics.median(srv_wall):.1f}), generate {statistics.median(gen_tps):.1f}, plain "
                  f"{statistics.median(plain_tps):.1f}", flush=True)
    return {"server_reported_tok_s": summary(srv_rep), "server_client_wall_tok_s": summary(srv_wall),
            "generate_tok_s": summary(gen_tps), "generate_plain_tok_s": summary(plain_tps), "lossless": lossless}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2", help="default | smollm2 | gemma3")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--turn-tokens", type=int, default=96, help="reply tokens per chat turn")
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--drafter", default="auto")
    ap.add_argument("--draft", default="auto")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    import openai

    from gguf_mtp.bench.prompt_sets import load_sets
    from gguf_mtp.serve.launch import ServerProcess

    draft = a.draft if a.draft == "auto" else int(a.draft)
    path = model_path(a.model)
    sets = load_sets()
    prompts = (sets["code"] + sets["prose"])[:a.prompts]
    res = {"model": path.name, "settings": vars(a)}
    with ServerProcess([path, "-t", str(a.threads), "--n-ctx", "2048", "--drafter", a.drafter,
                        "--draft", str(a.draft)]) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=600)
        model_id = client.models.list().data[0].id
        print("time to first token, 5th chat turn:", flush=True)
        res["ttft_turn5"] = ttft(client, model_id, a.turn_tokens, a.repeats)
        print("decode speed:", flush=True)
        res["speed"] = speed(client, model_id, path, prompts, a.tokens, a.repeats, a.threads, a.drafter, draft)
    out = Path(a.out) if a.out else HERE / "results" / f"serve_{a.model}.json"
    out.write_text(json.dumps(res, indent=2) + "\n")
    w, wo = res["ttft_turn5"]["with_cache"], res["ttft_turn5"]["without_cache"]
    s = res["speed"]
    f = lambda d: f"{d['median']:.1f} [{d['iqr'][0]:.1f}–{d['iqr'][1]:.1f}]"  # noqa: E731
    print(f"\n| {path.name} | time to first token, turn 5 (ms) | server prompt ms | cached / prefilled tokens |")
    print("|---|---|---|---|")
    print(f"| prompt cache on | {f(w['ttft_ms'])} | {f(w['server_prompt_ms'])} | {w['cache_n']} / {w['prompt_n']} |")
    print(f"| prompt cache off | {f(wo['ttft_ms'])} | {f(wo['server_prompt_ms'])} | {wo['cache_n']} / "
          f"{wo['prompt_n']} |")
    print(f"\n| decode tok/s ({a.drafter}, draft {a.draft}) | median [IQR] |\n|---|---|")
    print(f"| server, its timings | {f(s['server_reported_tok_s'])} |")
    print(f"| server, client wall time (HTTP + JSON included) | {f(s['server_client_wall_tok_s'])} |")
    print(f"| generate() in process | {f(s['generate_tok_s'])} |")
    print(f"| generate(), plain decoding | {f(s['generate_plain_tok_s'])} |")
    print(f"\nserver text == plain decoding: {s['lossless']}; wrote {out}")


if __name__ == "__main__":
    main()
