"""gguf-mtp serve driven by the official ``openai`` client, over HTTP.

The module's server is the real ``gguf-mtp serve`` process on a free port,
serving the default model (q8_0, its MTP head) with auto drafting; every
greedy text is compared with plain decoding of the same prompt. A second,
in-process server checks the queue limit and the API key."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import http.client
import urllib.error
import urllib.request
from urllib.parse import urlparse

import openai                              # a test dependency (pyproject [test])
import pytest

from gguf_mtp.runtime import Engine, RuntimeOptions, generate
from gguf_mtp.runtime.api import SpeculativeLlama
from gguf_mtp.serve.launch import ServerProcess

PROMPTS = ["def fib(n):\n", "class Stack:\n    def __init__(self):\n", "import os\n\n\ndef walk(",
           "The open() system call", "def read_config(path):\n    \"\"\"Read a file.\"\"\"\n",
           "for i in range(10):\n", "def parse(line):\n", "# Sort a list of numbers\n"]


@pytest.fixture(scope="module")
def model(default_gguf):
    return default_gguf("q8_0")


@pytest.fixture(scope="module")
def server(model):
    with ServerProcess([model, "-t", "2", "--n-ctx", "2048", "--drafters", "mtp,ngram,ngram-tree"]) as url:
        yield url


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server + "/v1", api_key="none", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def plain(model):
    """Plain greedy decoding of a text or token prompt (gguf-mtp generate --drafter none)."""
    eng = Engine(model, RuntimeOptions(n_threads=2, n_ctx=2048))
    yield lambda prompt, n: generate(eng, prompt, n, drafter="none")
    eng.close()


def _http(method, url, body=None, headers=None):
    """(status, parsed JSON) of a raw request: what a non-OpenAI client sees."""
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"content-type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _stream_lines(url, body, n_lines=None):
    """The raw lines of a streamed POST (stops reading after ``n_lines`` and hangs up)."""
    u = urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    conn.request("POST", u.path, json.dumps(body), {"content-type": "application/json"})
    resp = conn.getresponse()
    lines = []
    while n_lines is None or len(lines) < n_lines:
        line = resp.readline()
        if not line:
            break
        lines.append(line.decode().rstrip("\r\n"))
    ctype = resp.getheader("content-type")
    conn.close()
    return ctype, lines


def _model_id(client):
    return client.models.list().data[0].id


def test_serve_resolves_model_names(tmp_path):
    import click

    from gguf_mtp.cli.serve import resolve_model

    with pytest.raises(click.BadParameter, match="no such GGUF"):
        resolve_model(str(tmp_path / "missing.gguf"))
    assert resolve_model("default").endswith(".gguf")          # converted on first use, then cached


def test_models_lists_the_file(client, model):
    data = client.models.list().data
    assert [m.id for m in data] == [model.name.removesuffix(".gguf")]
    assert data[0].model_extra["meta"]["mtp_layers"] == 1


def test_greedy_completion_equals_plain_decoding(client, model, plain):
    mid = _model_id(client)
    for prompt in PROMPTS[:3]:
        r = client.completions.create(model=mid, prompt=prompt, max_tokens=40, temperature=0)
        assert r.choices[0].text == plain(prompt, 40).text
        assert r.usage.completion_tokens == 40
        t = r.model_extra["timings"]
        assert t["predicted_n"] == 40 and t["draft_n"] >= t["draft_n_accepted"] >= 0
        assert r.model_extra["gguf_mtp"]["tau"] >= 1.0


def test_greedy_text_equals_the_generate_command(client, model):
    out = subprocess.run([sys.executable, "-m", "gguf_mtp.cli", "generate", str(model), "-p", PROMPTS[0],
                          "-n", "32", "--drafter", "none", "-t", "2", "--json"],
                         capture_output=True, text=True, check=True)
    want = json.loads(out.stdout)["text"]
    r = client.completions.create(model=_model_id(client), prompt=PROMPTS[0], max_tokens=32, temperature=0)
    assert r.choices[0].text == want


def test_mtp_drafting_reports_its_statistics(client, plain):
    prompt = "def fib(n):\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n\n\ndef fib"
    r = client.completions.create(model=_model_id(client), prompt=prompt, max_tokens=48, temperature=0,
                                  extra_body={"drafter": "mtp", "draft": 3})
    assert r.choices[0].text == plain(prompt, 48).text
    t, g = r.model_extra["timings"], r.model_extra["gguf_mtp"]
    assert t["draft_n"] > 0 and t["draft_n_accepted"] > 0          # the trained head's drafts are accepted
    assert g["drafter"] == "mtp" and len(g["acceptance_per_position"]) == 3
    assert g["tau"] > 1.0


def test_chat_greedy_equals_plain_decoding_of_the_template(client, model, plain):
    msgs = [{"role": "user", "content": "Write a function that adds two numbers."}]
    r = client.chat.completions.create(model=_model_id(client), messages=msgs, max_tokens=32, temperature=0)
    llm = SpeculativeLlama(str(model), n_ctx=2048, n_threads=2, drafter="none")
    tokens = llm.chat_prompt_tokens(msgs)
    llm.close()
    ref = plain(tokens, 32)
    want = ref.text.split("<|im_end|>")[0]
    assert r.choices[0].message.content == want
    assert r.choices[0].message.role == "assistant"
    assert r.usage.prompt_tokens == len(tokens)


def test_streams_end_with_done_and_equal_the_full_text(client, server):
    mid = _model_id(client)
    full = client.completions.create(model=mid, prompt=PROMPTS[1], max_tokens=40, temperature=0).choices[0].text
    chunks = list(client.completions.create(model=mid, prompt=PROMPTS[1], max_tokens=40, temperature=0,
                                            stream=True))
    assert "".join(c.choices[0].text for c in chunks) == full
    assert chunks[-1].choices[0].finish_reason == "length"
    assert "timings" in chunks[-1].model_extra and chunks[-1].usage.completion_tokens == 40
    chat = [{"role": "user", "content": "Hello"}]
    whole = client.chat.completions.create(model=mid, messages=chat, max_tokens=24, temperature=0)
    parts = list(client.chat.completions.create(model=mid, messages=chat, max_tokens=24, temperature=0,
                                                stream=True))
    assert parts[0].choices[0].delta.role == "assistant"
    assert "".join(p.choices[0].delta.content or "" for p in parts) == whole.choices[0].message.content
    # the wire format: server-sent events, the last one data: [DONE]
    ctype, lines = _stream_lines(server + "/v1/completions",
                                 {"prompt": "x = ", "max_tokens": 4, "temperature": 0, "stream": True})
    assert ctype.startswith("text/event-stream")
    events = [line for line in lines if line.startswith("data:")]
    assert events[-1].strip() == "data: [DONE]"
    assert all("choices" in json.loads(e[5:]) for e in events[:-1])


def test_stop_strings(client, plain):
    prompt = PROMPTS[0]
    full = plain(prompt, 40).text
    stop = full[10:14]
    r = client.completions.create(model=_model_id(client), prompt=prompt, max_tokens=40, temperature=0, stop=[stop])
    assert r.choices[0].text == full[:full.find(stop)]
    assert r.choices[0].finish_reason == "stop"
    s = client.completions.create(model=_model_id(client), prompt=prompt, max_tokens=40, temperature=0, stop=stop,
                                  stream=True)
    assert "".join(c.choices[0].text for c in s) == full[:full.find(stop)]


def test_seeded_sampling_repeats(client):
    kw = dict(model=_model_id(client), prompt="import ", max_tokens=24, temperature=0.9, top_p=0.95)
    a = client.completions.create(seed=11, **kw).choices[0].text
    b = client.completions.create(seed=11, **kw).choices[0].text
    c = client.completions.create(seed=11, stream=True, **kw)
    assert a == b == "".join(x.choices[0].text for x in c)
    texts = {client.completions.create(seed=s, **kw).choices[0].text for s in range(4)}
    assert len(texts) > 1                  # the seed matters: sampling really samples


def test_eight_concurrent_requests_get_their_own_answers(client):
    mid = _model_id(client)
    alone = [client.completions.create(model=mid, prompt=p, max_tokens=32, temperature=0).choices[0].text
             for p in PROMPTS]
    got: dict[int, str] = {}

    def ask(i):
        if i % 2:
            got[i] = "".join(c.choices[0].text for c in client.completions.create(
                model=mid, prompt=PROMPTS[i], max_tokens=32, temperature=0, stream=True))
        else:
            got[i] = client.completions.create(model=mid, prompt=PROMPTS[i], max_tokens=32,
                                               temperature=0).choices[0].text

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert [got.get(i) for i in range(8)] == alone


def test_interleaved_streams_do_not_mix(client):
    mid = _model_id(client)
    a_want = client.completions.create(model=mid, prompt=PROMPTS[2], max_tokens=32, temperature=0).choices[0].text
    b_want = client.completions.create(model=mid, prompt=PROMPTS[3], max_tokens=32, temperature=0.8,
                                       seed=5).choices[0].text
    a = client.completions.create(model=mid, prompt=PROMPTS[2], max_tokens=32, temperature=0, stream=True)
    b = client.completions.create(model=mid, prompt=PROMPTS[3], max_tokens=32, temperature=0.8, seed=5, stream=True)
    ta, tb = [], []
    ia, ib = iter(a), iter(b)
    for _ in range(64):                  # read the two streams alternately
        for it, acc in ((ia, ta), (ib, tb)):
            c = next(it, None)
            if c is not None and c.choices:
                acc.append(c.choices[0].text)
    assert "".join(ta) == a_want and "".join(tb) == b_want


def test_a_chat_turn_reuses_the_previous_prompt(client, plain, model):
    """Turn 5 of a chat prefills only what is new (timings.cache_n), and its text
    is still plain decoding's."""
    mid = _model_id(client)
    llm = SpeculativeLlama(str(model), n_ctx=2048, n_threads=2, drafter="none")
    msgs = [{"role": "system", "content": "You are a helpful assistant that writes Python."}]
    for turn in range(5):
        msgs.append({"role": "user", "content": f"Step {turn}: write a helper that returns {turn} squared."})
        r = client.chat.completions.create(model=mid, messages=msgs, max_tokens=40, temperature=0)
        text = r.choices[0].message.content
        assert text == plain(llm.chat_prompt_tokens(msgs), 40).text.split("<|im_end|>")[0]
        msgs.append({"role": "assistant", "content": text})
    llm.close()
    t = r.model_extra["timings"]
    assert t["cache_n"] >= 128 and t["cache_n"] % 128 == 0
    assert t["cache_n"] + t["prompt_n"] == r.usage.prompt_tokens


