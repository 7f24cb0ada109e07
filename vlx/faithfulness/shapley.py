"""Shapley values of a VLM's output tokens over the image patches and text tokens of its input, estimated with the
`shap` library's permutation explainer as Parcalabescu & Frank compute them for CC-SHAP and MM-SHAP on VLMs (ICLR
2025; Heidelberg-NLP/CC-SHAP-VLM, `explain_VLM`).

The players of the game are the image's p x p patches (row by row), then the maskable text tokens of the prompt, then
those of a `context` appended after it (the label before a post-hoc explanation: players, so that the explanation's
game has the label's, and marginalized afterwards by `vlx.faithfulness.cc_shap`). A player left out is, for a patch,
its pixels set to 0 in the raw image before the processor sees it; for a token, the token replaced by a neutral one
("_" where the tokenizer has it as one token, as the authors' "_" for LLaVA, else " "). Special and added tokens (BOS,
the chat template's), the image's tokens and whitespace-only tokens around them are never masked (the authors keep <s>,
<image> and the lone space beside it): they are not players at all here, where the authors' players of them get a
value of 0 by construction. The value of a coalition is, per output token, the raw logit of that token (the authors
explain raw logits): read at its own position with the output's earlier tokens given (`teacher_forced`, as shap's
TeacherForcing model in the authors' CC-SHAP for LLMs), or all at the first answer position (`first_position`, what
the authors' VLM code reads: `generate(...).logits[0][0, output_ids]`).

Budget: shap's permutation explainer evaluates 2n + 1 coalitions per permutation (n players), forwards and backwards,
and runs `evals // (2n + 1)` permutations; where `evals` is below one permutation it is raised to 2n + 1 (the authors
retry with 700, 800 and 900 evaluations, which gives that same single permutation wherever it succeeds).
"""

from __future__ import annotations

import copy
import functools
import math
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from vlx.engine.batches import render_prompt
from vlx.errors import ConfigError
from vlx.models.batches import append_tokens, on_model, token_ids, token_rows
from vlx.models.hf import VLMAdapter
from vlx.tasks import Task
from vlx.tasks.images import load_rgb
from vlx.tasks.items import Example

# where each output token's logit is read: at its own position after the output's earlier tokens, or all at the
# first answer position (the authors' VLM code)
LOGITS = ("teacher_forced", "first_position")
# the neutral token a masked text token becomes: the first of these that the tokenizer writes as one token
NEUTRAL_TEXTS = ("_", " ")
# masked images whose processed tensors a game keeps (a 7B LLaVA-NeXT's: about 7 MB each)
IMAGE_CACHE = 16


@dataclass(frozen=True)
class ShapleyValues:
    """One output's Shapley values over the players of its input.

    Attributes:
        values: [players, output tokens]: each player's contribution to each output token's logit.
        base: [output tokens]: the logits with every player masked (f(none)); base + values.sum(0) = f(all).
        patches: p, the image's patches per side (p * p image players first).
        text_tokens: the text players as they read (the prompt's, then the context's).
        context_players: how many of the last players are the context's tokens.
        output_tokens: the output tokens whose logits are explained.
        evals: model evaluations made (coalitions evaluated).
        permutations: the permutations shap ran.
        seconds: the wall time of the explanation.
    """

    values: np.ndarray
    base: np.ndarray
    patches: int
    text_tokens: list[str]
    context_players: int
    output_tokens: list[str]
    evals: int
    permutations: int
    seconds: float

    @property
    def image_players(self) -> int:
        """The image's players: p * p patches."""
        return self.patches * self.patches


def neutral_token(tokenizer: Any) -> int:
    """The id a masked text token is replaced with: "_" or " " where the tokenizer writes it as one token, else the
    unknown or padding token."""
    for text in NEUTRAL_TEXTS:
        ids = token_ids(tokenizer, [text])[0]
        if len(ids) == 1:
            return ids[0]
    fallback = tokenizer.unk_token_id if tokenizer.unk_token_id is not None else tokenizer.pad_token_id
    if fallback is None:
        raise ConfigError(
            "the model's tokenizer has no one-token '_' or ' ' and no unknown or padding token to mask text with"
        )
    return int(fallback)


