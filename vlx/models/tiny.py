"""Tiny random-weight checkpoints of the real VLM architectures, built locally.

Tests and smoke runs need models that load through the exact same code path as the real hub checkpoints
(``llava-hf/llava-v1.6-mistral-7b-hf`` and ``google/paligemma-3b-mix-448``), i.e. ``AutoProcessor.from_pretrained``
plus ``<Arch>ForConditionalGeneration.from_pretrained``, without network access and in well under a second of CPU
time per forward pass. This module builds such checkpoints: same model classes, same processor classes, same
special-token conventions and chat template, but a byte-level BPE tokenizer trained on a small in-module corpus and
about a hundred thousand random float32 parameters (under 0.5 MB of weights).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import torch
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    CLIPVisionConfig,
    GemmaConfig,
    LlavaNextConfig,
    LlavaNextForConditionalGeneration,
    LlavaNextImageProcessorPil,
    LlavaNextProcessor,
    MistralConfig,
    PaliGemmaConfig,
    PaliGemmaForConditionalGeneration,
    PaliGemmaProcessor,
    PreTrainedTokenizerFast,
    SiglipImageProcessorPil,
    SiglipVisionConfig,
)

try:  # POSIX only; without it concurrent builders still never see a half-written model, they just both build.
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger(__name__)

TINY_ARCHITECTURES = ("llava_next", "paligemma")

# Written last by a build; its presence (with matching arch/seed) marks a directory as a complete tiny model.
MARKER_FILE = "tiny_model.json"
# Bump when the recipe changes so that cached tiny models get rebuilt by `ensure_tiny_model`.
_RECIPE_VERSION = 4
_REQUIRED_FILES = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "processor_config.json",
    MARKER_FILE,
)

_BPE_VOCAB_SIZE = 1000
# Between two failure modes, measured on the shapes demo (LoRA r64, 3000 items, 5 epochs, the first recipe):
# - HF's default 0.02 leaves the frozen (tied) embeddings so small that logits stay near uniform: LoRA's loss stalls
#   at ~6.5;
# - 0.5 saturates attention softmaxes (q.k/sqrt(d) has std ~16), so LoRA cannot learn to read the image: entailment
#   vs contradiction stayed at chance (test accuracy 0.67).
# 0.2 learns, and random outputs still depend visibly on the image and prompt.
_INIT_RANGE = 0.2

# The project's prompts, verbatim, so that the BPE merges cover them (short token sequences keep tests fast).
NLI_PROMPT = (
    "Answer with 'entailment', 'contradiction' or 'neutral' if the hypothesis '{hypothesis}' follows the image, "
    "contradicts it, or is neutral to it. Also give a 1-line explanation for your answer."
)
HATE_PROMPT = (
    "Is this image offensive? If it is offensive, give a single line explanation. "
    "Otherwise, simply state that it is 'not offensive'."
)
LABELS = ("entailment", "contradiction", "neutral", "offensive", "not offensive")
COLOURS = ("red", "green", "blue", "yellow", "purple", "orange", "black", "white")
SHAPES = ("circle", "square", "triangle", "star")

# Generic English for the generic sentences: "{subject} {action} {place}." over these lists.
_SUBJECTS = (
    "A man",
    "A woman",
    "An old lady",
    "A young boy",
    "A little girl",
    "Two friends",
    "A group of people",
    "The children",
    "A brown dog",
    "A small cat",
    "A police officer",
    "A teacher",
)
_ACTIONS = (
    "is walking",
    "is running",
    "is sitting",
    "is standing",
    "is sleeping",
    "is eating lunch",
    "is reading a newspaper",
    "is riding a bicycle",
    "is playing football",
    "is waiting for the bus",
    "is holding an umbrella",
    "is laughing",
    "is talking on the phone",
    "is taking a photograph",
)
_PLACES = (
    "in the park",
    "on the beach",
    "down a busy street",
    "next to the station",
    "in a crowded market",
    "at the kitchen table",
    "near the river",
    "outside a small cafe",
    "on the snowy mountain",
    "in front of the museum",
    "under a tall tree",
)
_THINGS = (
    "wooden chair",
    "broken window",
    "delicious sandwich",
    "colourful painting",
    "crowded stadium",
    "quiet library",
    "yellow taxi",
    "heavy suitcase",
    "bright computer screen",
    "beautiful garden",
    "dangerous motorcycle",
    "famous politician",
    "angry customer",
    "smiling grandmother",
    "expensive restaurant",
    "wedding celebration",
    "birthday cake with candles",
    "newspaper headline",
    "television studio",
    "football supporters",
    "protest against the government",
    "soldiers marching through the village",
    "hospital corridor",
    "airport terminal",
)
_MEME_SENTENCES = (
    "This meme makes fun of a group of people because of their religion.",
    "The meme shows a cat with a funny caption about Monday mornings.",
    "The text in the meme is rude, hateful and insulting.",
    "The image is a harmless joke about cats and dogs.",
    "Nothing in the image is offensive or hateful.",
    "The caption attacks women and uses a racist slur.",
    "It is a friendly cartoon about cooking dinner with family.",
    "The meme compares politicians to animals, which some readers find insulting.",
)


def _corpus() -> list[str]:
    """Builds the BPE training corpus (a few hundred sentences) from the project's vocabulary.

    Returns:
        The sentences, in a fixed order (the BPE trainer is deterministic given identical input).
    """
    pairs = list(itertools.product(COLOURS, SHAPES))
    shapes = []
    for (c1, s1), (c2, s2) in zip(pairs, pairs[7:] + pairs[:7], strict=True):
        shapes += [
            f"There is a {c1} {s1}.",
            f"The picture shows a {c1} {s1}, not a {c2} {s2}.",
            f"You cannot tell from the picture whether the {c1} {s1} is made of wood.",
            f"The image shows a {c2} {s2} next to a {c1} {s1}.",
        ]
    # Cycle through the lists with co-prime strides: every word appears, ~150 sentences instead of ~1800.
    generic = [
        f"{_SUBJECTS[i % len(_SUBJECTS)]} {_ACTIONS[i % len(_ACTIONS)]} {_PLACES[i % len(_PLACES)]}."
        for i in range(len(_SUBJECTS) * len(_PLACES))
    ]
    generic += [f"In the background there is a {thing}." for thing in _THINGS] + list(_MEME_SENTENCES)
    nli = [NLI_PROMPT.format(hypothesis=h) for h in shapes[::4] + generic[::8]]
    answers = [f"{label}\n{sentence}" for label, sentence in zip(itertools.cycle(LABELS), shapes + generic)]
    task_prefixes = [f"{prefix} {sentence}" for prefix in ("answer en", "explain en") for sentence in generic[::4]]
    return nli + [HATE_PROMPT] * 8 + list(LABELS) * 8 + answers + task_prefixes


def _train_tokenizer(special_tokens: list[str], plain_tokens: tuple[str, ...] = ()) -> Tokenizer:
    """Trains a byte-level BPE tokenizer on the in-module corpus.

    Args:
        special_tokens: Special tokens; they get the first ids, in this order, are never split and are dropped by
            ``decode(..., skip_special_tokens=True)``.
        plain_tokens: Tokens that are never split but decode as ordinary text; they get the last ids.

    Returns:
        The trained `tokenizers.Tokenizer` (no post-processor: transformers adds bos itself).
    """
    tok = Tokenizer(models.BPE())
    # Byte-level: any text (unicode, emojis in memes) encodes without an unknown token.
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=_BPE_VOCAB_SIZE,
        special_tokens=special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in plain_tokens])
    return tok


# The chat template of llava-hf/llava-v1.6-mistral-7b-hf (chat_template.json), verbatim: "[INST] <image>\n{text}
# [/INST]" per user turn, " {answer}</s> " per assistant turn. Like the real one it needs no generation prompt:
# the prompt already ends with "[/INST]", so `add_generation_prompt` does not change the string.
LLAVA_NEXT_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'system' %}"
    "{{ '<<SYS>>\\n' + message['content'][0]['text'] + '\\n<</SYS>>\\n\\n' }}"
    "{% elif message['role'] == 'user' %}{{ '[INST] ' }}"
    "{# Render all images first #}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\\n' }}{% endfor %}"
    "{# Render all text next #}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] }}{% endfor %}"
    "{{' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' ' + message['content'][0]['text'] + '</s> '}}"
    "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}"
)


def _build_llava_next(out_dir: Path) -> None:
    """Writes a tiny LLaVA-NeXT (CLIP vision + Mistral text) model and its processor to `out_dir`.

    Args:
        out_dir: Existing directory to write into. Torch must already be seeded.
    """
    # Real Mistral ids: <unk>=0, <s>=1, </s>=2; llava-hf appended <image> and <pad>. [INST]/[/INST] are plain text
    # there; here they are single non-special tokens: short prompts, and they survive skip_special_tokens as there.
    tok = _train_tokenizer(["<unk>", "<s>", "</s>", "<pad>", "<image>"], plain_tokens=("[INST]", "[/INST]"))
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        image_token="<image>",  # gives `tokenizer.image_token_id`, which the processors read
        add_bos_token=True,  # like Mistral: "<s>" is prepended to every encoded prompt
        add_eos_token=False,
        padding_side="left",
    )
    image_processor = LlavaNextImageProcessorPil(
        size={"shortest_edge": 28},
        crop_size={"height": 28, "width": 28},
        # anyres tiles are multiples of the 28px base resolution, like [[336, 672], ...] for the real 336px one
        image_grid_pinpoints=[[28, 56], [56, 28], [56, 56]],
    )
    processor = LlavaNextProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=14,
        vision_feature_select_strategy="default",
        chat_template=LLAVA_NEXT_CHAT_TEMPLATE,
        num_additional_image_tokens=1,  # the CLIP CLS token, dropped again by the "default" strategy
    )
    vocab_size = len(tokenizer)
    vision_config = CLIPVisionConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=28,
        patch_size=14,
        projection_dim=64,
        initializer_range=_INIT_RANGE,
    )
    text_config = MistralConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,  # grouped-query attention like Mistral-7B (32 heads, 8 kv heads)
        head_dim=16,
        max_position_embeddings=32768,
        sliding_window=None,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        initializer_range=_INIT_RANGE,
    )
    config = LlavaNextConfig(
        vision_config=vision_config,
        text_config=text_config,
        image_token_index=tokenizer.image_token_id,
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,  # penultimate CLIP layer, as in the real checkpoint
        image_grid_pinpoints=image_processor.image_grid_pinpoints,
        image_seq_length=(28 // 14) ** 2,
        tie_word_embeddings=False,
    )
    model = LlavaNextForConditionalGeneration(config)
    _set_generation_ids(model, tokenizer)
    model.save_pretrained(out_dir, safe_serialization=True)
    processor.save_pretrained(out_dir)


def _build_paligemma(out_dir: Path) -> None:
    """Writes a tiny PaliGemma (SigLIP vision + Gemma text) model and its processor to `out_dir`.

    Args:
        out_dir: Existing directory to write into. Torch must already be seeded.
    """
    # Real Gemma ids: <pad>=0, <eos>=1, <bos>=2, <unk>=3; <image> is a special token of the PaliGemma tokenizer.
    tok = _train_tokenizer(["<pad>", "<eos>", "<bos>", "<unk>", "<image>"])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<bos>",
        eos_token="<eos>",
        unk_token="<unk>",
        pad_token="<pad>",
        image_token="<image>",
        add_bos_token=True,  # as in Gemma; PaliGemmaProcessor turns it off and inserts <bos> after the image tokens
        add_eos_token=False,
        padding_side="left",
    )
    image_size, patch_size = 56, 14  # 4x4 = 16 image tokens: small shapes stay visible, sequences stay short
    image_seq_length = (image_size // patch_size) ** 2
    image_processor = SiglipImageProcessorPil(
        size={"height": image_size, "width": image_size},
        image_seq_length=image_seq_length,  # PaliGemmaProcessor refuses an image processor without it
    )
    # Built before the model config: the processor adds the 1024 <locXXXX> and 128 <segXXX> tokens to the
    # tokenizer, and the embedding matrix has to cover them (the real vocabulary already contains them).
    processor = PaliGemmaProcessor(image_processor=image_processor, tokenizer=tokenizer)
    vocab_size = len(tokenizer)
    width = 64  # bitsandbytes' 4-bit blocks are 64 wide: narrower layers cannot be quantized on CPU
    vision_config = SiglipVisionConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=image_size,
        patch_size=patch_size,
        projection_dim=width,
        vision_use_head=False,
    )
    # Wide enough for the demo to learn on any machine (docs/PERFORMANCE.md, "The demo on a CPU"). The label is the
    # answer's first token: before any explanation is written, that position must compare what the picture shows
    # with what the hypothesis says. A random base has no such comparison; LoRA builds it after a plateau, and with
    # the 2x MLP and the two heads on one key/value head this model first had (multi-query, as paligemma-3b), the
    # plateau lasted from 150 to over 470 steps, by the seed and by the CPU's rounding. With a 4x MLP and four heads
    # on two key/value heads it ended within ~300 steps for every seed tried.
    text_config = GemmaConfig(
        vocab_size=vocab_size,
        hidden_size=width,
        intermediate_size=4 * width,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,  # grouped-query attention: transformers' code path for paligemma-3b's 8 heads on 1
        # Gemma's default is 256, far too wide; 2 x 16 keeps k/v projections a multiple of bitsandbytes' 32-row
        # packing, so the tiny model quantizes to 4 bits on CPU
        head_dim=16,
        max_position_embeddings=8192,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        initializer_range=_INIT_RANGE,
    )
    config = PaliGemmaConfig(
        vision_config=vision_config,
        text_config=text_config,
        image_token_index=tokenizer.image_token_id,
        vocab_size=vocab_size,
        projection_dim=width,
        hidden_size=width,
    )
    model = PaliGemmaForConditionalGeneration(config)
    _set_generation_ids(model, tokenizer)
    model.save_pretrained(out_dir, safe_serialization=True)
    processor.save_pretrained(out_dir)


def _set_generation_ids(model: torch.nn.Module, tokenizer: PreTrainedTokenizerFast) -> None:
    """Sets bos/eos/pad ids on the generation config, so batched `generate` pads without warnings.

    Args:
        model: The freshly initialised model.
        tokenizer: Its tokenizer.
    """
    gen = model.generation_config
    gen.bos_token_id = tokenizer.bos_token_id
    gen.eos_token_id = tokenizer.eos_token_id
    gen.pad_token_id = tokenizer.pad_token_id


_BUILDERS = {"llava_next": _build_llava_next, "paligemma": _build_paligemma}


def _check_arch(arch: str) -> None:
    if arch not in TINY_ARCHITECTURES:
        raise ValueError(f"Unknown tiny architecture {arch!r}; allowed: {', '.join(TINY_ARCHITECTURES)}")


def build_tiny_model(arch: str, out_dir: str | Path, seed: int = 0) -> Path:
    """Builds a tiny random-weight model with tokenizer and processor and saves it to `out_dir`.

    The result loads with ``AutoProcessor.from_pretrained(out_dir)`` and
    ``LlavaNextForConditionalGeneration.from_pretrained(out_dir)`` /
    ``PaliGemmaForConditionalGeneration.from_pretrained(out_dir)``. Same `arch` and `seed` give byte-identical
    weights. Existing files in `out_dir` are overwritten; use `ensure_tiny_model` for an atomic, cached build.

    Args:
        arch: One of `TINY_ARCHITECTURES`.
        out_dir: Directory to write (created if missing).
        seed: Seed for the random weights.

    Returns:
        `out_dir` as a `Path`.

    Raises:
        ValueError: If `arch` is unknown.
    """
    _check_arch(arch)
    out_dir = Path(out_dir)
    logger.info("building tiny %s model (seed %d) into %s", arch, seed, out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # A fork keeps the caller's global RNG state untouched; seeding it makes the init reproducible.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        _BUILDERS[arch](out_dir)
    # Last, so that an interrupted build is never mistaken for a complete one.
    marker = {"arch": arch, "seed": seed, "recipe_version": _RECIPE_VERSION}
    (out_dir / MARKER_FILE).write_text(json.dumps(marker, indent=2) + "\n")
    return out_dir


def _is_complete(out_dir: Path, arch: str, seed: int) -> bool:
    """Tells whether `out_dir` holds a finished tiny model of this arch, seed and recipe."""
    if not all((out_dir / name).is_file() for name in _REQUIRED_FILES):
        return False
    try:
        marker = json.loads((out_dir / MARKER_FILE).read_text())
    except (OSError, ValueError):
        return False
    return marker == {"arch": arch, "seed": seed, "recipe_version": _RECIPE_VERSION}


def _check_is_ours(out_dir: Path) -> None:
    """Refuses to replace a folder that holds files and no marker: it is not a tiny model this factory made (nor a
    build of it cut short, which has the marker's folder name only as a temporary sibling)."""
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / MARKER_FILE).is_file():
        from vlx.errors import ConfigError

        raise ConfigError(
            f"{out_dir} holds files that vlx's tiny-model factory did not make, so it will not build a tiny model "
            f"there; move them away, or set paths.cache_dir to another folder"
        )


