"""Hugging Face hub model ids as conversion inputs.

``gguf-mtp convert Qwen/Qwen3.5-0.8B out.gguf`` (or ``owner/name@revision``)
resolves the id through ``huggingface_hub.snapshot_download``, fetching only
what conversion reads: ``config.json``, the safetensors shards and their
index, the tokenizer files and the chat template. The hub cache is used (a
second run downloads nothing), interrupted downloads resume, ``HF_TOKEN`` and
``HF_HUB_OFFLINE`` are honoured, and huggingface_hub shows its progress bars.
A local directory always wins over an id of the same spelling.
"""

from __future__ import annotations

import re
from pathlib import Path

#: what conversion reads from a repository (config, weights, tokenizer, template)
ALLOW_PATTERNS = [
    "config.json", "generation_config.json",
    "*.safetensors", "*.safetensors.index.json",
    "tokenizer.json", "tokenizer_config.json", "tokenizer.model", "special_tokens_map.json",
    "vocab.json", "merges.txt", "added_tokens.json", "chat_template.jinja", "chat_template.json",
]

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(@[\w./-]+)?$")


class HubError(RuntimeError):
    """A hub id that cannot be resolved (offline and not cached, unknown, no access)."""


def is_hub_id(arg: str) -> bool:
    """``owner/name`` or ``owner/name@revision`` that is not an existing local path."""
    return not Path(arg).exists() and bool(_HUB_ID.match(arg))


def split_id(arg: str) -> tuple[str, str | None]:
    repo, _, rev = arg.partition("@")
    return repo, (rev or None)


def resolve_model_dir(arg: str | Path, *, progress: bool = True) -> Path:
    """A local checkpoint directory for ``arg``: the path itself, or the hub
    snapshot of the id (downloaded into the hub cache if needed)."""
    arg = str(arg)
    if not is_hub_id(arg):
        return Path(arg)
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )
    from huggingface_hub.utils import disable_progress_bars, enable_progress_bars

    repo, rev = split_id(arg)
    if not progress:
        disable_progress_bars()
    try:
        path = snapshot_download(repo, revision=rev, allow_patterns=ALLOW_PATTERNS)
    except LocalEntryNotFoundError:
        raise HubError(f"{arg}: not in the hub cache and the hub cannot be reached (HF_HUB_OFFLINE is set or "
                       "there is no network); download it once with network access, or give a local "
                       "checkpoint directory") from None
    except GatedRepoError:
        raise HubError(f"{arg}: a gated repository; accept its terms on the hub and set HF_TOKEN") from None
    except RepositoryNotFoundError:
        raise HubError(f"{arg}: no such repository on the hub (or it is private: set HF_TOKEN)") from None
    except RevisionNotFoundError:
        raise HubError(f"{arg}: no revision {rev!r} in {repo}") from None
    finally:
        if not progress:
            enable_progress_bars()
    return Path(path)