def fixed_ids(model: VLMAdapter) -> set[int]:
    """Token ids never masked: the tokenizer's special and added tokens (BOS, the chat template's markers such as
    Mistral's [INST], the image's place holders) and the model's image tokens."""
    tokenizer = model.processor.tokenizer
    fixed = set(tokenizer.all_special_ids) | {int(i) for i in getattr(tokenizer, "added_tokens_decoder", {})}
    for owner in (model.processor, model.config):
        for name in ("image_token_id", "image_token_index", "vision_start_token_id", "vision_end_token_id"):
            value = getattr(owner, name, None)
            if isinstance(value, int):
                fixed.add(value)
    return fixed


def split_tokens(tokenizer: Any, context: str, output: str) -> tuple[list[int], list[int]]:
    """The token ids of `context` and of `output` after it, as the tokenizer writes the two together (where the
    context's own tokens start the whole; each alone otherwise)."""
    whole, head = token_ids(tokenizer, [context + output, context])
    if context and whole[: len(head)] == head:
        return head, whole[len(head) :]
    return (head if context else []), token_ids(tokenizer, [output])[0]


def patch_boxes(size: tuple[int, int], patches: int) -> list[tuple[int, int, int, int]]:
    """The p x p patches of an image of `size` (width, height), row by row, as (left, top, right, bottom): the image
    split as evenly as whole pixels allow."""
    width, height = size
    xs = [round(i * width / patches) for i in range(patches + 1)]
    ys = [round(i * height / patches) for i in range(patches + 1)]
    return [(xs[n], ys[m], xs[n + 1], ys[m + 1]) for m in range(patches) for n in range(patches)]


