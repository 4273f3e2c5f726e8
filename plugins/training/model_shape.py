"""A causal LM's shape from its config alone (no weights): what the memory plan and the
``target_modules`` check need."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class LinearLayer:
    name: str  # qualified module name, e.g. model.layers.0.self_attn.q_proj
    in_features: int
    out_features: int


@dataclass(frozen=True)
class ModelShape:
    total_params: int
    hidden_size: int
    num_layers: int
    intermediate_size: int
    vocab_size: int
    num_attention_heads: int
    num_key_value_heads: int
    tied_embeddings: bool
    linear_layers: tuple[LinearLayer, ...] = field(repr=False)
    module_classes: frozenset[str] = field(default=frozenset(), repr=False)  # every module's class name
    decoder_layer_classes: tuple[str, ...] = ()  # the blocks the model keeps whole (its _no_split_modules)

    @property
    def embedding_params(self) -> int:
        return self.vocab_size * self.hidden_size

    def per_layer_linears(self) -> list[LinearLayer]:
        """The linear layers inside the decoder blocks (what ``all-linear`` LoRA targets)."""
        return [layer for layer in self.linear_layers if _is_in_decoder_block(layer.name)]


def _is_in_decoder_block(name: str) -> bool:
    return ".layers." in name or ".h." in name or ".blocks." in name


def build_meta_model(config):
    """Instantiate the architecture on the meta device: module names and shapes, no memory."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)


def model_shape(config) -> ModelShape:
    import torch

    model = build_meta_model(config)
    linears = tuple(
        LinearLayer(name, module.in_features, module.out_features)
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear)
    )
    total = sum(p.numel() for p in model.parameters())  # shared (tied) tensors count once
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    heads = int(getattr(text_config, "num_attention_heads", 1))
    classes = frozenset(type(module).__name__ for module in model.modules())
    return ModelShape(
        total_params=int(total),
        hidden_size=int(text_config.hidden_size),
        num_layers=int(text_config.num_hidden_layers),
        intermediate_size=int(getattr(text_config, "intermediate_size", 4 * text_config.hidden_size)),
        vocab_size=int(text_config.vocab_size),
        num_attention_heads=heads,
        num_key_value_heads=int(getattr(text_config, "num_key_value_heads", None) or heads),
        tied_embeddings=bool(getattr(text_config, "tie_word_embeddings", False)),
        linear_layers=linears,
        module_classes=classes,
        # _no_split_modules may name classes this model does not build (a vision tower left out).
        decoder_layer_classes=tuple(
            name for name in getattr(model, "_no_split_modules", None) or () if name in classes
        ),
    )


def lora_target_layers(shape: ModelShape, target_modules: str | list[str]) -> list[LinearLayer]:
    """The linear layers PEFT will wrap, matched the way PEFT matches (exact name or suffix)."""
    if target_modules == "all-linear":
        return shape.per_layer_linears()
    if isinstance(target_modules, str):
        targets = [target_modules]
    else:
        targets = list(target_modules)
    return [
        layer
        for layer in shape.linear_layers
        if any(layer.name == target or layer.name.endswith("." + target) for target in targets)
    ]


def unmatched_target_modules(shape: ModelShape, target_modules: str | list[str]) -> list[str]:
    """Names in ``target_modules`` that match no linear layer of the model."""
    if target_modules == "all-linear":
        return []
    targets = [target_modules] if isinstance(target_modules, str) else list(target_modules)
    return [target for target in targets if not lora_target_layers(shape, [target])]


def linear_suffixes(shape: ModelShape) -> list[str]:
    """The short names of the decoder's linear layers (q_proj, ...), for error messages."""
    return sorted({layer.name.rsplit(".", 1)[-1] for layer in shape.per_layer_linears()})
