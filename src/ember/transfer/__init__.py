"""Transfer learning: start from trained or pretrained weights, freeze, LoRA, per-pattern LRs.

- `hooks`: what training calls (prepare after the model is built, finish after training);
- `init`: `model.init_from` with its load report; `freeze`: freezing and optimizer groups;
- `lora`: adapters through peft; `gpt2_import`: `ember import gpt2`; `cli`: that subcommand.

This file imports nothing, so `ember --help` can register the subcommand without torch.
"""
