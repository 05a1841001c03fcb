"""Tiny Hugging Face checkpoints built locally (random weights, no download) for the tests."""

from __future__ import annotations

from pathlib import Path

_TEXT = ("def read(path):\n    with open(path) as f:\n        return f.read()\n"
         "import json, os\nclass Handler(object):\n    def handle(self, request): return None\n") * 20


def tiny_bert(folder: Path) -> Path:
    """A 2-layer BERT with a WordPiece tokenizer fitted on a little code: config, safetensors, tokenizer."""
    import torch
    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )
    from transformers import BertConfig, BertModel

    if (folder / "config.json").is_file():
        return folder
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator([_TEXT], trainers.WordPieceTrainer(vocab_size=200, special_tokens=specials,
                                                               show_progress=False))
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))])
    tok.enable_padding(pad_id=0, pad_token="[PAD]")
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=tok.get_vocab_size(), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=128, pad_token_id=0)
    BertModel(cfg).save_pretrained(folder, safe_serialization=True)
    return folder


def tiny_gpt2(folder: Path) -> Path:
    """A 2-layer GPT-2 (random weights) with a byte-level BPE tokenizer: config, safetensors, tokenizer."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel

    if (folder / "config.json").is_file():
        return folder
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator([_TEXT], trainers.BpeTrainer(vocab_size=300, show_progress=False,
                                                         initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=tok.get_vocab_size(), n_positions=64, n_embd=32, n_layer=2, n_head=2)
    GPT2LMHeadModel(cfg).save_pretrained(folder, safe_serialization=True)
    return folder


def recipe_sources(recipe: str, tmp_path: Path) -> list[str]:
    """Overrides pointing the transfer recipes at tiny local sources (encoder dir, base runs)."""
    import ember

    if recipe in ("stdlib-modules-minilm", "stdlib-modules-minilm-lora", "rotten-tomatoes-minilm",
                  "rotten-tomatoes-minilm-lora", "newsgroups-minilm"):
        bert = tiny_bert(tmp_path / "bert")
        return [f"model.path={bert}", f"data.tokenizer_from={bert}", "data.max_len=32"]
    quiet = [f"log.runs_dir={tmp_path / 'base'}", "log.report=false", "train.max_steps=2", "train.epochs=1"]
    if recipe == "digits-cnn-transfer":
        base = ember.train("digits-cnn-0to4", [*quiet, "model.channels=[4,8]", "model.hidden=[16]"], verbose=False)
        return [f"model.init_from={base.path}", "model.channels=[4,8]", "model.hidden=[16]"]
    if recipe == "stdlib-char-gpt-lora":
        tiny = ["data.block_size=32", "model.n_layer=1", "model.n_embd=32"]
        base = ember.train("stdlib-char-gpt", [*quiet, *tiny, "data.max_chars=120000"], verbose=False)
        notes = tmp_path / "notes"  # several files: the splits are made by file
        notes.mkdir()
        for i in range(10):
            (notes / f"note{i}.txt").write_text(_TEXT.replace("path", f"path{i}"))
        return [*tiny, f"model.init_from={base.path}", f"data.tokenizer_from={base.path}", f"data.paths=[{notes}]"]
    if recipe == "smollm2-lora-austen":  # a tiny imported Llama and six tiny "novels"
        from ember.cli import main
        from tests.data.test_rdata import tiny_austen

        base = tmp_path / "llama-run"
        assert main(["import", str(tiny_llama(tmp_path / "llama-hf")), "--out", str(base)]) == 0
        sizes = ["model.n_layer=2", "model.n_head=4", "model.n_kv_head=2", "model.n_embd=64",
                 "model.intermediate_size=96", "model.block_size=64", "model.rope_theta=5000.0"]
        return [*sizes, f"model.init_from={base}", f"data.tokenizer_from={base}", "data.block_size=32",
                f"data.root={tiny_austen(tmp_path / 'austen')}", f"data.token_cache={tmp_path / 'tokens'}"]
    if recipe == "smollm2-chat-lora":
        import json

        base = tiny_chat_llama(tmp_path / "chat-base")
        data = tmp_path / "chat.jsonl"
        data.write_text("".join(json.dumps(c) + "\n" for c in chat_lines(40)))
        return [*TINY_CHAT_LLAMA, f"model.init_from={base}", f"data.tokenizer_from={base}", f"data.paths=[{data}]"]
    return []


def tiny_llama(folder: Path, tie: bool = False) -> Path:
    """A 2-layer Llama (random weights, 4 heads sharing 2 KV heads) with a byte-level BPE tokenizer."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM

    if (folder / "config.json").is_file():
        return folder
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator([_TEXT], trainers.BpeTrainer(vocab_size=300, show_progress=False,
                                                         special_tokens=["<|endoftext|>"],
                                                         initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    template = "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}\n{% endfor %}<|assistant|>"
    (folder / "tokenizer_config.json").write_text(f'{{"chat_template": {template!r}}}'.replace("'", '"'))
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=tok.get_vocab_size(), hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                      rope_theta=5000.0, rms_norm_eps=1e-5, tie_word_embeddings=tie,
                      bos_token_id=0, eos_token_id=0)
    model = LlamaForCausalLM(cfg)
    with torch.no_grad():  # RMSNorm weights start at 1: perturb them so the mapping is really tested
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(torch.randn_like(p) * 0.1)
    model.save_pretrained(folder, safe_serialization=True)
    return folder


CHATML = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
          "{{ '<|im_start|>system\nYou are a tiny assistant<|im_end|>\n' }}{% endif %}"
          "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
# The tiny chat Llama's sizes, as overrides of the smollm2-chat-lora recipe.
TINY_CHAT_LLAMA = ["model.n_layer=2", "model.n_head=4", "model.n_kv_head=2", "model.n_embd=32",
                   "model.intermediate_size=64", "model.block_size=128", "model.tie_embeddings=true",
                   "data.max_length=128"]


def tiny_chat_llama(out: Path) -> Path:
    """An Ember Llama run (random weights, 2 layers) with a BPE tokenizer and a ChatML chat template.

    Written as `ember import` writes one, without transformers: <|im_start|>/<|im_end|> are
    special tokens, as in SmolLM2.
    """
    import json

    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from ember.models.llama import Llama, LlamaConfig
    from ember.transfer.llama_import import write_llama_run

    if (out / "config.yaml").is_file():
        return out
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    text = _TEXT + "What is the capital of France? Paris. Berlin, Rome, Madrid; answer country\n" * 20
    tok.train_from_iterator([text], trainers.BpeTrainer(
        vocab_size=300, show_progress=False, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    sizes = {"name": "llama", "n_layer": 2, "n_head": 4, "n_kv_head": 2, "n_embd": 32, "intermediate_size": 64,
             "block_size": 128, "tie_embeddings": True}
    vocab = tok.get_vocab_size()
    torch.manual_seed(0)
    state = Llama(LlamaConfig(**sizes), vocab, 128).state_dict()
    # Wider (tied) embeddings, as a trained model has: the frozen head can then give confident logits.
    state["embed_tokens.weight"] = state["embed_tokens.weight"] * 8
    tokenizer_json = json.dumps({"kind": "bpe", "tokenizer": json.loads(tok.to_str())})
    write_llama_run(sizes, vocab, state, tokenizer_json, CHATML, "tiny chat llama", "llama-import", out, out.parent)
    return out


def chat_lines(n: int) -> list[dict]:
    """`n` small conversations: a question and an answer in a fixed format, some with a system turn."""
    cities = ["Paris", "Berlin", "Rome", "Madrid", "Lisbon", "Vienna", "Oslo", "Athens"]
    out = []
    for i in range(n):
        city = cities[i % len(cities)]
        messages = [{"role": "user", "content": f"What is the capital number {i}?"},
                    {"role": "assistant", "content": f"answer: {city} {i}"}]
        if i % 3 == 0:
            messages = [{"role": "system", "content": "Answer briefly."}, *messages,
                        {"role": "user", "content": "And again?"}, {"role": "assistant", "content": f"again {city}"}]
        out.append({"messages": messages})
    return out
