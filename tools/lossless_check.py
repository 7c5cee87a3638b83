"""Greedy lossless check on any backend: every drafter's output must equal plain
decoding, token for token. Useful where the test suite does not run (a CUDA or
Metal build): no torch is imported, only the runtime.

    python tools/lossless_check.py                       # the default model, f32 and q8_0, CPU
    GGUF_MTP_N_GPU_LAYERS=99 python tools/lossless_check.py model.gguf
"""

from __future__ import annotations

import argparse
import sys

from gguf_mtp.runtime import Engine, RuntimeOptions, generate, make_drafter

PROMPTS = ["def fibonacci(n):\n", "import os\nimport sys\n\n\ndef main(argv):\n",
           "class Stack:\n    def __init__(self):\n", '"""Return the number of lines in a file."""\n',
           "    for i in range(len(items)):\n        if "]
DRAFTERS = (("mtp", (1, 2, 3, 5)), ("ngram", (4,)), ("ngram-tree", (4,)))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("gguf", nargs="*", help="models (default: the embedded default model, f32 and q8_0)")
    ap.add_argument("-n", type=int, default=64, help="tokens per prompt")
    ap.add_argument("-ngl", "--n-gpu-layers", type=int, default=None)
    a = ap.parse_args(argv)
    paths = a.gguf
    if not paths:
        from gguf_mtp.models.default import default_gguf

        paths = [str(default_gguf("f32")), str(default_gguf("q8_0"))]
    ok, skipped = True, []
    for path in paths:
        for name, drafts in DRAFTERS:
            dr = make_drafter(name)
            opts = dr.configure(RuntimeOptions())
            if a.n_gpu_layers is not None:
                opts.n_gpu_layers = a.n_gpu_layers
            with Engine(path, opts) as eng:
                if name == "mtp" and not eng.has_mtp:
                    skipped.append(f"{path}: mtp (the file has no MTP layer)")
                    continue
                acc = rej = 0
                for p in PROMPTS:
                    plain = generate(eng, p, a.n, drafter="none")
                    for k in drafts:
                        s = generate(eng, p, a.n, drafter=dr, draft=k)
                        if s.tokens != plain.tokens:
                            ok = False
                            print(f"MISMATCH {path} {name} K={k} prompt={p!r}")
                        acc += sum(s.stats.accepted)
                        rej += sum(d - x for d, x in zip(s.stats.drafted, s.stats.accepted))
            print(f"{path}: {name} K={list(drafts)}: accepted {acc}, rejected {rej}")
    for s in skipped:
        print(f"not checked: {s}")
    if not ok:
        print("NOT LOSSLESS")
    else:
        print("lossless: every speculative output checked equals plain decoding"
              + (f" ({len(skipped)} drafter/file pair(s) not checked, listed above)" if skipped else ""))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
