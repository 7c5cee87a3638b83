"""The diverse distillation mix: deterministic, every kind present, apart from the held-out set."""

import json

from gguf_mtp.train.prompt_mix import HELDOUT, LANGS, build_mix, heldout_prefixes, write_mix


def test_mix_is_deterministic_and_mixed():
    a, b = build_mix(), build_mix()
    assert a == b
    kinds = {p["kind"] for p in a}
    assert set(LANGS) | {"python", "sql", "json", "yaml", "markdown", "html", "chat", "prose"} <= kinds
    # any prefix is mixed: the first 32 prompts already span 16 kinds
    assert len({p["kind"] for p in a[:32]}) == len(kinds)
    assert len({p["prompt"] for p in a}) == len(a)


def test_mix_kept_apart_from_heldout():
    held = json.loads(HELDOUT.read_text())["prompts"]
    held_kinds = {p["kind"] for p in held}
    mix = build_mix()
    prefixes = heldout_prefixes()
    assert not any(p["prompt"][:40] in prefixes for p in mix)
    assert not any(h["text"] in p["prompt"] for p in mix for h in held)
    # shell and the Question/Answer format stay unseen kinds
    assert {"shell", "qa"} <= held_kinds
    assert not any(p["kind"] in ("shell", "qa") or p["prompt"].startswith(("#!/", "Question:")) for p in mix)


def test_write_mix_roundtrip(tmp_path):
    from gguf_mtp.train.prompts import load_prompts

    counts = write_mix(tmp_path / "mix.jsonl", n=50)
    assert sum(counts.values()) == 50
    assert load_prompts(tmp_path / "mix.jsonl") == [p["prompt"] for p in build_mix(50)]
