"""What gguf-mtp needs to know about one checkpoint family's MTP layers."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MTPArch:
    #: Hugging Face ``architectures`` names handled by this entry
    hf_architectures: tuple[str, ...]
    #: llama.cpp architecture name written to general.architecture
    gguf_arch: str
    #: checkpoint tensor-name prefixes that belong to the MTP layers
    mtp_prefixes: tuple[str, ...]
    #: config.json key that counts the MTP layers (0 or absent: count the tensors)
    mtp_layers_key: str
    #: which trunk hidden state feeds the MTP module, in words (documentation)
    hidden_source: str
    #: HF architecture whose pinned converter class writes the trunk (None: our own name)
    converter_base: str | None = None
    #: class mixed in before that converter class (keeps/renames the MTP tensors
    #: where upstream drops them); it must call ``super()`` for everything else
    converter_mixin: type | None = None
    #: what the tensor table does not say (e.g. FP8 scales folded in), for the docs
    notes: tuple[str, ...] = ()
    #: the pinned llama.cpp, unpatched, loads this family's MTP layers (False: only
    #: the patch series has an MTP graph for it; ``gguf-mtp strip`` drops them)
    stock_mtp: bool = True

    @property
    def tensors(self):
        """This family's rows of :mod:`gguf_mtp.heads.tensor_map` (checkpoint <->
        GGUF <-> heads state, with the transform)."""
        from ...heads.tensor_map import BY_HF_ARCH

        return BY_HF_ARCH[self.hf_architectures[0]]

    def text_config(self, config: dict) -> dict:
        return {**config, **config.get("text_config", {})}

    def n_trunk_layers(self, config: dict) -> int:
        return int(self.text_config(config)["num_hidden_layers"])

    def is_mtp_tensor(self, name: str) -> bool:
        return name.startswith(self.mtp_prefixes)

    def mtp_layer_indices(self, tensor_names) -> set[int]:
        """The ``layers.{i}`` indices the MTP tensors carry (empty where their names have none)."""
        layers = set()
        for name in tensor_names:
            if self.is_mtp_tensor(name):
                parts = name.split(".")
                if "layers" in parts:
                    i = parts.index("layers")
                    if i + 1 < len(parts) and parts[i + 1].isdecimal():
                        layers.add(int(parts[i + 1]))
        return layers

    def n_mtp_layers(self, config: dict, tensor_names) -> int:
        n = int(self.text_config(config).get(self.mtp_layers_key) or 0)
        if n:
            return n
        layers = self.mtp_layer_indices(tensor_names)
        return len(layers) or (1 if any(self.is_mtp_tensor(n) for n in tensor_names) else 0)
