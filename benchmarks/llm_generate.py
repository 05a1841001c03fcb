"""Generation speed of an imported Llama run: Ember fp32, Ember int8/int4 (`ember compress`), HF generate().

    ember import smollm2-135m-instruct --out runs/smollm2-135m-instruct
    python benchmarks/llm_generate.py [--run runs/smollm2-135m-instruct] [--tokens 128] [--threads 2]

Batch 1, greedy, `--tokens` new tokens (no early stop at end-of-sequence, so every variant
makes the same number), `--threads` threads, in one process, min of `--repeats` interleaved
runs after a warm-up. The Hugging Face model is a `LlamaForCausalLM` built from the same
weights (the run's tensors under HF's names); its tokens must equal Ember's fp32 tokens.
The quantized children are written by `ember compress RUN --method quantize --mode M` for each
of `--modes` (default: weight_only, int8 per output row, and weight_only_int4, int4 in groups of
32; both quantize every Linear, the tied head included, activations stay float; `dynamic`
quantizes the activations too) unless `--int8` names one. Held-out
perplexity of each on `--ppl-data` (the Austen recipe's test windows by default, when
janeaustenr is installed) says what quantizing costs. With `--compile` (the default; `--no-compile`
leaves it out) every Ember variant also runs with its one-token steps through torch.compile
(`ember.models.compiled_decoding`, what `ember generate --compile` does), compiled before timing.
`--drafts` (default int8,int4) adds speculative decoding of the fp32 model with each quantized
child as the draft (`ember generate --draft`), `--draft-tokens` per check, eager and compiled;
its greedy tokens must equal fp32's, and the share of drafted tokens kept is reported.
Prints JSON; `--profile N` prints instead where each variant's time goes (torch.profiler's top
operations over N decoded tokens).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

import ember
from ember.loading import load_run


def hf_twin(run_model: nn.Module, cfg: Any) -> nn.Module:
    """A transformers LlamaForCausalLM holding `run_model`'s weights (Ember uses HF's names)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    m = cfg.model
    hf_cfg = LlamaConfig(vocab_size=run_model.padded_vocab, hidden_size=m.n_embd, intermediate_size=m.intermediate_size,
                         num_hidden_layers=m.n_layer, num_attention_heads=m.n_head, num_key_value_heads=m.n_kv_head,
                         max_position_embeddings=run_model.block_size, rope_theta=m.rope_theta, rms_norm_eps=m.norm_eps,
                         tie_word_embeddings=m.tie_embeddings, attention_bias=m.attention_bias,
                         bos_token_id=None, eos_token_id=None, pad_token_id=None)
    hf = LlamaForCausalLM(hf_cfg)
    state = {("lm_head.weight" if k == "lm_head.weight" else f"model.{k}"): v
             for k, v in run_model.state_dict().items()}
    missing, unexpected = hf.load_state_dict(state, strict=False)
    leftover = [k for k in missing if not (m.tie_embeddings and k == "lm_head.weight")]
    if leftover or unexpected:
        raise RuntimeError(f"weights do not map onto LlamaForCausalLM: missing {leftover}, unexpected {unexpected}")
    return hf.eval()


def ember_tokens(model: nn.Module, ids: torch.Tensor, n: int) -> list[int]:
    return [int(t) for t in torch.cat(list(model.generate(ids, n, temperature=0.0)), dim=1)[0]]


def speculative_tokens(models: tuple[nn.Module, nn.Module, int, Any], ids: torch.Tensor, n: int) -> list[int]:
    from ember.models.speculative import speculative_ids

    target, draft, k, stats = models
    return list(speculative_ids(target, draft, ids, n, target.block_size, target.vocab_size, 0.0,
                                draft_tokens=k, stats=stats))


