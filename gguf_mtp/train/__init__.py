"""Training MTP heads against a GGUF target: self-distilled data
(:mod:`.distill`), PyTorch heads loaded from the GGUF (:mod:`.heads`),
FastMTP / MTP-D fine-tuning (:mod:`.finetune`) and writing the trained heads
back into the GGUF (:mod:`.stitch`).

Stages, each a command and a function:

    gguf-mtp distill-data TARGET.gguf --prompts P --out DATA     # distill(DistillConfig)
    gguf-mtp finetune --method fastmtp DATA TARGET.gguf --out H  # finetune(FinetuneConfig)
    gguf-mtp stitch TARGET.gguf H OUT.gguf --head-type q8_0      # stitch(...)

``accelerate launch -m gguf_mtp.train --method fastmtp DATA TARGET.gguf --out H``
runs the fine-tune on several GPUs (Hugging Face accelerate).
"""
