"""What every tiny model shares: the prompts' vocabulary, a byte-level BPE tokenizer trained on it, the weights'
init range and the generation config's ids."""

from __future__ import annotations

import itertools

import torch
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedModel, PreTrainedTokenizerFast

BPE_VOCAB_SIZE = 1000
# Between two failure modes of LoRA on the shapes demo (docs/PERFORMANCE.md, "The tiny models' init range"):
# - HF's default 0.02 leaves the frozen (tied) embeddings so small that logits stay near uniform: LoRA's loss stalls;
# - 0.5 saturates attention softmaxes (q.k/sqrt(d) has std ~16), so LoRA cannot learn to read the image: entailment
#   vs contradiction stays at chance.
# 0.2 learns, and random outputs still depend visibly on the image and prompt.
INIT_RANGE = 0.2

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


def train_tokenizer(special_tokens: list[str], plain_tokens: tuple[str, ...] = ()) -> Tokenizer:
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
        vocab_size=BPE_VOCAB_SIZE,
        special_tokens=special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in plain_tokens])
    return tok


def token_id(tokenizer: PreTrainedTokenizerFast, token: str) -> int:
    """The id of one token of the tokenizer's vocabulary (`convert_tokens_to_ids` of a single token)."""
    found = tokenizer.convert_tokens_to_ids(token)
    if not isinstance(found, int):
        raise ValueError(f"{token!r} is not one token of the tokenizer: {found!r}")
    return found


def set_generation_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerFast) -> None:
    """Sets bos/eos/pad ids on the generation config, so batched `generate` pads without warnings.

    Args:
        model: The freshly initialised model.
        tokenizer: Its tokenizer.
    """
    gen = model.generation_config
    gen.bos_token_id = tokenizer.bos_token_id
    gen.eos_token_id = tokenizer.eos_token_id
    gen.pad_token_id = tokenizer.pad_token_id


def damp_residual_echo(model: torch.nn.Module, weight: float = 3.0) -> None:
    """Scales up the norms after each attention and MLP block of a Gemma 2 / Gemma 3 model (weight w: scale 1 + w).

    Random, with those norms at scale 1, embeddings scaled by sqrt(width) and tied to the output, the residual stream
    stays the input embedding, so the model predicts the token it was fed at 83 of 83 text positions (Gemma 3: 117 of
    119): greedy decoding repeats one token whatever the prompt, and tests of batching compare nothing. At scale 4 the
    blocks' outputs weigh in: 2 of 83 (6 of 119), like the Gemma-1 PaliGemma's 6 of 83.
    """
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith(("post_attention_layernorm.weight", "post_feedforward_layernorm.weight")):
                parameter.fill_(weight)