def test_errors_have_openai_shape_and_status(client, server):
    mid = _model_id(client)
    with pytest.raises(openai.NotFoundError) as e:
        client.completions.create(model="no-such-model", prompt="x", max_tokens=2)
    assert e.value.body["code"] == "model_not_found"
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model=mid, prompt="word " * 2100, max_tokens=2)
    assert e.value.body["code"] == "context_length_exceeded" and "2048" in e.value.body["message"]
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model=mid, prompt="x", max_tokens=2, temperature=5)
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model=mid, prompt="x", max_tokens=2, extra_body={"drafter": "medusa"})
    assert "not loaded" in e.value.body["message"]
    status, body = _http("POST", server + "/v1/chat/completions", b"{not json")
    assert status == 400 and "error" in body
    status, body = _http("POST", server + "/v1/chat/completions", {"messages": "hi"})
    assert status == 400 and body["error"]["type"] == "invalid_request_error"


def test_a_client_that_leaves_stops_its_generation(server, client):
    t0 = time.time()
    _stream_lines(server + "/v1/completions", {"prompt": "def f():\n", "max_tokens": 1900, "temperature": 0.8,
                                               "seed": 1, "stream": True}, n_lines=6)
    # the server noticed: the worker is free long before 1900 tokens could be done
    for _ in range(100):
        if _http("GET", server + "/health")[1]["queued"] == 0:
            break
        time.sleep(0.05)
    assert _http("GET", server + "/health")[1]["queued"] == 0
    r = client.completions.create(model=_model_id(client), prompt="x = 1\n", max_tokens=4, temperature=0)
    assert r.usage.completion_tokens == 4
    assert time.time() - t0 < 30


