"""Tests of the tiny-model factory: the checkpoints must load and behave like the real hub ones."""

# ruff: noqa: E402  (torch's thread count is set before anything else imports and uses torch)

import torch

torch.set_num_threads(1)  # the CI boxes have 2 cores; more threads only add contention

import json
import os
import shutil
import threading
from pathlib import Path

import pytest
from PIL import Image
from safetensors import safe_open
from transformers import (
    AutoProcessor,
    LlavaNextForConditionalGeneration,
    LlavaNextProcessor,
    PaliGemmaForConditionalGeneration,
    PaliGemmaProcessor,
)

from vlx.models import tiny
from vlx.models.tiny import (
    MARKER_FILE,
    build_tiny_model,
    ensure_tiny_model,
)
from vlx.models.tiny._text import HATE_PROMPT, NLI_PROMPT

# transformers' PaliGemmaProcessor calls np.array() on torch tensors when return_tensors="pt"; not ours to fix
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)

MODEL_CLASSES = {"llava_next": LlavaNextForConditionalGeneration, "paligemma": PaliGemmaForConditionalGeneration}
# the seed's two families, checked class by class here; every family runs tests/test_families.py's matrix
TINY_ARCHITECTURES = tuple(MODEL_CLASSES)
PROCESSOR_CLASSES = {"llava_next": LlavaNextProcessor, "paligemma": PaliGemmaProcessor}


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny")
    return {arch: ensure_tiny_model(arch, root / arch) for arch in TINY_ARCHITECTURES}


@pytest.fixture(scope="module")
def loaded(model_dirs: dict[str, Path]) -> dict[str, tuple]:
    out = {}
    for arch, path in model_dirs.items():
        processor = AutoProcessor.from_pretrained(path)
        model = MODEL_CLASSES[arch].from_pretrained(path, dtype=torch.float32).eval()
        out[arch] = (processor, model)
    return out


def _images() -> list[Image.Image]:
    # different sizes and aspect ratios (landscape, portrait) so LLaVA-NeXT picks different anyres grids
    red = Image.new("RGB", (40, 30), (220, 30, 30))
    blue = Image.new("RGB", (30, 60), (30, 30, 220))
    return [red, blue]


def _llava_prompt(processor, text: str) -> str:
    conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]
    return processor.apply_chat_template(conversation, add_generation_prompt=True)


def _inputs(arch: str, processor, texts: list[str], images: list[Image.Image]):
    if arch == "llava_next":
        prompts = [_llava_prompt(processor, t) for t in texts]
        return processor(text=prompts, images=images, return_tensors="pt", padding=True)
    return processor(text=texts, images=images, return_tensors="pt", padding="longest")


def test_unknown_arch_is_rejected(tmp_path: Path) -> None:
    for fn in (build_tiny_model, ensure_tiny_model):
        with pytest.raises(ValueError, match="llava_next, paligemma"):
            fn("llava", tmp_path / "x")
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("arch", TINY_ARCHITECTURES)
def test_loads_through_real_classes(arch: str, loaded: dict) -> None:
    processor, model = loaded[arch]
    assert type(processor) is PROCESSOR_CLASSES[arch]
    assert type(model) is MODEL_CLASSES[arch]
    tok = processor.tokenizer
    assert tok.padding_side == "left"
    assert 900 < len(tok) - (1152 if arch == "paligemma" else 0) < 1100
    assert model.config.image_token_id == tok.image_token_id == tok.convert_tokens_to_ids("<image>")
    assert model.config.text_config.vocab_size == len(tok)
    gen = model.generation_config
    assert (gen.pad_token_id, gen.eos_token_id, gen.bos_token_id) == (
        tok.pad_token_id,
        tok.eos_token_id,
        tok.bos_token_id,
    )
    if arch == "llava_next":
        assert type(processor.image_processor).__name__.startswith("LlavaNextImageProcessor")
        assert processor.num_additional_image_tokens == 1
        assert model.config.vision_config.model_type == "clip_vision_model"
        assert model.config.text_config.model_type == "mistral"
        text = model.config.text_config
        assert text.num_attention_heads > text.num_key_value_heads  # GQA like Mistral-7B
        assert text.max_position_embeddings >= 4096
        assert (tok.bos_token, tok.eos_token, tok.pad_token) == ("<s>", "</s>", "<pad>")
    else:
        assert type(processor.image_processor).__name__.startswith("SiglipImageProcessor")
        assert model.config.vision_config.model_type == "siglip_vision_model"
        assert model.config.text_config.model_type == "gemma"
        assert processor.image_seq_length == model.config.text_config.num_image_tokens == 16
        assert len(tok) == tok.convert_tokens_to_ids("<seg127>") + 1  # loc/seg tokens are inside the embedding
        assert (tok.bos_token, tok.eos_token, tok.pad_token) == ("<bos>", "<eos>", "<pad>")


