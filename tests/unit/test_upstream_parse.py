"""Upstream llama.cpp draft-mtp baseline (``gguf_mtp.bench.upstream_mtp``).

The parser and the tool's cache key, on captured output (no runtime needed);
tests/runtime/test_upstream_mtp.py runs the tool itself."""

from __future__ import annotations

import json

import pytest

from gguf_mtp.bench import upstream_mtp as um

# llama-speculative-simple --log-jsonl -lv 4 on the default q8_0 model, K=2,
# -n 11 (12 tokens asked); trimmed to the lines the parser reads and a few others.
SAMPLE = "\n".join(json.dumps(o) for o in [
    {"type": "log", "time": 1, "level": "info", "msg": "llama_model_loader: - kv   0: general.architecture str = qwen35\n"},
    {"type": "log", "time": 2, "level": "info", "msg": "common_speculative_init_result: creating MTP draft context against the target model 'm.gguf'\n"},
    {"type": "log", "time": 3, "level": "none", "msg": "\n\n"},
    {"type": "log", "time": 4, "level": "none", "msg": "def"},
    {"type": "log", "time": 5, "level": "none", "msg": " add"},
    {"type": "log", "time": 6, "level": "none", "msg": "(a"},
    {"type": "log", "time": 7, "level": "none", "msg": ","},
    {"type": "log", "time": 8, "level": "none", "msg": " b"},
    {"type": "log", "time": 9, "level": "none", "msg": "):"},
    *({"type": "log", "time": 10 + i, "level": "none", "msg": p} for i, p in enumerate(
        ["\n", "   ", " return", " a", " +", " b", "\n\n", "def", " sub", "(a", ",", " b", "):", "\n\n"])),  # a generated "\n\n" last
    {"type": "log", "time": 30, "level": "none", "msg": "\n\n"},
    {"type": "log", "time": 31, "level": "info", "msg": "encoded    6 tokens in    0.012 seconds, speed:  500.000 t/s\n"},
    {"type": "log", "time": 32, "level": "info", "msg": "decoded   14 tokens in    0.140 seconds, speed:  100.000 t/s\n"},
    {"type": "log", "time": 33, "level": "info", "msg": "\n"},
    {"type": "log", "time": 34, "level": "info", "msg": "n_draft   = 2\n"},
    {"type": "log", "time": 35, "level": "info", "msg": "n_predict = 14\n"},
    {"type": "log", "time": 36, "level": "info", "msg": "n_drafted = 12\n"},
    {"type": "log", "time": 37, "level": "info", "msg": "n_accept  = 8\n"},
    {"type": "log", "time": 38, "level": "info", "msg": "accept    = 66.667%\n"},
    {"type": "log", "time": 39, "level": "info", "msg": "spec print_stats: statistics        draft-mtp: #calls(b,g,a) =    1      6      6, "
                                                    "#gen drafts =      6, #acc drafts =     5, #gen tokens =     12, #acc tokens =     8, "
                                                    "dur(b,g,a) = 0.001, 20.000, 0.010 ms, #mean acc len = 2.33, #acc rate/pos = (0.833, 0.500)\n"},
    {"type": "log", "time": 40, "level": "info", "msg": "llama_perf_context_print:        eval time =       0.00 ms /     1 runs\n"},
    {"type": "log", "time": 41, "level": "none", "msg": "\n\n"},
])