# -- an in-process server: queue limit and API key ------------------------------


@pytest.fixture(scope="module")
def small_server(model):
    import socket

    import uvicorn

    from gguf_mtp.serve import create_app

    app = create_app(lambda: SpeculativeLlama(str(model), n_ctx=2048, n_threads=2, drafter="none"),
                     model_id="m", api_key="sk-secret", max_queue=0)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    srv = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    th = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    th.start()
    while not srv.started:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    srv.should_exit = True
    th.join(timeout=30)


def test_api_key_is_required(small_server):
    for key in (None, "wrong"):
        status, body = _http("GET", small_server + "/v1/models", headers={"authorization": f"Bearer {key}"} if key
                             else {})
        assert status == 401 and body["error"]["code"] == "invalid_api_key"
    c = openai.OpenAI(base_url=small_server + "/v1", api_key="sk-secret", max_retries=0)
    assert c.models.list().data[0].id == "m"


def test_a_full_queue_answers_503(small_server):
    c = openai.OpenAI(base_url=small_server + "/v1", api_key="sk-secret", max_retries=0, timeout=120)
    long = c.completions.create(model="m", prompt="def f():\n", max_tokens=1500, temperature=0.8, seed=2,
                                stream=True)
    it = iter(long)
    next(it)                                   # the first request is running
    with pytest.raises(openai.InternalServerError) as e:
        c.completions.create(model="m", prompt="x", max_tokens=2)
    assert e.value.status_code == 503 and e.value.body["code"] == "server_busy"
    long.close()


