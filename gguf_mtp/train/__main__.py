"""``python -m gguf_mtp.train DATA TARGET.gguf --out HEADS [...]`` runs
``gguf-mtp finetune``; on several GPUs:
``accelerate launch -m gguf_mtp.train DATA TARGET.gguf --out HEADS --method fastmtp``."""

from ..cli.train import finetune_cmd

if __name__ == "__main__":
    finetune_cmd(prog_name="python -m gguf_mtp.train")
