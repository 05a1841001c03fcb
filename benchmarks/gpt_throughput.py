"""GPT throughput: training tokens/s and MFU, eager vs torch.compile, fp32 vs bf16, and
KV-cache generation speed against uncached generation — all in one process.

MFU = achieved FLOP/s / peak FLOP/s. Model FLOPs per token = 6N + 12·L·H·Q·T (the PaLM
formula, Chowdhery et al. 2022, appendix B; N = parameters without position embeddings).
The peak is measured here, by timing a large matmul in the same dtype on the same device.

    python benchmarks/gpt_throughput.py            # CPU, a few minutes on 2 cores
    python benchmarks/gpt_throughput.py --device cuda --n-layer 12 --n-embd 768 --block 1024
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

from ember.models.gpt import GPT, GPTConfig, flops_per_token


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def peak_flops(device: torch.device, dtype: torch.dtype, n: int) -> float:
    """FLOP/s of an n x n matmul, best of a few runs: the practical dense peak here."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    best = 0.0
    for _ in range(5):
        _sync(device)
        t = time.perf_counter()
        a @ b
        _sync(device)
        best = max(best, 2 * n**3 / (time.perf_counter() - t))
    return best


def train_tokens_per_s(model: GPT, device: torch.device, batch: int, block: int, steps: int,
                       precision: str, compile_model: bool) -> float:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    fwd = torch.compile(model) if compile_model else model
    x = torch.randint(0, model.vocab_size, (batch, block), device=device)
    y = torch.randint(0, model.vocab_size, (batch, block), device=device)
    dtype = torch.bfloat16 if precision == "bf16" else None

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype is not None):
            logits = fwd(x)
        loss = F.cross_entropy(logits.float().view(-1, logits.shape[-1]), y.view(-1))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(2):  # warm-up (and compilation)
        step()
    _sync(device)
    t = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return steps * batch * block / (time.perf_counter() - t)


@torch.no_grad()
def generate_tokens_per_s(model: GPT, device: torch.device, prompt_len: int, new_tokens: int,
                          use_cache: bool) -> float:
    model.eval()
    prompt = torch.randint(0, model.vocab_size, (1, prompt_len), device=device)
    times = []
    for _ in range(3):
        _sync(device)
        t = time.perf_counter()
        for _ in model.generate(prompt, new_tokens, temperature=0, use_cache=use_cache):
            pass
        _sync(device)
        times.append(time.perf_counter() - t)
    model.train()
    return new_tokens / statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--n-layer", type=int, default=4)
    p.add_argument("--n-head", type=int, default=4)
    p.add_argument("--n-embd", type=int, default=192)
    p.add_argument("--block", type=int, default=128)
    p.add_argument("--vocab", type=int, default=100)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--gen-tokens", type=int, default=96)
    p.add_argument("--no-compile", action="store_true")
    p.add_argument("--matmul", type=int, default=2048, help="size of the peak-FLOPs matmul")
    args = p.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    cfg = GPTConfig(n_layer=args.n_layer, n_head=args.n_head, n_embd=args.n_embd)
    model = GPT(cfg, args.vocab, args.block).to(device)
    fpt = flops_per_token(model, args.block)
    result: dict = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu x{torch.get_num_threads()} threads",
        "torch": torch.__version__,
        "model": {"params": sum(q.numel() for q in model.parameters()), "n_layer": args.n_layer,
                  "n_head": args.n_head, "n_embd": args.n_embd, "block_size": args.block, "vocab": args.vocab},
        "flops_per_token": fpt,
        "flops_formula": "6N + 12*L*H*Q*T (PaLM appendix B)",
        "train": {},
    }
    peaks = {"fp32": peak_flops(device, torch.float32, args.matmul),
             "bf16": peak_flops(device, torch.bfloat16, args.matmul)}
    result["peak_flops"] = {k: round(v) for k, v in peaks.items()}
    modes = [(prec, comp) for prec in ("fp32", "bf16") for comp in ((False, True) if not args.no_compile else (False,))]
    for precision, compiled in modes:
        torch.manual_seed(0)
        fresh = GPT(cfg, args.vocab, args.block).to(device)
        try:
            tps = train_tokens_per_s(fresh, device, args.batch, args.block, args.steps, precision, compiled)
        except Exception as exc:  # noqa: BLE001  (a backend that cannot compile here is a result too)
            result["train"][f"{precision}_{'compile' if compiled else 'eager'}"] = {"error": str(exc).splitlines()[0]}
            continue
        result["train"][f"{precision}_{'compile' if compiled else 'eager'}"] = {
            "tokens_per_s": round(tps, 1), "mfu": round(tps * fpt / peaks[precision], 4)}
    cached = generate_tokens_per_s(model, device, 16, args.gen_tokens, True)
    uncached = generate_tokens_per_s(model, device, 16, args.gen_tokens, False)
    result["generate"] = {"cached_tokens_per_s": round(cached, 1), "uncached_tokens_per_s": round(uncached, 1),
                          "kv_cache_speedup": round(cached / uncached, 3), "new_tokens": args.gen_tokens}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