class MaskedInputGame:
    """The game shap explains: a batch of coalitions (rows of 0/1 over the players) -> the output tokens' logits.

    Args:
        model: the model adapter.
        prompt: the rendered prompt.
        image: the item's image (RGB).
        context: text after the prompt whose tokens are players too (e.g. the label before an explanation).
        output: the text whose tokens' logits are explained, after the prompt and context.
        patches: p (None: ceil(sqrt(the prompt's text players)), the authors' rule).
        logits: one of `LOGITS`.
        batch_size: coalitions per forward.
    """

    def __init__(
        self,
        model: VLMAdapter,
        prompt: str,
        image: Image.Image,
        context: str,
        output: str,
        patches: int | None = None,
        logits: str = "teacher_forced",
        batch_size: int = 8,
    ):
        if logits not in LOGITS:
            raise ConfigError(f"stage.shap_logits={logits!r}: use one of {', '.join(LOGITS)}")
        self.model, self.prompt, self.image, self.logits, self.batch_size = model, prompt, image, logits, batch_size
        tokenizer = model.processor.tokenizer
        context_ids, self.output_ids = split_tokens(tokenizer, context, output)
        # a leading token that is whitespace alone (a tokenizer that writes " B" as " " + "B", SentencePiece before
        # digits) is the answer's spacing, not its content: it joins the context, where it is no player, so that
        # only the label's own tokens are explained (the authors explain the label's token alone)
        while len(self.output_ids) > 1 and not tokenizer.decode([self.output_ids[0]]).strip():
            context_ids.append(self.output_ids.pop(0))
        if not self.output_ids:
            raise ValueError(f"no output tokens to explain in {output!r}")
        self.encoded = model.encode([prompt], [image])  # the prompt's token rows, the same in every coalition
        self.token_keys = token_rows(self.encoded)
        self.image_cache: OrderedDict[bytes, dict[str, torch.Tensor]] = OrderedDict()
        prompt_ids = self.encoded["input_ids"][0].tolist()
        self.ids = torch.tensor(prompt_ids + context_ids + self.output_ids)
        fixed = fixed_ids(model)

        def maskable(i: int) -> bool:
            return i not in fixed and bool(tokenizer.decode([i]).strip())

        prompt_players = [k for k, i in enumerate(prompt_ids) if maskable(i)]
        context_players = [len(prompt_ids) + k for k, i in enumerate(context_ids) if maskable(i)]
        self.text_positions = prompt_players + context_players
        self.context_players = len(context_players)
        self.patches = patches if patches is not None else max(1, math.ceil(math.sqrt(len(prompt_players))))
        self.boxes = patch_boxes(image.size, self.patches)
        self.neutral = neutral_token(tokenizer)
        self.evaluations = 0

    @property
    def players(self) -> int:
        """Image patches and text tokens."""
        return len(self.boxes) + len(self.text_positions)

    def masked_image(self, keep: np.ndarray) -> Image.Image:
        """The image with the patches not kept set to 0 (black)."""
        if keep.all():
            return self.image
        pixels = np.array(self.image)
        for (left, top, right, bottom), kept in zip(self.boxes, keep, strict=True):
            if not kept:
                pixels[top:bottom, left:right] = 0
        return Image.fromarray(pixels)

    def image_tensors(self, keep: np.ndarray) -> dict[str, torch.Tensor]:
        """The processor's image tensors (pixel values, sizes, grids: each with one row per image) of the image with
        the patches of `keep` kept. Processing an image costs about as much as a tiny model's forward, and a
        permutation's coalitions change the image only where it adds or removes a patch: the last few are kept."""
        key = np.packbits(keep).tobytes()
        if key not in self.image_cache:
            encoded = self.model.encode([self.prompt], [self.masked_image(keep)])
            self.image_cache[key] = {
                k: v for k, v in encoded.items() if k not in self.token_keys and isinstance(v, torch.Tensor)
            }
            if len(self.image_cache) > IMAGE_CACHE:
                self.image_cache.popitem(last=False)
        self.image_cache.move_to_end(key)
        return self.image_cache[key]

    def __call__(self, coalitions: np.ndarray) -> np.ndarray:
        """[k, players] coalitions (nonzero: kept) -> [k, output tokens] logits, in forwards of `batch_size`."""
        keep = np.asarray(coalitions).reshape(len(coalitions), -1) != 0
        out = [self._forward(keep[i : i + self.batch_size]) for i in range(0, len(keep), self.batch_size)]
        self.evaluations += len(keep)
        return np.concatenate(out) if out else np.zeros((0, len(self.output_ids)))

    @torch.inference_mode()
    def _forward(self, keep: np.ndarray) -> np.ndarray:
        images = [self.image_tensors(row[: len(self.boxes)]) for row in keep]
        batch = copy.copy(self.encoded)
        for key in self.token_keys:
            batch[key] = self.encoded[key].expand(len(keep), -1).clone()
        for key in images[0]:
            batch[key] = torch.cat([tensors[key] for tensors in images])
        tokenizer = self.model.processor.tokenizer
        tail = self.ids[batch["input_ids"].shape[1] :].tolist()
        batch = append_tokens(
            batch, [tail] * len(keep), tokenizer.pad_token_id, getattr(self.model, "answer_token_type", 0)
        )
        ids = batch["input_ids"]
        positions = torch.tensor(self.text_positions, dtype=torch.long)
        for r, row in enumerate(keep):
            masked = positions[torch.from_numpy(~row[len(self.boxes) :])]
            ids[r, masked] = self.neutral
        n = len(self.output_ids)
        model = self.model.model
        logits = model(**on_model(model, batch), use_cache=False, logits_to_keep=n + 1).logits.float()
        target = torch.tensor(self.output_ids, device=logits.device)
        if self.logits == "teacher_forced":  # position k predicts output token k
            picked = logits[:, :n].gather(-1, target.expand(len(keep), -1).unsqueeze(-1)).squeeze(-1)
        else:  # every output token's logit at the first answer position
            picked = logits[:, 0, target]
        return picked.double().cpu().numpy()


