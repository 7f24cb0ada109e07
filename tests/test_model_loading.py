"""Model loading through one path: the checkpoint's config.json read once and handed down, the adapter class picked
in `vlx.models.families` alone, nothing of the tiny models in the production adapter, a Protocol that declares what
the stages use, and task.prompt as the one prompt key (the old keys refused with what replaced them)."""

from __future__ import annotations

import inspect
import logging
import os
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO
from helpers import one_error_line, run_vlx, shipped_options
from transformers import PretrainedConfig

from vlx.errors import ConfigError
from vlx.models import FAMILY_ADAPTERS, HFAdapter, VLMAdapter, load_adapter
from vlx.models.hf import ADAPTER_META, check_trained_prompt, trained_prompt
from vlx.models.loading import resolve_checkpoint
from vlx.models.tiny import TINY_ARCHITECTURES, ensure_tiny_model, load_tiny_adapter
from vlx.stages._resume import prompt_as_today

OPTIONS = {"dtype": "float32", "device_map": "cpu", "compile": False}


def tiny(arch: str) -> Path:
    """The session's cached tiny model of `arch` (the folder the configs use)."""
    return ensure_tiny_model(arch, Path(os.environ["VLX_CACHE_DIR"]) / "tiny-models" / arch)


def config_reads(folder: Path, load) -> tuple[int, int]:
    """(opens of `folder`/config.json while `load()` runs, those of them not made by transformers'
    `is_timm_local_checkpoint`), watched through the interpreter's audit hook on `open` events: the file system as
    it is touched, with nothing of transformers replaced. That function opens config.json before it looks at any
    config it is given, to tell a timm checkpoint apart (AutoImageProcessor), so it is counted apart."""
    target = os.fspath(folder / "config.json")
    seen: list[bool] = []
    watching = [True]

    def hook(event: str, args: tuple) -> None:
        if not watching[0] or event != "open" or not isinstance(args[0], (str, bytes, os.PathLike)):
            return
        if os.fsdecode(args[0]) == target:
            frame, sniff = sys._getframe(1), False
            while frame is not None:
                sniff = sniff or frame.f_code.co_name == "is_timm_local_checkpoint"
                frame = frame.f_back
            seen.append(sniff)

    sys.addaudithook(hook)  # audit hooks cannot be removed: this one stops counting when the load is done
    try:
        load()
    finally:
        watching[0] = False
    return len(seen), sum(not sniff for sniff in seen)


@pytest.mark.parametrize("arch", ["llava_next", "paligemma", "qwen2_5_vl"])
def test_one_load_reads_config_json_once(arch):
    """Before: 7 opens per load (vlx read it 4 times: to pick the class, to check compiling, to pick the processor
    class and to pick the attention; transformers 3 more, given no config). After: vlx parses it once and hands the
    config to the class, the processor and the model; the one other open is transformers' timm sniff."""
    folder = tiny(arch)
    total, parsed = config_reads(folder, lambda: load_adapter(str(folder), **OPTIONS))
    assert parsed == 1, (total, parsed)
    assert total <= 2


def test_the_family_yamls_all_load_through_load_adapter(make_cfg):
    """One place picks the adapter class: every shipped model YAML targets load_adapter (the tiny ones through
    load_tiny_adapter, which builds the folder and calls it), none a family's class."""
    targets = {}
    for name in shipped_options("model"):
        cfg = make_cfg(f"model={name}", *(["model.checkpoint=org/model"] if name == "hf" else []))
        targets[name] = cfg.model._target_
    assert set(targets.values()) == {"vlx.models.load_adapter", "vlx.models.tiny.load_tiny_adapter"}, targets
    assert {n for n, t in targets.items() if t.endswith("load_tiny_adapter")} == {
        n for n in targets if n.startswith("tiny")
    }


