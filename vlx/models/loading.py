"""Loading a VLM and its processor: dtype, device placement, bitsandbytes quantization, LoRA adapters.

Real checkpoints (hub id or local folder) and the tiny random-weight ones go through the same `from_pretrained` calls;
the checkpoint's config.json is read once (`read_config`) and handed down.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from vlx.distributed import device_map_for_rank
from vlx.errors import ConfigError
from vlx.models import fast, processors
from vlx.models.fast import attention, vision_windows

if TYPE_CHECKING:
    from transformers import PretrainedConfig, ProcessorMixin

    from vlx.models.types import LoadedModel

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def resolve_dtype(name: str) -> torch.dtype:
    """`auto` -> bfloat16 on a GPU that has it (float16 on older GPUs), float32 on CPU; else the named dtype."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if name not in DTYPES:
        raise ConfigError(f"model.dtype={name!r}: use auto or one of {', '.join(DTYPES)}")
    return DTYPES[name]


def resolve_device_map(device_map: str | None) -> str | dict[str, Any] | None:
    """`auto` -> under a multi-process launcher, this rank's own GPU (one model copy per GPU); in one process with
    GPUs, accelerate's `sequential` placement (the first GPU, and the next ones only for what does not fit); CPU
    otherwise (no accelerate hooks on CPU). Other values are passed on (e.g. `balanced` spreads the layers evenly)."""
    if device_map == "auto" and not torch.cuda.is_available():
        return None
    if device_map == "auto" and (per_rank := device_map_for_rank()) is not None:
        return per_rank
    if device_map == "auto":
        # accelerate's own `auto` spreads even a small model over every visible GPU: the layers then run one GPU
        # at a time, and PaliGemma's training mask fails with its tensors on two devices
        return "sequential"
    if device_map is not None and device_map.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"model.device_map={device_map!r} but no CUDA GPU is visible; use auto or cpu")
    return device_map


def resolve_checkpoint(checkpoint: str) -> str:
    """The checkpoint to load: a hub id, or a local folder written by `save_pretrained`.

    Raises:
        ConfigError: a local folder that does not exist, or holds no config.json or no weights.
    """
    path = Path(checkpoint).expanduser()
    # a hub id is "name" or "org/name"; anything else that looks like a path is one
    if path.exists() or checkpoint.startswith((".", "/", "~")) or checkpoint.count("/") > 1:
        if not path.is_dir():
            raise ConfigError(
                f"model.checkpoint={checkpoint!r}: no such folder; point it at a folder written by save_pretrained "
                f"(e.g. <run>/merged from stage=merge), or at a hub id such as llava-hf/llava-v1.6-mistral-7b-hf"
            )
        if not (path / "config.json").is_file():
            raise ConfigError(
                f"model.checkpoint={checkpoint!r}: no config.json in that folder; point it at a folder written by "
                f"save_pretrained, or at a hub id such as llava-hf/llava-v1.6-mistral-7b-hf"
            )
        if not any(path.glob("*.safetensors")) and not any(path.glob("*.bin")):
            raise ConfigError(f"model.checkpoint={checkpoint!r}: no weights (*.safetensors) in that folder")
        return str(path)
    return checkpoint  # a hub id: from_pretrained resolves (and caches) it


@contextlib.contextmanager
def cannot_load(key: str, where: str) -> Iterator[None]:
    """A checkpoint or adapter that transformers or peft cannot load (a hub id that is not there or not reachable, a
    folder with files cut short or of another architecture) as a config mistake naming it; out-of-memory and
    interrupts pass as they are."""
    try:
        yield
    except (OSError, ValueError, KeyError, RuntimeError) as err:
        if isinstance(err, torch.OutOfMemoryError):
            raise
        reason = " ".join(str(err).split())
        reason = reason if len(reason) < 400 else reason[:400] + " ..."
        raise ConfigError(
            f"{key}={where!r} cannot be loaded ({type(err).__name__}: {reason}). Give a folder written by "
            f"save_pretrained or a hub id; without a network, only models already in the Hugging Face cache load"
        ) from err


