"""Processors whose video part needs torchvision, built without it where torchvision does not import.

transformers makes every video processor with torchvision, and the processors of Qwen2-VL, Qwen2.5-VL, Qwen3-VL,
InternVL and LLaVA-OneVision hold one beside their image processor, so `AutoProcessor.from_pretrained` fails for
them without torchvision ("Qwen2VLVideoProcessor requires the Torchvision library") although their image processors
have a PIL backend that transformers picks by itself. vlx feeds images only, so where torchvision does not import it
loads such a processor as `without_video(ProcessorClass).from_pretrained(checkpoint)`: the same class and code, the
same tokenizer, chat template and image processor (its PIL backend, as `AutoImageProcessor` picks without
torchvision), and no video processor. The checkpoint's video settings are kept as they were read and written back by
`save_pretrained` (a merged model saved here still loads with its video processor where torchvision imports).

Where torchvision imports, nothing here is used: `AutoProcessor` builds the processor as it always did.
"""

from __future__ import annotations

import copy
import functools
import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transformers import ProcessorMixin

VIDEO = "video"


@functools.cache
def torchvision_imports() -> bool:
    """Whether torchvision imports here (a CUDA torchvision beside a CPU torch fails at import, not only a missing
    one)."""
    try:
        importlib.import_module("torchvision")
    except Exception:  # noqa: BLE001 - missing, or broken beside this torch ("operator torchvision::nms does not exist")
        return False
    return True


def video_attributes(processor_class: type[ProcessorMixin]) -> tuple[str, ...]:
    """The processor's sub-processors that are video processors (`video_processor`), in `get_attributes` order."""
    return tuple(name for name in processor_class.get_attributes() if VIDEO in name)


def can_drop_video(processor_class: type[ProcessorMixin]) -> bool:
    """Whether `without_video` applies: the class has a video processor, and it comes after the other
    sub-processors (transformers' ProcessorMixin pairs the positional sub-processors with `get_attributes` in order,
    so only trailing ones can be left out)."""
    attributes = processor_class.get_attributes()
    video = video_attributes(processor_class)
    return bool(video) and attributes[len(attributes) - len(video) :] == list(video)


@functools.cache
def without_video(processor_class: type[ProcessorMixin]) -> type[ProcessorMixin]:
    """`processor_class` less its video processor: a subclass of the same name whose `get_attributes` leaves the
    video processor out, so that `from_pretrained` neither loads nor asks for it and the class's own `__init__`
    (which passes the video processor, None here, last) builds the rest as usual.

    Raises:
        ValueError: the class has no video processor, or one that is not its last sub-processor (`can_drop_video`).
    """
    if not can_drop_video(processor_class):
        raise ValueError(f"{processor_class.__name__} has no trailing video processor to leave out")
    video = video_attributes(processor_class)

    def get_attributes(cls) -> list[str]:
        return [name for name in processor_class.get_attributes() if name not in video]

    def to_dict(self) -> dict[str, Any]:
        out = processor_class.to_dict(self)
        for name, settings in getattr(self, "video_settings", {}).items():
            out[name] = copy.deepcopy(settings)
        return out

    namespace = {
        "__module__": processor_class.__module__,
        "__qualname__": processor_class.__qualname__,
        "__doc__": processor_class.__doc__,
        "get_attributes": classmethod(get_attributes),
        "to_dict": to_dict,
    }
    # the same name: save_pretrained writes it as `processor_class`, and AutoProcessor reads it back
    return type(processor_class.__name__, (processor_class,), namespace)


def keep_video_settings(processor: Any, settings: dict[str, dict[str, Any]]) -> Any:
    """Keeps the video processors' settings (as saved: `{"video_processor": {...}}`) on a processor made by
    `without_video`, so that its `save_pretrained` writes them back into processor_config.json."""
    processor.video_settings = {name: dict(value) for name, value in settings.items() if isinstance(value, dict)}
    return processor


def video_settings(processor_class: type[ProcessorMixin], checkpoint: str, **options: Any) -> dict[str, dict[str, Any]]:
    """The checkpoint's settings of each video processor of `processor_class` as saved (the nested sections of
    processor_config.json, else video_preprocessor_config.json), read without torchvision; `{}` where it has none."""
    from transformers.video_processing_utils import BaseVideoProcessor

    video = video_attributes(processor_class)
    hub = {k: v for k, v in options.items() if k in ("cache_dir", "revision", "token", "local_files_only")}
    try:
        nested, _ = processor_class.get_processor_dict(checkpoint, **hub)
    except (OSError, ValueError):
        nested = {}
    found = {name: nested[name] for name in video if isinstance(nested.get(name), dict)}
    if len(found) < len(video) and video == (f"{VIDEO}_processor",):
        try:
            settings, _ = BaseVideoProcessor.get_video_processor_dict(checkpoint, **hub)
        except (OSError, ValueError):
            settings = {}
        if settings.get("video_processor_type"):
            found[video[0]] = settings
    return found


def with_video_settings(processor_class: type[ProcessorMixin], video_processor: dict[str, Any], **parts: Any) -> Any:
    """A processor of `processor_class` built from `parts` (image processor, tokenizer, chat template, ...), its video
    processor given as settings (`video_processor_type` and the arguments it is built with) that `save_pretrained`
    writes as a real one's: the saved processor loads with its video processor where torchvision imports, and
    without it elsewhere (`without_video`), and building it needs no torchvision."""
    processor = without_video(processor_class)(**parts)  # type: ignore[arg-type]  # (a class is hashable: mypy reads its instances' __hash__)
    return keep_video_settings(processor, {video_attributes(processor_class)[0]: video_processor})