@pytest.mark.parametrize("arch", TINY_ARCHITECTURES)
def test_small_safetensors_checkpoint(arch: str, model_dirs: dict) -> None:
    path = model_dirs[arch]
    files = {p.name for p in path.iterdir()}
    assert "model.safetensors" in files
    assert not any(name.endswith((".bin", ".pt", ".pth")) for name in files)
    assert sum(p.stat().st_size for p in path.iterdir()) < 10 * 2**20
    with safe_open(str(path / "model.safetensors"), framework="pt") as f:
        keys = list(f.keys())
        assert any(k.startswith("vision_tower.") for k in keys)
        assert all(f.get_tensor(k).dtype == torch.float32 for k in keys)
    assert json.loads((path / MARKER_FILE).read_text())["arch"] == arch


@pytest.mark.parametrize("arch", TINY_ARCHITECTURES)
def test_build_is_deterministic(arch: str, model_dirs: dict, tmp_path: Path) -> None:
    again = build_tiny_model(arch, tmp_path / "again", seed=0)
    other = build_tiny_model(arch, tmp_path / "other", seed=1)
    ref = model_dirs[arch]
    for name in ("model.safetensors", "tokenizer.json", "config.json", "processor_config.json"):
        assert (again / name).read_bytes() == (ref / name).read_bytes(), name
    assert (other / "model.safetensors").read_bytes() != (ref / "model.safetensors").read_bytes()
    assert (other / "tokenizer.json").read_bytes() == (ref / "tokenizer.json").read_bytes()  # seed is weights only


def test_ensure_reuses_and_repairs(model_dirs: dict, tmp_path: Path) -> None:
    ref = model_dirs["llava_next"]
    weights = ref / "model.safetensors"
    mtime = weights.stat().st_mtime_ns
    assert ensure_tiny_model("llava_next", ref) == ref
    assert weights.stat().st_mtime_ns == mtime

    # a dir missing files (e.g. a build killed by an older, non-atomic writer) gets rebuilt, and leftovers of a
    # killed atomic build are cleaned up
    broken = tmp_path / "broken"
    shutil.copytree(ref, broken)
    (broken / "model.safetensors").unlink()
    stale = tmp_path / ".broken.tmp-killed"
    stale.mkdir()
    (stale / "config.json").write_text("{}")
    assert ensure_tiny_model("llava_next", broken) == broken
    assert (broken / "model.safetensors").read_bytes() == weights.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".broken.lock", "broken"]

    # another seed in the same dir is not the requested model: rebuilt
    ensure_tiny_model("llava_next", broken, seed=3)
    assert json.loads((broken / MARKER_FILE).read_text())["seed"] == 3
    assert (broken / "model.safetensors").read_bytes() != weights.read_bytes()


def test_killed_build_leaves_no_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def dying_builder(out_dir: Path) -> None:
        (out_dir / "config.json").write_text("{}")
        raise KeyboardInterrupt  # like Ctrl-C halfway through writing

    monkeypatch.setitem(tiny._BUILDERS, "paligemma", dying_builder)
    with pytest.raises(KeyboardInterrupt):
        ensure_tiny_model("paligemma", tmp_path / "model")
    assert sorted(os.listdir(tmp_path)) == [".model.lock"]


def test_ensure_concurrent_callers_build_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    target = tmp_path / "race"
    results, errors = [], []

    def worker() -> None:
        try:
            results.append(ensure_tiny_model("paligemma", target))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    with caplog.at_level("INFO", logger="vlx.models.tiny"):
        threads = [threading.Thread(target=worker) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors
    assert results == [target, target]
    assert sum("building tiny paligemma" in r.getMessage() for r in caplog.records) == 1
    assert sorted(os.listdir(tmp_path)) == [".race.lock", "race"]


def test_llava_next_chat_template(loaded: dict) -> None:
    processor, _ = loaded["llava_next"]
    one_turn = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": HATE_PROMPT}]}]
    assert (
        processor.apply_chat_template(one_turn, add_generation_prompt=True) == f"[INST] <image>\n{HATE_PROMPT} [/INST]"
    )
    few_shot = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Is there a red circle?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "entailment\nThere is a red circle."}]},
        {"role": "user", "content": [{"type": "text", "text": "And here?"}, {"type": "image"}]},
    ]
    assert processor.apply_chat_template(few_shot, add_generation_prompt=True) == (
        "[INST] <image>\nIs there a red circle? [/INST] entailment\nThere is a red circle.</s> "
        "[INST] <image>\nAnd here? [/INST]"
    )
    # the processor expands each <image> into that image's anyres feature count
    prompt = processor.apply_chat_template(few_shot, add_generation_prompt=True)
    enc = processor(text=prompt, images=_images(), return_tensors="pt")
    n_image_tokens = int((enc.input_ids == processor.tokenizer.image_token_id).sum())
    assert n_image_tokens > 2 * 4  # more than one base 2x2 grid per image


