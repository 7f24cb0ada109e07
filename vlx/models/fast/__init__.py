"""vlx's own fast paths, for the architectures on `ALLOWED` only.

- `attention`: `sdpa_grouped`, SDPA whose one-token decode steps attend per KV head, and the hooks (`kv_sink`,
  `tail_mask`) of the two cache-free paths below;
- `prefill`: `generate` after vlx's own prefill of right-padded prompts without a mask or cache object;
- `prefill_scoring`: label scores from one cache-free forward over the prompts and every answer's tokens;
- `compiling`: decoder blocks compiled for those cache-free calls, norms, MLPs and vision blocks, and the decode
  step with a static cache;
- `mrope`: label scores for M-RoPE models from one prefill and a cached continuation per label, at the model's own
  3-D positions, for the architectures on `MROPE_SCORING` (a list of its own: the paths above stay off for them).

Each builds positions from the attention mask as 1-D token positions: right for a model whose language model uses
plain RoPE on token positions, wrong for one that builds its own (Qwen2-VL-style M-RoPE takes 3-D positions over
time, height and width, and copies 2-D `position_ids` into all three planes when given them). So an architecture
is allowed only once tests/test_fast_paths.py shows, on its tiny model in float32, that each path gives the same
tokens and scores as plain transformers (`generate`, and a full forward per label); every other model runs plain
batched transformers code (`vlx.models.generation`, `vlx.models.label_scoring`).
"""

from __future__ import annotations

from typing import Any

from vlx import compat

# "<model_type>/<its language model's model_type>" -> why 1-D token positions are right for it. The language model
# is part of the key: PaliGemma 2's Gemma 2 caps its attention logits, which SDPA cannot. Adding an entry needs its
# tiny model in tests/test_fast_paths.py's FAST (one line there).
ALLOWED: dict[str, str] = {
    "llava_next/mistral": "Mistral-7B: RoPE over token positions",
    # (its prompts hold token_type_ids, so it prefills and scores through transformers: grouped decode attention and
    # compiling apply)
    "paligemma/gemma": "Gemma-2B: RoPE over token positions",
    "internvl/qwen2": "Qwen2: RoPE over token positions",
    "llava_onevision/qwen2": "Qwen2: RoPE over token positions",
    "idefics3/llama": "Llama 3: RoPE over token positions",
    # (like PaliGemma's, its prompts hold token_type_ids: images attend both ways, so transformers prefills them)
    "gemma3/gemma3_text": "Gemma 3: RoPE over token positions, sliding-window layers under SDPA's masks",
}

# the architectures of vlx's tiny-model matrix that the fast paths above are refused for, and why (each is checked in
# tests/test_fast_paths.py: every family of the matrix is on ALLOWED or here). They run plain batched transformers
# code, with the paths of their own that `vlx.models.fast.mrope` and `vision_windows` prove for Qwen-VL.
REFUSED: dict[str, str] = {
    "paligemma/gemma2": "Gemma 2 caps its attention logits, which SDPA cannot (transformers refuses SDPA for it)",
    "qwen2_5_vl/qwen2_5_vl_text": "M-RoPE: 3-D positions over time, height and width, which vlx's prefill and "
    "one-forward scoring build as 1-D token positions",
    "qwen3_vl/qwen3_vl_text": "M-RoPE: 3-D positions, as Qwen2.5-VL's",
}

# "<model_type>/<its language model's model_type>" -> why `mrope.score_on_a_cache` is right for it: positions from the
# model's own rope-index function, and a KV cache that crops back to the prompt (full attention in every layer).
# Adding an entry needs its model in tests/test_mrope_scoring.py's MODELS (one line there).
MROPE_SCORING: dict[str, str] = {
    "qwen2_vl/qwen2_vl_text": "Qwen2VLModel.get_rope_index places the tokens; full attention",
    "qwen2_5_vl/qwen2_5_vl_text": "Qwen2_5_VLModel.get_rope_index places the tokens; full attention",
    "qwen3_vl/qwen3_vl_text": "Qwen3VLModel.get_rope_index places the tokens (interleaved M-RoPE); DeepStack "
    "features enter at the image positions of the prompt only; full attention",
}


# architectures off ALLOWED whose `model.compile=true` decodes with transformers' static KV cache and compiled decode
# step (no vlx prefill, attention or compiled modules): transformers builds the 3-D positions itself, at the prefill
# from its rope index and at each step from the deltas it stored. Opt-in: each new prompt width or batch size
# compiles again, so it pays where they are few (docs/PERFORMANCE.md, "The families off the allow-list on a GPU").
# Backed by tests/test_fast_decode.py (tokens equal to plain `generate`).
STATIC_DECODE: dict[str, str] = {
    "qwen2_5_vl/qwen2_5_vl_text": "transformers' static cache; 3-D positions built by the model",
    "qwen3_vl/qwen3_vl_text": "transformers' static cache; 3-D positions built by the model",
}

# architectures off ALLOWED whose decoder blocks still compile for fine-tuning (`finetune.compile`): the blocks take
# their rotary embeddings from the model, which builds them (3-D for M-RoPE) outside the compiled graph. Each is
# backed by tests/test_finetune.py's compiled-training equality test, as every entry of ALLOWED is.
COMPILED_TRAINING: dict[str, str] = {
    "qwen2_5_vl/qwen2_5_vl_text": "M-RoPE positions built by the model, outside the blocks",
    "qwen3_vl/qwen3_vl_text": "M-RoPE positions built by the model, outside the blocks",
}


def compiles_in_training(model: Any) -> bool:
    """Whether `finetune.compile` compiles this model's blocks (ALLOWED or COMPILED_TRAINING)."""
    name = model_architecture(model)
    return name in ALLOWED or name in COMPILED_TRAINING


def architecture(config: Any) -> str:
    """A config's "<model_type>/<language model's model_type>" (`llava_next/mistral`, `qwen2_5_vl/qwen2_5_vl_text`)."""
    text = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
    return f"{getattr(config, 'model_type', None)}/{getattr(text, 'model_type', None)}"


def model_architecture(model: Any) -> str | None:
    """`architecture` of a transformers model or of the one inside a peft model."""
    base = compat.base_model(model)
    config = getattr(base, "config", None)
    return architecture(config) if config is not None else None


def allowed(model_or_architecture: Any) -> bool:
    """Whether vlx's fast paths are proven for this model (or `architecture` string)."""
    name = model_or_architecture
    if name is not None and not isinstance(name, str):
        name = model_architecture(name)
    return name in ALLOWED
