"""Families whose MTP layers are appended to the trunk's own layer list
(DeepSeek-V3, GLM-4.5): ``model.layers.{N + i}`` with N = num_hidden_layers.

From a tensor name alone, layer N's decoder tensors look like any trunk
layer's, so an MTP layer is recognised by the tensors only MTP layers have:
the input fusion (``enorm``, ``hnorm``, ``eh_proj``), the shared head
(``shared_head.norm``, ``shared_head.head``) and the layer's own
``embed_tokens``. The converter itself places whole layers by number.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .spec import MTPArch

#: tensors that exist only in an appended MTP layer
NEXTN_ONLY = re.compile(r"^model\.layers\.\d+\.(enorm|hnorm|eh_proj|shared_head\.norm|shared_head\.head|embed_tokens)\.")


@dataclass(frozen=True)
class AppendedNextNArch(MTPArch):
    def is_mtp_tensor(self, name: str) -> bool:
        return NEXTN_ONLY.match(name) is not None