def check_adapter_path(adapter: str | None) -> None:
    """Refuses an adapter folder that peft cannot load, before any weights are read."""
    if adapter is not None and not (Path(adapter) / "adapter_config.json").is_file():
        raise ConfigError(
            f"model.adapter={adapter!r}: no adapter_config.json there; use the adapter/ folder of a finetune run"
        )


def read_config(checkpoint: str, trust_remote_code: bool = False) -> PretrainedConfig:
    """The checkpoint's config (config.json), which names its architecture: read once per load (`load_adapter`) and
    handed to everything that needs it (the adapter class, the processor, the model), none of which reads it again."""
    from transformers import AutoConfig

    with cannot_load("model.checkpoint", checkpoint):
        return AutoConfig.from_pretrained(checkpoint, trust_remote_code=trust_remote_code)


def load_processor(
    checkpoint: str, config: PretrainedConfig | None = None, trust_remote_code: bool = False, **options: Any
):
    """The checkpoint's processor, left-padding so that batched generation continues every prompt at its end.

    Args:
        checkpoint: hub id or local folder.
        config: the checkpoint's config (`read_config`; read here when not given): it names the processor class, and
            is handed to the tokenizer's loader, which would otherwise read config.json again.
        trust_remote_code: run code shipped with the checkpoint.
        **options: keyword arguments for the processor's `from_pretrained` (model.processor_kwargs).
    """
    from transformers import AutoProcessor

    config = config if config is not None else read_config(checkpoint, trust_remote_code)
    cls = processor_class(config, trust_remote_code)
    with cannot_load("model.checkpoint", checkpoint), needs_torchvision(checkpoint):
        if (video := processor_without_torchvision(checkpoint, trust_remote_code, config)) is not None:
            log.info(
                "torchvision does not import: loading %s without its video processor (images only)", video.__name__
            )
            processor = processors.keep_video_settings(
                processors.without_video(video).from_pretrained(  # type: ignore[arg-type]  # (a class is hashable: mypy reads its instances' __hash__)
                    checkpoint, config=config, **options
                ),
                processors.video_settings(video, checkpoint, **options),
            )
        elif cls is not None:
            processor = cls.from_pretrained(checkpoint, config=config, **options)
        else:
            processor = AutoProcessor.from_pretrained(
                checkpoint, config=config, trust_remote_code=trust_remote_code, **options
            )
    processor.tokenizer.padding_side = "left"
    return processor


def processor_class(config: PretrainedConfig, trust_remote_code: bool = False) -> type[ProcessorMixin] | None:
    """transformers' processor class for the checkpoint's architecture, or None to load the processor with
    `AutoProcessor` as usual: for a checkpoint with code of its own, or an architecture transformers maps to no
    processor."""
    if trust_remote_code:
        return None
    from transformers.models.auto.processing_auto import PROCESSOR_MAPPING

    try:
        # (transformers annotates the auto mappings' values as (slow, fast) pairs; the processor mapping's are classes)
        return PROCESSOR_MAPPING[type(config)]  # type: ignore[return-value]
    except KeyError:  # not a transformers architecture: AutoProcessor says what it lacks
        return None


def processor_without_torchvision(
    checkpoint: str, trust_remote_code: bool = False, config: PretrainedConfig | None = None
) -> type[ProcessorMixin] | None:
    """The processor class to load without its video part (`vlx.models.processors`), or None to load the processor
    as usual: where torchvision imports, for a checkpoint with code of its own, and for a processor with no video
    processor. `config`: the checkpoint's (read here when not given)."""
    if trust_remote_code or processors.torchvision_imports():
        return None
    cls = processor_class(config if config is not None else read_config(checkpoint), trust_remote_code)
    return cls if cls is not None and processors.can_drop_video(cls) else None


@contextlib.contextmanager
def needs_torchvision(checkpoint: str) -> Iterator[None]:
    """A processor that transformers makes with torchvision and vlx cannot load without it (one whose video
    processor is not its last part, or a checkpoint with code of its own; `processor_without_torchvision`) as a
    config problem that says what to install."""
    try:
        yield
    except ImportError as err:
        if "torchvision" not in str(err).lower():
            raise
        raise ConfigError(
            f"model.checkpoint={checkpoint!r}: its processor needs torchvision, which does not import here; install "
            f"the torchvision build that matches your torch (e.g. pip install torch torchvision from the same index)"
        ) from err