def test_tokenizers_keep_markup_tokens_whole(loaded: dict) -> None:
    llava_tok = loaded["llava_next"][0].tokenizer
    ids = llava_tok("[INST] <image>\nhi [/INST]").input_ids
    tokens = llava_tok.convert_ids_to_tokens(ids)
    assert tokens[0] == "<s>"  # bos is prepended like Mistral's tokenizer does
    assert {"[INST]", "[/INST]", "<image>"} <= set(tokens)
    # [INST] is plain text as in the real tokenizer: skip_special_tokens keeps it, drops <s> and <image>
    assert llava_tok.decode(ids, skip_special_tokens=True) == "[INST] \nhi [/INST]"
    gemma_tok = loaded["paligemma"][0].tokenizer
    for token in ("<bos>", "<eos>", "<pad>", "<image>", "<loc0042>"):
        assert len(gemma_tok(token, add_special_tokens=False).input_ids) == 1, token
    # the corpus covers the project's prompts: they round-trip and merge into few tokens
    nli = NLI_PROMPT.format(hypothesis="The picture shows a blue square, not a green triangle.")
    for tok in (llava_tok, gemma_tok):
        for text in (nli, HATE_PROMPT, "not offensive", "contradiction"):
            ids = tok(text, add_special_tokens=False).input_ids
            assert tok.decode(ids) == text
            assert len(ids) < len(text) / 3, text


@pytest.mark.parametrize("arch", TINY_ARCHITECTURES)
def test_batched_left_padded_generate_matches_single(arch: str, loaded: dict) -> None:
    processor, model = loaded[arch]
    pad = processor.tokenizer.pad_token_id
    texts = ["answer en Is there a red circle?", "explain en " + HATE_PROMPT]
    images = _images()
    batch = _inputs(arch, processor, texts, images)
    assert batch.input_ids[0, 0] == pad and batch.attention_mask[0, 0] == 0  # left padding on the shorter one
    assert batch.attention_mask[:, -1].all()
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=5, do_sample=False)
    n_in = batch.input_ids.shape[1]
    assert out.shape[0] == 2 and out.shape[1] > n_in
    for i in range(2):
        single = _inputs(arch, processor, [texts[i]], [images[i]])
        with torch.no_grad():
            alone = model.generate(**single, max_new_tokens=5, do_sample=False)
        new_alone = alone[0, single.input_ids.shape[1] :].tolist()
        new_batched = out[i, n_in:].tolist()
        assert new_alone, "nothing generated"
        # the shorter run may stop at eos; the batch then pads that row
        assert new_batched[: len(new_alone)] == new_alone
        assert all(t == pad for t in new_batched[len(new_alone) :])


@pytest.mark.parametrize("arch", TINY_ARCHITECTURES)
def test_image_changes_the_logits(arch: str, loaded: dict) -> None:
    processor, model = loaded[arch]
    red, blue = _images()
    logits = []
    for image in (red, blue.resize((40, 30))):  # same size: only the pixels differ
        inputs = _inputs(arch, processor, ["Is there a red circle?"], [image])
        with torch.no_grad():
            logits.append(model(**inputs).logits[0, -1])
    assert not torch.allclose(logits[0], logits[1], atol=1e-3)


def test_paligemma_suffix_labels(loaded: dict) -> None:
    processor, model = loaded["paligemma"]
    tok = processor.tokenizer
    texts = ["answer en Is there a red circle?", "explain en " + NLI_PROMPT.format(hypothesis="There is a star.")]
    suffixes = ["entailment", "not offensive"]
    enc = processor(text=texts, images=_images(), suffix=suffixes, return_tensors="pt", padding="longest")
    labels, ids, types = enc["labels"], enc.input_ids, enc.token_type_ids
    assert labels.shape == ids.shape
    assert (labels[types == 0] == -100).all()  # padding, image tokens, <bos> and prompt are masked
    assert torch.equal(labels[types == 1], ids[types == 1])
    for i, suffix in enumerate(suffixes):
        target = labels[i][labels[i] != -100]
        assert target[-1] == tok.eos_token_id
        assert tok.decode(target[:-1]) == suffix
        prefix = ids[i][(types[i] == 0) & (enc.attention_mask[i] == 1)]
        assert (prefix[:16] == tok.image_token_id).all() and prefix[16] == tok.bos_token_id
        assert tok.decode(prefix[17:]) == texts[i] + "\n"
    with torch.no_grad():
        loss = model(**enc).loss
    assert torch.isfinite(loss) and loss > 0