def test_a_family_class_named_as_target_says_how_to_load(tmp_path):
    """A model YAML of before, `_target_: vlx.models.LlavaNextAdapter`, is told what to write instead."""
    from hydra.utils import instantiate

    node = {"_target_": "vlx.models.LlavaNextAdapter", "checkpoint": str(tiny("llava_next")), "device_map": "cpu"}
    with pytest.raises(Exception, match=r"_target_: vlx.models.load_adapter") as err:
        instantiate(node)
    from vlx.errors import user_error

    assert isinstance(user_error(err.value), ConfigError)


@pytest.mark.parametrize("arch", ["llava_next", "paligemma", "paligemma2", "qwen2_5_vl"])
def test_the_checkpoint_picks_the_class(arch):
    adapter = load_adapter(str(tiny(arch)), **OPTIONS)
    expected = FAMILY_ADAPTERS.get(adapter.config.model_type, HFAdapter)
    assert type(adapter) is expected
    assert type(adapter).__name__ == {
        "llava_next": "LlavaNextAdapter",
        "paligemma": "PaliGemmaAdapter",
        "paligemma2": "PaliGemmaAdapter",
    }.get(arch, "HFAdapter")


def test_a_family_option_for_another_family_is_refused():
    folder = tiny("paligemma")
    with pytest.raises(ConfigError, match=r"model.max_tiles=2 is an option of LlavaNextAdapter.*paligemma model"):
        load_adapter(str(folder), max_tiles=2, **OPTIONS)
    assert type(load_adapter(str(folder), max_tiles=None, **OPTIONS)).__name__ == "PaliGemmaAdapter"  # the default


def test_tiny_knobs_are_not_in_the_production_path():
    """`tiny`/`tiny_dir` are the tiny models' loader's alone; the adapter classes, load_adapter and
    resolve_checkpoint take what a real checkpoint needs."""
    production = [
        HFAdapter.__init__,
        load_adapter,
        resolve_checkpoint,
        *(cls.__init__ for cls in FAMILY_ADAPTERS.values()),
    ]
    for function in production:
        assert not {"tiny", "tiny_dir"} & set(inspect.signature(function).parameters), function
    assert {"tiny", "tiny_dir"} <= set(inspect.signature(load_tiny_adapter).parameters)
    with pytest.raises(ConfigError, match="no such folder"):  # a path that is not there is not built
        resolve_checkpoint("/nonexistent/tiny-models/llava_next")


def test_a_tiny_model_is_built_only_in_its_own_folder(tmp_path):
    """load_tiny_adapter builds the model where the checkpoint is the factory's folder, and loads any other
    checkpoint (a merged fine-tune) as it is."""
    own = tmp_path / "cache" / "paligemma"
    adapter = load_tiny_adapter(str(own), tiny="paligemma", tiny_dir=str(own), **OPTIONS)
    assert (own / "config.json").is_file() and adapter.checkpoint == str(own)
    elsewhere = tmp_path / "mine"
    with pytest.raises(ConfigError, match="no such folder"):
        load_tiny_adapter(str(elsewhere), tiny="paligemma", tiny_dir=str(own), **OPTIONS)
    assert not elsewhere.exists()


PROTOCOL_MEMBERS = [name for name in dir(VLMAdapter) if not name.startswith("_")] + list(VLMAdapter.__annotations__)


def test_the_protocol_declares_what_the_stages_use():
    """The members the stages and the prediction engine read of a loaded model."""
    assert {
        "model",
        "processor",
        "checkpoint",
        "config",
        "compiled",
        "max_images",
        "answer_prefix",
        "trained_prompt",
        "prepare_inference",
        "render_prompt",
        "generate",
        "score",
        "encode",
        "training_batch",
    } <= set(PROTOCOL_MEMBERS)