# captured from the tool built by build_tool() (default q8_0 model, "def add(a, b):", K=2,
# 12 tokens asked: -n 11), trimmed to the lines the parser reads plus a record without a level
REAL_SAMPLE = "\n".join([
    '{"type":"fit_memory_breakdown","data":{"unit":"MiB","rows":[{"kind":"host","name":"Host","self":25,"model":20,"context":0,"compute":4}]}}',
    '{"type":"log","time":692901,"level":"info","msg":"llama_model_loader: - kv  16:                qwen35.nextn_predict_layers u32              = 1\\n"}',
    '{"type":"log","time":951524,"level":"info","msg":"common_speculative_init_result: creating MTP draft context against the target model \'default-q8_0.gguf\'\\n"}',
    '{"type":"log","time":962292,"level":"none","msg":"\\n\\n"}',
    '{"type":"log","time":962299,"level":"none","msg":"def"}',
    '{"type":"log","time":962300,"level":"none","msg":" add"}',
    '{"type":"log","time":962301,"level":"none","msg":"(a"}',
    '{"type":"log","time":962301,"level":"none","msg":","}',
    '{"type":"log","time":962302,"level":"none","msg":" b"}',
    '{"type":"log","time":962302,"level":"none","msg":"):"}',
    '{"type":"log","time":988266,"level":"none","msg":" \\""}',
    '{"type":"log","time":995754,"level":"none","msg":" +"}',
    '{"type":"log","time":1003014,"level":"none","msg":" ("}',
    '{"type":"log","time":1010225,"level":"none","msg":"f"}',
    '{"type":"log","time":1017702,"level":"none","msg":","}',
    '{"type":"log","time":1017723,"level":"none","msg":" **"}',
    '{"type":"log","time":1025645,"level":"none","msg":"kwargs"}',
    '{"type":"log","time":1025666,"level":"none","msg":"):\\n"}',
    '{"type":"log","time":1025667,"level":"none","msg":"   "}',
    '{"type":"log","time":1032871,"level":"none","msg":" \\"\\"\\""}',
    '{"type":"log","time":1032906,"level":"none","msg":"Return"}',
    '{"type":"log","time":1040409,"level":"none","msg":" a"}',
    '{"type":"log","time":1040441,"level":"none","msg":" string"}',
    '{"type":"log","time":1040448,"level":"none","msg":"\\n\\n"}',
    '{"type":"log","time":1040454,"level":"info","msg":"encoded    6 tokens in    0.013 seconds, speed:  454.683 t/s\\n"}',
    '{"type":"log","time":1040455,"level":"info","msg":"decoded   13 tokens in    0.065 seconds, speed:  200.157 t/s\\n"}',
    '{"type":"log","time":1040456,"level":"info","msg":"n_draft   = 2\\n"}',
    '{"type":"log","time":1040456,"level":"info","msg":"n_predict = 13\\n"}',
    '{"type":"log","time":1040457,"level":"info","msg":"n_drafted = 15\\n"}',
    '{"type":"log","time":1040457,"level":"info","msg":"n_accept  = 5\\n"}',
    '{"type":"log","time":1040458,"level":"info","msg":"accept    = 33.333%\\n"}',
    '{"type":"log","time":1040489,"level":"info","msg":"spec common_specu: statistics        draft-mtp: #calls(b,g,a) =    1      8      8, #gen drafts =      8, #acc drafts =     4, #gen tokens =     15, #acc tokens =     5, #mean acc len = 1.62, #acc rate/pos = (0.500, 0.125), dur(b,g,a) = 0.001, 39.867, 0.007 ms\\n"}',
    '{"type":"log","time":1040532,"level":"none","msg":"\\n\\n"}',
])


def test_parse_real_output():
    res = um.parse_output(REAL_SAMPLE, n_requested=12)
    assert res["n_prompt"] == 6 and "".join(res["prompt_pieces"]) == "def add(a, b):"
    assert len(res["tokens"]) == 13 == res["n_predict"]  # one past -n: the tool stops once it has more
    assert res["text"] == ' " + (f, **kwargs):\n    """Return a'
    assert res["full_text"] == res["text"] + " string"
    assert (res["n_drafted"], res["n_accept"], res["n_verify"]) == (15, 5, 8)
    assert res["n_predict"] == res["n_verify"] + res["n_accept"]
    assert res["tau"] == 1.62 and len(res["acceptance_per_position"]) == 2
    assert res["decode_tokens_per_s"] > 0 and res["encode_tokens_per_s"] > 0


def test_parse_output_sample():
    res = um.parse_output(SAMPLE, n_requested=12)
    assert res["n_prompt"] == 6 and "".join(res["prompt_pieces"]) == "def add(a, b):"
    assert res["tokens"][:3] == ["\n", "   ", " return"] and len(res["tokens"]) == 14
    # exactly the 12 tokens asked for, though the tool overshoots
    assert res["text"] == "\n    return a + b\n\ndef sub(a, b"
    assert res["full_text"] == "\n    return a + b\n\ndef sub(a, b):\n\n"
    assert (res["n_predict"], res["n_drafted"], res["n_accept"], res["n_draft"]) == (14, 12, 8, 2)
    assert res["decode_tokens_per_s"] == 100.0 and res["encode_tokens_per_s"] == 500.0
    assert res["decode_seconds"] == 0.14
    assert res["n_verify"] == 6 and res["tau"] == 2.33
    assert res["acceptance_per_position"] == [0.833, 0.5]
    assert not res["lossy_utf8"]


def test_parse_output_rejects_foreign_output():
    with pytest.raises(um.UpstreamRunError, match="encoded"):
        um.parse_output('{"level": "none", "msg": "hello"}\nnot json\n')


def test_no_plain_mode():
    with pytest.raises(ValueError, match="no plain mode"):
        um.run_draft_mtp("/nonexistent", "/nonexistent.gguf", "x", 8, 0, 1)


def test_tool_key_follows_cmake_args_and_sdist():
    assert um.tool_key("") == um.tool_key("")
    assert um.tool_key("") != um.tool_key("-DGGML_CUDA=on")
    assert um.tool_key("") != um.tool_key("", target="llama-cli")
    assert "-DLLAMA_BUILD_EXAMPLES=ON" in um._cmake_args("")
    assert um._cmake_args("-DGGML_CUDA=on")[-1] == "-DGGML_CUDA=on"  # the user's arguments come last and win