# --- processors with a video part (vlx.models.processors) ---------------------------------------------------------

VIDEO_FAMILIES = {  # tiny architecture -> its processor class, image processor class (PIL backend) and video one
    "qwen2_5_vl": ("Qwen2_5_VLProcessor", "Qwen2VLImageProcessor", "Qwen2VLVideoProcessor"),
    "qwen3_vl": ("Qwen3VLProcessor", "Qwen2VLImageProcessor", "Qwen3VLVideoProcessor"),
    "internvl": ("InternVLProcessor", "GotOcr2ImageProcessor", "InternVLVideoProcessor"),
    "llava_onevision": ("LlavaOnevisionProcessor", "LlavaOnevisionImageProcessor", "LlavaOnevisionVideoProcessor"),
}


@pytest.fixture(scope="module")
def video_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny-video")
    return {arch: ensure_tiny_model(arch, root / arch) for arch in VIDEO_FAMILIES}


def _encode(processor, arch: str):
    token = "<IMG_CONTEXT>" if arch == "internvl" else processor.image_token
    return processor(text=[f"{token} red", f"{token} a blue one"], images=_images(), return_tensors="pt", padding=True)


@pytest.mark.parametrize("arch", sorted(VIDEO_FAMILIES))
def test_video_families_load_as_their_own_processor_class(arch: str, video_dirs: dict) -> None:
    """vlx loads the processor of a family with a video processor whether torchvision imports or not: the family's
    own class (without torchvision, less its video processor), which encodes images, and whose save_pretrained writes
    the checkpoint's processor_config.json back as it was (the video settings included)."""
    import transformers

    from vlx.models import processors
    from vlx.models.loading import load_processor

    processor_name, image_name, video_name = VIDEO_FAMILIES[arch]
    processor = load_processor(str(video_dirs[arch]))
    assert isinstance(processor, getattr(transformers, processor_name))
    assert type(processor).__name__ == processor_name and processor.tokenizer.padding_side == "left"
    assert type(processor.image_processor).__name__.startswith(image_name)
    if processors.torchvision_imports():
        assert type(processor.video_processor).__name__ == video_name
    else:
        assert type(processor.image_processor).__name__ == image_name + "Pil"
        assert not hasattr(processor, "video_processor")
    enc = _encode(processor, arch)
    assert enc["pixel_values"].abs().sum() > 0
    token = "<IMG_CONTEXT>" if arch == "internvl" else processor.image_token
    image_id = processor.tokenizer.convert_tokens_to_ids(token)
    assert ((enc["input_ids"] == image_id).sum(dim=1) > 0).all()  # each prompt's image expanded to its tokens
    saved = json.loads((video_dirs[arch] / "processor_config.json").read_text())
    assert saved["processor_class"] == processor_name
    assert saved["video_processor"]["video_processor_type"] == video_name
    out = video_dirs[arch].parent / f"{arch}-saved"
    processor.save_pretrained(out)
    again = json.loads((out / "processor_config.json").read_text())
    assert again["video_processor"] == saved["video_processor"] or processors.torchvision_imports()
    assert again["processor_class"] == processor_name and again["image_processor"] == saved["image_processor"]


def test_a_processor_without_video_goes_through_auto_processor(model_dirs: dict) -> None:
    from vlx.models.loading import load_processor, processor_without_torchvision

    for arch, path in model_dirs.items():
        assert processor_without_torchvision(str(path)) is None  # no video part: AutoProcessor as always
        assert type(load_processor(str(path))) is PROCESSOR_CLASSES[arch]


@pytest.mark.parametrize("arch", sorted(VIDEO_FAMILIES))
def test_without_video_encodes_as_the_whole_processor(arch: str, video_dirs: dict) -> None:
    """Where torchvision imports: the processor less its video part (as vlx loads it without torchvision) encodes
    images exactly as transformers' whole processor, and the video processor built from the tiny model's settings
    is the one transformers builds from them."""
    from vlx.models import processors

    if not processors.torchvision_imports():
        pytest.skip("needs torchvision, to build the whole processor to compare with")
    import transformers

    whole = AutoProcessor.from_pretrained(video_dirs[arch])
    cls = getattr(transformers, VIDEO_FAMILIES[arch][0])
    part = processors.without_video(cls).from_pretrained(video_dirs[arch])
    got, expected = _encode(part, arch), _encode(whole, arch)
    assert set(got) == set(expected) and all(torch.equal(got[k], expected[k]) for k in expected)
    settings = json.loads((video_dirs[arch] / "processor_config.json").read_text())["video_processor"]
    video_class = getattr(transformers, settings.pop("video_processor_type"))
    assert whole.video_processor.to_dict() == video_class(**settings).to_dict()