@pytest.mark.parametrize("arch", TINY_ARCHITECTURES)
def test_every_family_has_what_the_protocol_declares(arch):
    adapter = load_adapter(str(tiny(arch)), **OPTIONS)
    assert isinstance(adapter, VLMAdapter)
    missing = [name for name in PROTOCOL_MEMBERS if not hasattr(adapter, name)]
    assert not missing, missing
    assert isinstance(adapter.model, torch.nn.Module) and not adapter.model.training
    assert adapter.processor.tokenizer.padding_side == "left"
    assert isinstance(adapter.config, PretrainedConfig)
    assert adapter.config.model_type == adapter.model.config.model_type
    assert adapter.checkpoint == str(tiny(arch)) and adapter.compiled is False
    assert adapter.max_images is None or adapter.max_images >= 1
    assert isinstance(adapter.answer_prefix, str) and adapter.trained_prompt is None
    for name in ("prepare_inference", "render_prompt", "generate", "score", "encode", "training_batch"):
        assert callable(getattr(adapter, name)), name


# --- one prompt key ---


def test_an_old_prompt_key_on_the_command_line_names_task_prompt():
    res = run_vlx("model=tiny_llava", "task=shapes", "model.prompt_template='explain en {text}'", "--cfg", "job")
    assert res.returncode != 0
    line = one_error_line(res)
    assert "model.prompt_template is gone" in line and "task.prompt=" in line, line


@pytest.mark.parametrize("key", ["+model.prompt_template", "+finetune.prompt_template"])
def test_an_old_prompt_key_added_is_refused_before_anything_runs(make_cfg, key, no_model_loads):
    from vlx.__main__ import run_stage

    with pytest.raises(ConfigError, match=rf"{key[1:]} is gone: .*task.prompt="):
        run_stage(make_cfg("model=tiny_llava", "task=shapes", f"{key}='x {{text}}'"))


def test_an_old_prompt_key_given_to_the_loader_is_refused():
    with pytest.raises(ConfigError, match="model.prompt_template is gone"):
        load_adapter(str(tiny("llava_next")), prompt_template="{prompt}", **OPTIONS)


def test_the_prompt_a_model_was_trained_with_is_read_and_compared(tmp_path, caplog):
    assert trained_prompt(None, str(tmp_path)) is None
    (tmp_path / ADAPTER_META).write_text('{"prompt_template": "explain en {text}"}')
    assert trained_prompt(None, str(tmp_path)) == "explain en {text}"
    assert trained_prompt(str(tmp_path), "elsewhere") == "explain en {text}"  # the adapter's folder first
    with caplog.at_level(logging.WARNING, logger="vlx.models.hf"):
        check_trained_prompt("explain en {text}", "explain en {text}")
        assert not caplog.records
        check_trained_prompt("explain en {text}", "Is it {text}?")
    assert "add task.prompt='explain en {text}'" in caplog.text


def test_the_finetune_trains_on_task_prompt(make_cfg):
    """The model's input text in training is task.prompt filled in, as inference asks it."""
    from hydra.utils import instantiate

    from vlx.finetuning.items import training_items

    cfg = make_cfg(
        "stage=finetune", "task=shapes", "task.split=train", "task.limit=3", "task.prompt='explain en {text}'"
    )
    task = instantiate(cfg.task)
    items = training_items(task.examples(), "explanation", task.instruction)
    assert [i.text for i in items] == [f"explain en {ex.text}" for ex in task.examples()]
    assert "prompt_template" not in cfg.finetune and "prompt_template" not in cfg.model


def test_a_run_recorded_with_the_old_prompt_keys_reads_as_today():
    """Old run directories stay resumable: the old default drops, a plain template becomes task.prompt, a template
    around {prompt} stays and shows as a difference."""
    old = {"model.prompt_template": "{prompt}", "model.tiny": None, "task.prompt": "Is it?", "seed": 0}
    assert prompt_as_today(old) == {"task.prompt": "Is it?", "seed": 0}
    finetune = {"finetune.prompt_template": "explain en {text}", "task.prompt": "Is it?"}
    assert prompt_as_today(finetune) == {"task.prompt": "explain en {text}"}
    wrapped = {"model.prompt_template": "Q: {prompt}", "task.prompt": "Is it?"}
    assert prompt_as_today(wrapped) == wrapped


def test_repo_configs_hold_no_old_prompt_key():
    text = "".join(p.read_text() for p in (REPO / "conf").rglob("*.yaml"))
    assert "prompt_template" not in text and "{prompt}" not in text