# -- SpeculativeLlama with every drafter -----------------------------------------


@pytest.mark.parametrize("drafter", ["mtp", "eagle", "ngram", "ngram-tree", "auto"])
def test_speculative_llama_runs_every_drafter(model, plain, drafter):
    with SpeculativeLlama(str(model), n_ctx=2048, n_threads=2, drafter=drafter) as llm:
        for prompt in PROMPTS[:2]:
            for draft in ("auto", 3):
                r = llm.create_completion(prompt, max_tokens=32, temperature=0, draft=draft)
                assert r["choices"][0]["text"] == plain(prompt, 32).text
                assert r["gguf_mtp"]["drafter"] == drafter


def test_speculative_llama_runs_medusa(trained_medusa_gguf):
    path = trained_medusa_gguf("q8_0")
    with Engine(path, RuntimeOptions(n_threads=2, n_ctx=2048)) as eng:
        want = generate(eng, PROMPTS[0], 32, drafter="none").text
    with SpeculativeLlama(str(path), n_ctx=2048, n_threads=2, drafter="medusa") as llm:
        r = llm.create_completion(PROMPTS[0], max_tokens=32, temperature=0, draft=2)
        assert r["choices"][0]["text"] == want
        assert r["timings"]["draft_n"] > 0       # (draft='auto' may decline to draft on a CPU: trees cost)


def test_a_seed_gives_plain_samplings_text_with_any_drafter(model):
    """Seeded requests draft the heads' most likely tokens (match rule), so the
    text is plain sampling's whatever drafter runs or what auto has learned."""
    with SpeculativeLlama(str(model), n_ctx=2048, n_threads=2, drafter="auto", drafters=["mtp", "ngram"]) as llm:
        kw = dict(max_tokens=40, temperature=0.9, top_p=0.95, seed=123)
        want = llm.create_completion(PROMPTS[0], drafter="none", **kw)["choices"][0]["text"]
        for drafter, draft in (("mtp", 3), ("mtp", 1), ("ngram", 4), ("auto", "auto"), ("auto", "auto")):
            got = llm.create_completion(PROMPTS[0], drafter=drafter, draft=draft, **kw)
            assert got["choices"][0]["text"] == want, (drafter, draft)
