"""A diverse self-distillation prompt mix, written from tables in this file.

The shipped set (:mod:`gguf_mtp.train.prompts`) is Python standard-library
code and docstring sentences: heads trained on it accept on that kind of text
and little else (SmolLM2-135M: tau 1.27 at K = 3 on other kinds). This mix
covers what a retrofit head meets in use, without downloading anything:

* code in C, C++, Rust, Go, Java, JavaScript and TypeScript (one task table
  rendered as a function header + comment in each language), plus Python from
  the shipped standard-library set;
* structured text: SQL queries and DDL, JSON documents, YAML configuration,
  Markdown README sections, HTML;
* chat turns (``User: ... / Assistant:``), letters and lists;
* prose openings (setting x character x event) and the shipped docstring
  sentences.

Shell scripts and the ``Question: / Answer:`` format are left out on purpose:
the held-out set (``gguf_mtp/data/heldout_prompts.json``) has them, so its
report shows kinds the head never saw next to kinds it saw (other prompts).
:func:`build_mix` is deterministic; no prompt shares its first 40 characters
with a held-out prompt (checked here and in the tests).

    python -m gguf_mtp.train.prompt_mix OUT.jsonl [--n N]
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

from .prompts import DEFAULT_PROMPTS_DIR, load_prompts

HELDOUT = Path(__file__).resolve().parent.parent / "data" / "heldout_prompts.json"

# (what it does, snake_case name, [(param, kind)], return kind); kinds: int, float, str, bool, ints, strs, void
_TASKS = [
    ("Return the largest value in the array", "max_value", [("values", "ints"), ("n", "int")], "int"),
    ("Reverse the string in place", "reverse_string", [("s", "str")], "void"),
    ("Count the vowels in a string", "count_vowels", [("text", "str")], "int"),
    ("Return true if n is a prime number", "is_prime", [("n", "int")], "bool"),
    ("Compute the n-th Fibonacci number iteratively", "fibonacci", [("n", "int")], "int"),
    ("Return the average of the values, or 0 when empty", "average", [("values", "ints"), ("n", "int")], "float"),
    ("Binary search for key in a sorted array; return its index or -1", "binary_search",
     [("values", "ints"), ("n", "int"), ("key", "int")], "int"),
    ("Return the greatest common divisor of a and b", "gcd", [("a", "int"), ("b", "int")], "int"),
    ("Convert a temperature from Celsius to Fahrenheit", "celsius_to_fahrenheit", [("celsius", "float")], "float"),
    ("Return true if the string reads the same backwards", "is_palindrome", [("s", "str")], "bool"),
    ("Sort the array with insertion sort", "insertion_sort", [("values", "ints"), ("n", "int")], "void"),
    ("Count the words separated by spaces", "word_count", [("text", "str")], "int"),
    ("Return the factorial of n", "factorial", [("n", "int")], "int"),
    ("Sum the digits of a non-negative integer", "digit_sum", [("n", "int")], "int"),
    ("Clamp x to the range [lo, hi]", "clamp", [("x", "int"), ("lo", "int"), ("hi", "int")], "int"),
    ("Return the number of set bits in x", "popcount", [("x", "int")], "int"),
    ("Return true if the year is a leap year", "is_leap_year", [("year", "int")], "bool"),
    ("Remove duplicate values from a sorted array; return the new length", "dedup_sorted",
     [("values", "ints"), ("n", "int")], "int"),
    ("Return the index of the first occurrence of c in s, or -1", "index_of", [("s", "str"), ("c", "str")], "int"),
    ("Compute the dot product of two vectors", "dot_product", [("a", "ints"), ("b", "ints"), ("n", "int")], "int"),
    ("Rotate the array left by k positions", "rotate_left", [("values", "ints"), ("n", "int"), ("k", "int")], "void"),
    ("Return the second smallest value", "second_smallest", [("values", "ints"), ("n", "int")], "int"),
    ("Convert a string of decimal digits to an integer", "parse_int", [("s", "str")], "int"),
    ("Return true if every character is a digit", "all_digits", [("s", "str")], "bool"),
    ("Merge two sorted arrays into out", "merge_sorted",
     [("a", "ints"), ("na", "int"), ("b", "ints"), ("nb", "int"), ("out", "ints")], "void"),
    ("Return the length of the longest run of equal values", "longest_run", [("values", "ints"), ("n", "int")], "int"),
    ("Compute integer power base^exp by repeated squaring", "ipow", [("base", "int"), ("exp", "int")], "int"),
    ("Return the number of lines in the text", "count_lines", [("text", "str")], "int"),
    ("Return true if the brackets in s are balanced", "balanced_brackets", [("s", "str")], "bool"),
    ("Compute the checksum: the sum of all bytes modulo 256", "checksum", [("data", "ints"), ("n", "int")], "int"),
    ("Return the median of a sorted array", "median_sorted", [("values", "ints"), ("n", "int")], "float"),
    ("Convert minutes to a string of the form HH:MM", "format_minutes", [("minutes", "int")], "str"),
    ("Return the distance between two points", "distance",
     [("x1", "float"), ("y1", "float"), ("x2", "float"), ("y2", "float")], "float"),
    ("Capitalize the first letter of each word", "title_case", [("s", "str")], "str"),
    ("Return how many times value appears in the array", "count_value",
     [("values", "ints"), ("n", "int"), ("value", "int")], "int"),
    ("Return true if a and b are anagrams", "is_anagram", [("a", "str"), ("b", "str")], "bool"),
]


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(w.capitalize() for w in rest)


_C_T = {"int": "int", "float": "double", "str": "char *", "bool": "int", "ints": "int *", "void": "void"}
_CPP_T = {"int": "int", "float": "double", "str": "std::string&", "bool": "bool", "ints": "std::vector<int>&",
          "void": "void"}
_RS_T = {"int": "i64", "float": "f64", "str": "&str", "bool": "bool", "ints": "&[i64]", "void": "()"}
_GO_T = {"int": "int", "float": "float64", "str": "string", "bool": "bool", "ints": "[]int", "void": ""}
_JAVA_T = {"int": "int", "float": "double", "str": "String", "bool": "boolean", "ints": "int[]", "void": "void"}
_TS_T = {"int": "number", "float": "number", "str": "string", "bool": "boolean", "ints": "number[]",
         "void": "void"}


def _render(lang: str, desc: str, name: str, params, ret: str) -> str:
    # languages whose arrays know their length drop the C-style length parameters
    slices = lang in ("rust", "go", "java", "javascript", "typescript") and any(k == "ints" for _, k in params)
    ps = [(p, k) for p, k in params if not (slices and p in ("n", "na", "nb"))]
    if lang == "c":
        args = ", ".join(f"{'const ' if k == 'str' and ret != 'void' else ''}{_C_T[k]}"
                         f"{'' if _C_T[k].endswith('*') else ' '}{p}" for p, k in params)
        return f"/* {desc}. */\n{_C_T[ret]} {name}({args})\n{{\n"
    if lang == "cpp":
        args = ", ".join(f"{'const ' if k in ('str', 'ints') and ret != 'void' else ''}{_CPP_T[k]} {p}"
                         for p, k in ps)
        return f"#include <string>\n#include <vector>\n\n// {desc}.\n{_CPP_T[ret]} {name}({args}) {{\n"
    if lang == "rust":
        args = ", ".join(f"{p}: {'&mut [i64]' if k == 'ints' and ret == 'void' else _RS_T[k]}" for p, k in ps)
        tail = "" if ret == "void" else f" -> {'String' if ret == 'str' else _RS_T[ret]}"
        return f"/// {desc}.\npub fn {name}({args}){tail} {{\n"
    if lang == "go":
        args = ", ".join(f"{p} {_GO_T[k]}" for p, k in ps)
        tail = f" {_GO_T[ret]}" if ret != "void" else ""
        return f"// {desc}.\nfunc {_camel(name)}({args}){tail} {{\n"
    if lang == "java":
        args = ", ".join(f"{_JAVA_T[k]} {_camel(p)}" for p, k in ps)
        return (f"public final class {_camel(name)[0].upper() + _camel(name)[1:]} {{\n    /** {desc}. */\n"
                f"    public static {_JAVA_T[ret]} {_camel(name)}({args}) {{\n")
    if lang == "javascript":
        args = ", ".join(_camel(p) for p, _ in ps)
        return f"/**\n * {desc}.\n */\nfunction {_camel(name)}({args}) {{\n"
    if lang == "typescript":
        args = ", ".join(f"{_camel(p)}: {_TS_T[k]}" for p, k in ps)
        return f"// {desc}.\nexport function {_camel(name)}({args}): {_TS_T[ret]} {{\n"
    raise ValueError(lang)


LANGS = ("c", "cpp", "rust", "go", "java", "javascript", "typescript")

_TABLES = {
    "customers": ["customer_id", "name", "email", "country", "created_at"],
    "orders": ["order_id", "customer_id", "total", "status", "ordered_at"],
    "products": ["product_id", "title", "category", "price", "stock"],
    "employees": ["employee_id", "first_name", "last_name", "department", "salary", "hired_on"],
    "books": ["book_id", "title", "author", "year", "isbn"],
    "flights": ["flight_id", "origin", "destination", "departs_at", "seats"],
    "students": ["student_id", "name", "grade", "enrolled_on"],
    "sensors": ["sensor_id", "location", "reading", "measured_at"],
}
_SQL_INTENTS = [
    "Number of rows per {c2}", "The ten most recent rows by {c4}", "Average {c3} per {c2}",
    "Rows whose {c2} appears more than once", "Delete rows older than one year",
    "All columns of the rows with the highest {c3}",
]


def _sql_prompts(rng: random.Random) -> list[str]:
    out = []
    for table, cols in _TABLES.items():
        c = {f"c{i}": cols[min(i, len(cols) - 1)] for i in range(1, 5)}
        for intent in _SQL_INTENTS:
            out.append(f"-- {intent.format(**c)} in {table}\nSELECT ")
        ddl = ",\n    ".join(f"{col} {'INTEGER PRIMARY KEY' if i == 0 else 'TEXT'}" for i, col in enumerate(cols[:2]))
        out.append(f"-- Schema for the {table} table\nCREATE TABLE {table} (\n    {ddl},\n")
        out.append(f"INSERT INTO {table} ({', '.join(cols[:3])}) VALUES\n    (1, ")
    return out


_ENTITIES = [
    ("user", ["id", "username", "email", "roles", "last_login"]),
    ("invoice", ["number", "issued", "due", "currency", "lines"]),
    ("recipe", ["title", "servings", "ingredients", "steps"]),
    ("event", ["name", "starts", "ends", "venue", "tickets"]),
    ("package", ["name", "version", "license", "scripts", "devDependencies"]),
    ("movie", ["title", "year", "director", "cast", "rating"]),
    ("server", ["hostname", "ip", "os", "cpus", "disks"]),
    ("book", ["title", "authors", "publisher", "pages", "tags"]),
    ("station", ["code", "name", "lat", "lon", "lines"]),
    ("order", ["order_id", "items", "shipping", "paid", "notes"]),
]


def _json_prompts() -> list[str]:
    out = []
    for ent, fields in _ENTITIES:
        out.append(f'{{\n  "{ent}_{fields[0]}": ')
        out.append(f'{{\n  "type": "{ent}",\n  "{fields[0]}": "example",\n  "{fields[1]}": ')
        out.append(f'{{"{ent}s": [\n  {{"{fields[0]}": 1, "{fields[1]}": ')
    return out


_YAML = [
    "# CI workflow: run the tests on every push\nname: tests\non:\n  push:\n    branches: [main]\njobs:\n",
    "# docker-compose for a web app with a database\nversion: \"3.9\"\nservices:\n  web:\n",
    "# Kubernetes deployment for the api service\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n",
    "# Application settings\nserver:\n  host: 0.0.0.0\n  port: 8080\nlogging:\n",
    "# mkdocs configuration\nsite_name: Project documentation\nnav:\n",
    "# Ansible playbook: install and start nginx\n- hosts: web\n  become: true\n  tasks:\n",
]

_PROJECTS = ["a command-line tool that renames photos by date", "a small HTTP server for static files",
             "a library for parsing CSV files", "a plugin that adds spell checking to the editor",
             "a bot that posts the weather every morning", "a tool to back up a database to cloud storage",
             "a web dashboard for home energy use", "a game of snake for the terminal",
             "a converter from Markdown to PDF", "a scheduler for recurring tasks"]
_MD_SECTIONS = ["## Usage\n\n", "## Features\n\n- ", "## Configuration\n\nThe following options ",
                "## Contributing\n\n", "## Changelog\n\n### 1.2.0\n\n- "]


def _markdown_prompts() -> list[str]:
    out = []
    for i, proj in enumerate(_PROJECTS):
        name = "".join(w[0] for w in proj.split()[:4]).upper() + "tool"
        for j in (i % 5, (i + 2) % 5):
            out.append(f"# {name}\n\n{name} is {proj}.\n\n{_MD_SECTIONS[j]}")
    return out


_HTML = [
    "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n  <meta charset=\"utf-8\">\n  <title>Contact us</title>\n",
    "<form action=\"/login\" method=\"post\">\n  <label for=\"user\">Username</label>\n",
    "<table class=\"prices\">\n  <thead>\n    <tr><th>Plan</th><th>Price</th></tr>\n  </thead>\n  <tbody>\n",
    "/* Layout for the navigation bar */\n.nav {\n  display: flex;\n",
    "<ul class=\"menu\">\n  <li><a href=\"/\">Home</a></li>\n",
    "@media (max-width: 600px) {\n  .sidebar {\n",
]

_CHAT = [
    "How can I make my laptop battery last longer?", "What is a good way to learn a new language as an adult?",
    "Can you explain what a hash table is?", "Write a short poem about autumn.",
    "How do I center a div in CSS?", "What should I pack for a three-day hiking trip?",
    "Explain recursion to a ten-year-old.", "What are the benefits of regular exercise?",
    "How do I undo the last commit in git?", "Give me three ideas for a birthday party.",
    "What is the difference between weather and climate?", "How does compound interest work?",
    "Summarize the plot of a heist movie in two sentences.", "What is a REST API?",
    "How do I make a simple tomato sauce?", "Why is the sky blue?",
    "What does a compiler do?", "How can I improve my sleep?", "Translate 'good morning' into French and Spanish.",
    "What is the time complexity of quicksort?", "Suggest a name for a coffee shop.",
    "How do vaccines work?", "What is the capital of Australia?", "How do I write a cover letter?",
    "Explain what a neural network is in simple terms.", "How do I reverse a list in Python?",
    "What are prime numbers?", "Write a haiku about the sea.", "How do I change a flat tire?",
    "What is the difference between TCP and UDP?", "List five healthy snacks.",
    "How does a refrigerator keep food cold?",
]

_SETTINGS = ["In a small fishing village on the northern coast", "On the morning of the first snow",
             "At the back of a crowded train", "Deep in the archive of the old university library",
             "Long before the city had electric light", "On the last day of the summer fair",
             "High in the mountains, where the road ended", "In the kitchen of a busy restaurant"]
_PEOPLE = ["a retired sailor", "two sisters", "the youngest clerk", "a travelling musician",
           "an engineer from the capital", "the baker's apprentice"]
_EVENTS = ["found a letter that had never been opened", "heard a knock at the door long after midnight",
           "decided to leave without telling anyone", "noticed that the clock had stopped",
           "met a stranger who knew their name"]

_LETTERS = ["Dear Ms. Alvarez,\n\nThank you for your application for the position of ",
            "Hi team,\n\nA quick update on the release schedule: ",
            "Dear neighbours,\n\nThe residents' meeting will take place on ",
            "To whom it may concern,\n\nI am writing to report a problem with ",
            "Hello Sam,\n\nIt was great to see you last week. ",
            "Dear customer,\n\nYour order has been shipped and ",
            "Shopping list:\n- eggs\n- ", "Things to do before the trip:\n1. ",
            "Meeting notes, 14 March\n\nAttendees: Ana, Ben, Chris\n\nAgenda:\n1. ",
            "Ingredients (serves 4):\n- 200 g flour\n- "]


def build_mix(n: int | None = None, seed: int = 0) -> list[dict]:
    """The mix as ``[{"kind": ..., "prompt": ...}]``, shuffled with ``seed``; ``n`` cuts it
    after an interleaving that keeps every kind represented."""
    rng = random.Random(seed)
    by_kind: dict[str, list[str]] = {lang: [_render(lang, *t) for t in _TASKS] for lang in LANGS}
    by_kind["python"] = load_prompts(DEFAULT_PROMPTS_DIR / "code.jsonl")[:96]
    by_kind["sql"] = _sql_prompts(rng)
    by_kind["json"] = _json_prompts()
    by_kind["yaml"] = list(_YAML)
    by_kind["markdown"] = _markdown_prompts()
    by_kind["html"] = list(_HTML)
    by_kind["chat"] = [f"User: {q}\nAssistant:" for q in _CHAT]
    by_kind["prose"] = [f"{s}, {p} {e}." for s in _SETTINGS for p in _PEOPLE for e in _EVENTS]
    rng.shuffle(by_kind["prose"])
    by_kind["prose"] = by_kind["prose"][:60] + load_prompts(DEFAULT_PROMPTS_DIR / "prose.txt")[:64]
    by_kind["letters"] = list(_LETTERS)
    for v in by_kind.values():
        rng.shuffle(v)
    # round-robin over kinds so that any prefix of the mix is itself mixed
    out, i = [], 0
    while any(i < len(v) for v in by_kind.values()):
        out += [{"kind": k, "prompt": v[i]} for k, v in by_kind.items() if i < len(v)]
        i += 1
    held = heldout_prefixes()
    clash = [p["prompt"][:40] for p in out if p["prompt"][:40] in held]
    if clash:
        raise AssertionError(f"training prompts clash with held-out ones: {clash[:3]}")
    return out[:n] if n else out


def heldout_prefixes() -> set[str]:
    return {p["text"][:40] for p in json.loads(HELDOUT.read_text())["prompts"]}


def write_mix(path: str | Path, n: int | None = None, seed: int = 0) -> dict:
    """Write the mix as a prompt ``.jsonl`` (``{"prompt", "kind"}`` per line); returns counts per kind."""
    mix = build_mix(n, seed)
    path = Path(path)
    text = "".join(json.dumps(p) + "\n" for p in mix)
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        path.write_text(text, encoding="utf-8")
    counts: dict[str, int] = {}
    for p in mix:
        counts[p["kind"]] = counts.get(p["kind"], 0) + 1
    return counts


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description="Write the diverse distillation prompt mix as JSONL.")
    ap.add_argument("out")
    ap.add_argument("--n", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    json.dump(write_mix(a.out, a.n, a.seed), sys.stdout, indent=2)
    print()
