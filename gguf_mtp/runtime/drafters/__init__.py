"""The drafters, one module each, and their registry.

Every drafter subclasses :class:`~.base.Drafter` and says what it needs from
the engine with class flags (``needs_mtp``, ``needs_hidden``,
``needs_medusa``, ``max_branches``); :meth:`~.base.Drafter.configure` turns
them into :class:`~gguf_mtp.runtime.engine.RuntimeOptions`. Callers never test
drafter names: :data:`DRAFTERS` is the registry the CLI's choices come from.
"""

from __future__ import annotations

from .auto import AutoDrafter
from .base import Drafter, Proposal
from .eagle_tree import EagleCandidates, EagleTreeDrafter
from .medusa_tree import MEDUSA_CHAIN, MEDUSA_TREE, MedusaDrafter, parse_tree
from .mtp_chain import MTPDrafter
from .ngram import NgramDrafter, NgramTreeDrafter

#: drafter registry: name -> class (called with its keyword options)
DRAFTERS: dict[str, type[Drafter]] = {cls.name: cls for cls in (
    Drafter, AutoDrafter, MTPDrafter, EagleTreeDrafter, MedusaDrafter, NgramDrafter, NgramTreeDrafter)}


def make_drafter(name: str | Drafter, **options) -> Drafter:
    """A drafter by registry name, or the drafter itself. ``options`` are the
    callers' settings (e.g. ``tree=`` from the CLI); each drafter takes the ones
    it lists in :attr:`Drafter.options`."""
    if isinstance(name, Drafter):
        return name
    try:
        cls = DRAFTERS[name]
    except KeyError:
        raise ValueError(f"unknown drafter {name!r}; choose one of {', '.join(DRAFTERS)}") from None
    return cls(**{k: v for k, v in options.items() if k in cls.options})


def configure_for(names, opts):
    """Engine options that let every drafter in ``names`` run on one engine (the
    MTP layers loaded if any needs them, trees' sequences and unified KV if any
    drafts trees)."""
    drafters = [make_drafter(n) for n in names]
    for d in drafters:
        opts = d.configure(opts)
    opts.load_mtp = any(d.needs_mtp for d in drafters)
    return opts


__all__ = ["AutoDrafter", "DRAFTERS", "Drafter", "EagleCandidates", "EagleTreeDrafter", "MEDUSA_CHAIN", "MEDUSA_TREE",
           "MTPDrafter", "MedusaDrafter", "NgramDrafter", "NgramTreeDrafter", "Proposal", "configure_for", "make_drafter",
           "parse_tree"]