def _masker(mask: np.ndarray, x: np.ndarray) -> np.ndarray:
    """shap's masker: the coalition itself, a row of 0/1 (the game masks the image and the text)."""
    return np.asarray(mask, dtype=np.int8).reshape(1, -1)


@functools.cache
def warmed_up_shap() -> Any:
    """The `shap` module (a few seconds to import: only when the test runs), its permutation explainer run once on a
    toy game so that the numba functions it compiles on first use (about 10 s) are not counted in an item's time."""
    import shap

    state = np.random.get_state()
    try:
        game = lambda keep: np.asarray(keep, dtype=float)[:, :1] * 2.0  # noqa: E731
        shap.explainers.Permutation(game, _masker, seed=0)(np.zeros((1, 2)), max_evals=10, silent=True)
    finally:
        np.random.set_state(state)
    return shap


def explain_output(
    model: VLMAdapter,
    task: Task,
    example: Example,
    output: str,
    *,
    context: str = "",
    evals: int = 600,
    seed: int = 0,
    patches: int | None = None,
    logits: str = "teacher_forced",
    batch_size: int = 8,
) -> ShapleyValues:
    """Shapley values of the image patches and text tokens of `example`'s prompt (and of `context` after it) for the
    logits of `output`'s tokens after them, with shap's permutation explainer under a budget of `evals`.

    Args:
        model: the model adapter.
        task: the task whose prompt the model gets for `example` (`vlx.engine.batches.render_prompt`).
        example: the item (its image and text).
        output: the text whose tokens' logits are explained: the label's answer (`model.answer_prefix` + the label as
            the task writes it), or the explanation after the label.
        context: text between the prompt and `output` (the label's answer before a post-hoc explanation); its tokens
            are players.
        evals: the budget of model evaluations (raised to 2n + 1, one permutation, where lower).
        seed: the permutations' seed (numpy's global state is restored afterwards).
        patches: the image's patches per side (None: ceil(sqrt(the prompt's text players))).
        logits: where each output token's logit is read (`LOGITS`).
        batch_size: coalitions per forward.

    Returns:
        The values, base logits, players and cost (`ShapleyValues`).
    """
    shap = warmed_up_shap()
    started = time.perf_counter()
    prompt, image = render_prompt(model, task, example), load_rgb(example.image)
    game = MaskedInputGame(model, prompt, image, context, output, patches, logits, batch_size)
    players = game.players
    budget = max(int(evals), 2 * players + 1)

    state = np.random.get_state()
    try:
        explainer = shap.explainers.Permutation(game, _masker, seed=seed)
        explained = explainer(np.zeros((1, players)), max_evals=budget, batch_size=batch_size, silent=True)
    finally:
        np.random.set_state(state)
    values = np.asarray(explained.values[0], dtype=float).reshape(players, -1)
    tokenizer = model.processor.tokenizer
    ids = game.ids.tolist()
    return ShapleyValues(
        values=values,
        base=np.asarray(explained.base_values[0], dtype=float).reshape(-1),
        patches=game.patches,
        text_tokens=[tokenizer.decode([ids[k]]) for k in game.text_positions],
        context_players=game.context_players,
        output_tokens=[tokenizer.decode([i]) for i in game.output_ids],
        evals=game.evaluations,
        permutations=budget // (2 * players + 1),
        seconds=time.perf_counter() - started,
    )


def coalition_values(game: MaskedInputGame, coalitions: Sequence[Sequence[int]]) -> np.ndarray:
    """The game's value of given coalitions (e.g. all players and none: Shapley efficiency's two ends)."""
    return game(np.asarray(coalitions))