@contextlib.contextmanager
def _build_lock(out_dir: Path) -> Iterator[None]:
    """Holds an exclusive lock on a sibling lock file, so only one process builds or replaces `out_dir`."""
    if fcntl is None:  # pragma: no cover
        yield
        return
    lock_path = out_dir.parent / f".{out_dir.name}.lock"
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released by the OS too if this process is killed
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_tiny_model(arch: str, out_dir: str | Path, seed: int = 0) -> Path:
    """Returns `out_dir` holding a complete tiny model, building it only if it is missing or incomplete.

    The model is built in a temporary sibling directory and renamed into place, so a killed build never leaves a
    half-written model at `out_dir`. Concurrent callers serialise on a lock file: the second one finds the first
    one's finished model and returns it without building.

    Args:
        arch: One of `TINY_ARCHITECTURES`.
        out_dir: Cache directory of the model.
        seed: Seed for the random weights; a cached model built with another seed is rebuilt.

    Returns:
        `out_dir` as a `Path`.

    Raises:
        ValueError: If `arch` is unknown.
    """
    _check_arch(arch)
    out_dir = Path(out_dir)
    if _is_complete(out_dir, arch, seed):  # fast path, no lock needed: complete dirs only ever appear by rename
        return out_dir
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with _build_lock(out_dir):
        if _is_complete(out_dir, arch, seed):  # another process finished it while we waited for the lock
            return out_dir
        # Under the lock nobody else is building, so temp dirs of killed builds can go.
        for stale in out_dir.parent.glob(f".{out_dir.name}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        _check_is_ours(out_dir)
        tmp_dir = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
        tmp_dir.chmod(0o755)  # mkdtemp makes it private; the renamed cache dir should be readable like any other
        try:
            build_tiny_model(arch, tmp_dir, seed)
            if out_dir.exists():  # incomplete, or another arch/seed: move aside first, rename needs an empty target
                trash = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
                os.replace(out_dir, trash / "old")
                shutil.rmtree(trash, ignore_errors=True)
            os.replace(tmp_dir, out_dir)
        finally:
            shutil.rmtree(tmp_dir, ignore_errors=True)
    return out_dir