def hf_tokens(model: nn.Module, ids: torch.Tensor, n: int) -> list[int]:
    out = model.generate(ids, max_new_tokens=n, min_new_tokens=n, do_sample=False, eos_token_id=None,
                         pad_token_id=0, attention_mask=torch.ones_like(ids))
    return [int(t) for t in out[0, ids.shape[1]:]]


def timed(fn: Any, *args: Any) -> tuple[float, list[int]]:
    t0 = time.perf_counter()
    with torch.inference_mode():
        tokens = fn(*args)
    return time.perf_counter() - t0, tokens


def quantized_child(run: Path, given: str | None, mode: str) -> Path:
    """The quantized child of `run` in `mode`: `given`, or one `ember compress` writes now."""
    if given:
        return Path(given)
    from ember.compress.config import QuantizeStep
    from ember.compress.pipeline import compress

    out = Path(tempfile.mkdtemp(prefix="llm-quant-")) / mode
    [child] = compress(run, [QuantizeStep(mode=mode)], out, quiet=True, verbose=False)
    return child.path


def perplexity(run: Path, bundle: Any) -> float:
    return float(ember.evaluate(run, "test", data=bundle)["perplexity"])


def profile(variants: dict[str, Any], ids: torch.Tensor, n: int) -> None:
    """Where each variant's decoding time goes: the operations with the most self CPU time."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    for name, (fn, model) in variants.items():
        timed(fn, model, ids, 8)  # warm-up
        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            seconds, _ = timed(fn, model, ids, n)
        print(f"{name}: {n} tokens in {seconds:.2f} s (under the profiler)")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="runs/smollm2-135m-instruct", help="an imported Llama run")
    parser.add_argument("--int8", help="a quantized child of --run already written by ember compress (one --modes)")
    parser.add_argument("--modes", default="weight_only,weight_only_int4",
                        help="comma-separated quantize modes of the children: weight_only, weight_only_int4, dynamic")
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--prompt", default="The history of the printing press begins")
    parser.add_argument("--ppl-data", default="austen", help="'austen' (the LoRA recipe's test windows) or 'none'")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True,
                        help="also time each Ember variant with compiled decoding steps")
    parser.add_argument("--drafts", default="int8,int4",
                        help="speculative decoding of fp32 with these children as drafts (comma-separated "
                             "int8,int4; 'none' leaves it out)")
    parser.add_argument("--draft-tokens", type=int, default=8, help="tokens drafted per check")
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="instead of timing: torch.profiler's top operations over N decoded tokens per variant")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    run = Path(args.run).resolve()
    fp32 = load_run(run)
    tok = ember.loading.load_tokenizer(run)
    ids = torch.tensor([tok.encode(args.prompt)], dtype=torch.long)
    hf = hf_twin(fp32.model.eval(), fp32.config)
    modes = args.modes.split(",")
    children = {mode: quantized_child(run, args.int8, mode) for mode in modes}
    paths = {"fp32": run, **children}
    variants = {"ember_fp32": (ember_tokens, fp32.model.eval()),
                **{f"ember_{mode}": (ember_tokens, load_run(path).model.eval()) for mode, path in children.items()},
                "hf_fp32": (hf_tokens, hf)}
    if args.compile:
        from ember.models.compiled_decoding import compile_decoding

        for name, path in paths.items():  # a model of its own: compile_decoding marks the instance
            variants[f"ember_{name}_compiled"] = (ember_tokens, compile_decoding(load_run(path).model))
    from ember.models.speculative import SpeculativeStats

    bits = {"int8": "weight_only", "int4": "weight_only_int4"}
    drafts = [d for d in args.drafts.split(",") if d != "none" and bits[d] in paths]
    stats: dict[str, SpeculativeStats] = {}
    for d in drafts:
        for suffix in ("", "_compiled") if args.compile else ("",):
            name = f"ember_fp32_draft_{d}{suffix}"
            stats[name] = SpeculativeStats()
            target, draft = variants[f"ember_fp32{suffix}"][1], variants[f"ember_{bits[d]}{suffix}"][1]
            variants[name] = (speculative_tokens, (target, draft, args.draft_tokens, stats[name]))
    if args.profile:
        profile(variants, ids, args.profile)
        return
    best: dict[str, float] = {}
    tokens: dict[str, list[int]] = {}
    compile_seconds: dict[str, float] = {}
    for name, (fn, model) in variants.items():  # warm-up: allocator, packed weights, HF's caches, compiling
        compile_seconds[name] = round(timed(fn, model, ids, 8)[0], 1)
    for _ in range(args.repeats):
        for stat in stats.values():  # the figures of the last repeat only
            stat.drafted = stat.accepted = stat.target_passes = 0
        for name, (fn, model) in variants.items():
            seconds, tokens[name] = timed(fn, model, ids, args.tokens)
            best[name] = min(best.get(name, float("inf")), seconds)
    rate = {name: round(args.tokens / s, 2) for name, s in best.items()}
    def same_prefix(mode: str) -> int:  # greedy tokens equal to fp32's before the first difference
        pairs = zip(tokens[f"ember_{mode}"], tokens["ember_fp32"], strict=True)
        return next((i for i, (a, b) in enumerate(pairs) if a != b), args.tokens)

    result: dict[str, Any] = {
        "benchmark": "llm_generate", "run": str(run), "children": {m: str(p) for m, p in children.items()},
        "params": sum(p.numel() for p in fp32.model.parameters()), "prompt_tokens": ids.shape[1],
        "new_tokens": args.tokens, "threads": args.threads, "tokens_per_s": rate,
        "ember_vs_hf": round(best["hf_fp32"] / best["ember_fp32"], 2),
        "vs_ember_fp32": {m: round(best["ember_fp32"] / best[f"ember_{m}"], 2) for m in modes},
        "hf_tokens_identical": tokens["hf_fp32"] == tokens["ember_fp32"],
        "tokens_equal_to_fp32_before_first_difference": {m: same_prefix(m) for m in modes},
        "text_fp32": tok.decode(tokens["ember_fp32"])[:200],
        "warm_up_seconds": compile_seconds,
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
    if args.compile:
        result |= {
            "compiled_vs_hf": round(best["hf_fp32"] / best["ember_fp32_compiled"], 2),
            "compiled_hf_tokens_identical": tokens["hf_fp32"] == tokens["ember_fp32_compiled"],
            "compiled_vs_compiled_fp32": {m: round(best["ember_fp32_compiled"] / best[f"ember_{m}_compiled"], 2)
                                          for m in modes},
            "compiled_tokens_equal_to_eager": {name: tokens[f"ember_{name}_compiled"] == tokens[f"ember_{name}"]
                                               for name in paths}}
    if stats:
        result["speculative"] = {name: {
            "draft_tokens": args.draft_tokens, "vs_hf": round(best["hf_fp32"] / best[name], 2),
            "vs_fp32_alone": round(best[name.split("_draft_")[0] + ("_compiled" if "_compiled" in name else "")]
                                   / best[name], 2),  # the same fp32 model, eager or compiled, decoding alone
            "tokens_identical_to_hf": tokens[name] == tokens["hf_fp32"],
            "acceptance": round(stat.acceptance, 3), "target_passes": stat.target_passes}
            for name, stat in stats.items()}
    if args.ppl_data == "austen":
        cfg = ember.load_config("smollm2-lora-austen", [f"model.init_from={run}", f"data.tokenizer_from={run}"])
        from ember.data import build as build_data

        bundle = build_data(cfg.data, cfg.train.seed)
        before = perplexity(run, bundle)
        after = {m: perplexity(path, bundle) for m, path in children.items()}
        result |= {"ppl_windows": len(bundle.test), "ppl_fp32": round(before, 3),
                   "ppl": {m: round(v, 3) for m, v in after.items()},
                   "ppl_change_percent": {m: round(100 * (v / before - 1), 2) for m, v in after.items()}}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