def resolve_attention(setting: str | None, architecture: str) -> str | None:
    """`auto` -> vlx's `sdpa_grouped` for the architectures on the fast-path allow-list (`fast.architecture`),
    transformers' own choice for the others (None: SDPA where the model supports it, else eager). `sdpa_grouped`
    asked for another architecture is refused: its fast paths are not proven there."""
    if setting == "auto":
        return attention.NAME if fast.allowed(architecture) else None
    if setting == attention.NAME and not fast.allowed(architecture):
        raise ConfigError(
            f"model.attn_implementation={attention.NAME}: vlx's fast paths are proven for {', '.join(fast.ALLOWED)} "
            f"only, not {architecture}; use auto (transformers' own choice for it), sdpa, eager or flash_attention_2"
        )
    return setting


def load_model(
    model_class: type[Any],
    checkpoint: str,
    config: PretrainedConfig,
    *,
    dtype: str = "auto",
    device_map: str | None = "auto",
    quantization: Any | None = None,
    attn_implementation: str | None = "auto",
    adapter: str | None = None,
    trust_remote_code: bool = False,
) -> LoadedModel:
    """Loads a model with `model_class.from_pretrained`, optionally 4/8-bit and with a LoRA adapter on top.

    Args:
        model_class: the transformers class, e.g. AutoModelForImageTextToText.
        checkpoint: hub id or local folder.
        config: the checkpoint's config (`read_config`), given to `from_pretrained` so that it is not read again.
        dtype: auto, float32, float16 or bfloat16.
        device_map: auto, cpu, cuda, cuda:N or an accelerate strategy (see resolve_device_map).
        quantization: a transformers.BitsAndBytesConfig, or None for full precision.
        attn_implementation: auto (`resolve_attention`; a vision tower of `vision_windows.ARCHITECTURES` then
            attends through `vision_windows`), sdpa_grouped (vlx.models.fast.attention), sdpa, eager or
            flash_attention_2.
        adapter: folder of a peft adapter to load on top, or None.
        trust_remote_code: run code shipped with the checkpoint (only for checkpoints you trust).

    Returns:
        The model in eval mode.
    """
    architecture = fast.architecture(config)
    attn_implementation = resolve_attention(attn_implementation, architecture)
    if attn_implementation == attention.NAME:
        attention.register()  # in case a test or caller reset transformers' registry
    if attn_implementation == "flash_attention_2" and importlib.util.find_spec("flash_attn") is None:
        raise ConfigError(
            "model.attn_implementation=flash_attention_2 needs the flash-attn package (pip install flash-attn, on a "
            "CUDA GPU with bf16/fp16 weights); or keep the default sdpa_grouped"
        )
    kwargs: dict[str, Any] = {
        "config": config,
        "dtype": resolve_dtype(dtype),
        "attn_implementation": attn_implementation,
        "trust_remote_code": trust_remote_code,
    }
    placement = resolve_device_map(device_map)
    if placement is not None:
        kwargs["device_map"] = placement
    if quantization is not None:
        kwargs["quantization_config"] = quantization
    log.info(
        "loading %s from %s (%s)",
        model_class.__name__,
        checkpoint,
        {k: str(v) for k, v in kwargs.items() if k != "config"},
    )
    with cannot_load("model.checkpoint", checkpoint):
        model = model_class.from_pretrained(checkpoint, **kwargs)
    if attn_implementation is None and vision_windows.install(model):  # `auto`: transformers' SDPA, then this
        log.info("vision attention: %s (the windows of one size in one SDPA call)", vision_windows.NAME)
    if adapter is not None:
        check_adapter_path(adapter)
        from peft import PeftModel

        log.info("loading LoRA adapter %s", adapter)
        with cannot_load("model.adapter", adapter):
            model = PeftModel.from_pretrained(model, adapter)
    model.eval()
    return model
