"""Every option of every config group composes, and every `_target_` accepts the keys its config gives it."""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO
from helpers import shipped_configs, shipped_options
from hydra.utils import get_object
from omegaconf import OmegaConf

from vlx.__main__ import CONFIG_DIR
from vlx.stages._common import resolved_config

GROUPS = [
    "model",
    "judge_model",
    "task",
    "fewshot",
    "quant",
    "lora",
    "generation",
    "logger",
    "stage",
    "paths",
    "experiment",
    "finetune",
    "eval",
]
# options with a mandatory value (???) get one
REQUIRED = {
    "task=explainer_csv": ["task.path=/data/correct.csv"],
    "task=table": ["task.source=/data/mine"],
    "model=hf": ["model.checkpoint=org/model"],
    "judge_model=hf": ["judge_model.checkpoint=org/model"],
}
# arguments the stage passes at run time rather than through config
RUNTIME_ARGS = {"quantization"}


def accepted(target: Any) -> set[str]:
    """The keyword arguments a class takes, following **kwargs up its base classes' __init__; for
    `vlx.models.load_adapter`, its own and those of the adapter classes it picks from, to which it passes the rest
    (and for `vlx.models.tiny.load_tiny_adapter`, its own and load_adapter's)."""
    if not isinstance(target, type):
        from vlx.models import FAMILY_ADAPTERS, HFAdapter, load_adapter

        names = set(inspect.signature(target).parameters) - {"options"} | accepted(HFAdapter)
        names |= set().union(*(accepted(cls) for cls in FAMILY_ADAPTERS.values()))
        return names | (accepted(load_adapter) if target is not load_adapter else set())
    names: set[str] = set()
    for cls in target.__mro__:
        if cls is object or "__init__" not in vars(cls):
            continue
        params = inspect.signature(cls.__init__).parameters
        names |= {n for n, p in params.items() if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and n != "self"}
        if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            break
    return names


def options(group: str) -> list[str]:
    """The options vlx ships, not a user's own YAMLs in the checkout's conf/ (neither tested nor required here)."""
    return shipped_options(group)


def test_every_group_has_its_options():
    assert {"hf", "llava", "paligemma", "tiny", "tiny_llava", "tiny_paligemma"} <= set(options("model"))
    assert options("task") == [
        "aokvqa",
        "esnli",
        "explainer_csv",
        "hatred",
        "meme",
        "scienceqa",
        "shapes",
        "table",
        "vqax",
    ]
    assert options("quant") == ["4bit", "nf4", "none"]
    assert options("lora") == ["none", "r64", "r64_lm"]
    assert options("logger") == ["none", "wandb"]
    assert options("fewshot") == ["default"]
    # the judge is any model: each option of conf/model is one of conf/judge_model, which includes it
    assert options("judge_model") == options("model")
    for option in options("judge_model"):
        text = (Path(CONFIG_DIR) / "judge_model" / f"{option}.yaml").read_text()
        assert f"  - /model/{option}@_here_" in text, option
    assert {"greedy", "seed_sampling"} <= set(options("generation"))


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in options(g)])
def test_option_composes_and_targets_bind(make_cfg, group, option):
    required = REQUIRED.get(f"{group}={option}", [])
    cfg = make_cfg(f"{group}={option}", *required)
    resolved_config(cfg)  # every interpolation resolves
    node = cfg if group == "experiment" else cfg[group]
    for sub in [node] if group != "experiment" else [cfg.model, cfg.task]:
        if "_target_" not in sub:
            continue
        target = get_object(sub._target_)
        kwargs = {k: v for k, v in sub.items() if k != "_target_"}
        unknown = set(kwargs) - accepted(target) - RUNTIME_ARGS
        assert not unknown, f"{group}={option}: {target.__name__} does not take {unknown}"


def test_defaults_are_the_seed_setup(make_cfg):
    cfg = make_cfg()
    assert cfg.model.checkpoint == "llava-hf/llava-v1.6-mistral-7b-hf"
    assert cfg.task.name == "meme" and cfg.shots == 0 and not cfg.quant and not cfg.lora
    assert cfg.generation.do_sample is False
    assert cfg.model.trust_remote_code is False


def test_quant_presets_build_the_seed_settings(make_cfg):
    import torch

    from vlx.stages._common import build_quantization

    llava = build_quantization(make_cfg("quant=4bit").quant)
    assert llava.load_in_4bit and llava.bnb_4bit_compute_dtype == torch.float16
    pali = build_quantization(make_cfg("quant=nf4").quant)
    assert pali.bnb_4bit_quant_type == "nf4" and pali.bnb_4bit_use_double_quant
    assert pali.bnb_4bit_compute_dtype == torch.float16
    assert build_quantization(make_cfg("quant=none").quant) is None


def test_seed_sampling_is_the_seeds_settings(make_cfg):
    gen = OmegaConf.to_container(make_cfg("generation=seed_sampling").generation)
    assert gen == {
        "do_sample": True,
        "max_new_tokens": 32,
        "temperature": 1.2,
        "repetition_penalty": 1.5,
        "top_p": 0.9,
        "top_k": 50,
    }


def test_model_checkpoint_can_point_anywhere(make_cfg):
    cfg = make_cfg("model=paligemma", "model.checkpoint=/models/my-paligemma")
    assert cfg.model.checkpoint == "/models/my-paligemma"
    assert cfg.model._target_ == "vlx.models.load_adapter"  # the checkpoint's config.json picks PaliGemmaAdapter


# the model YAMLs that name a real checkpoint (the others: the generic hf.yaml and the tiny models)
REAL_MODELS = [name for name in options("model") if name != "hf" and not name.startswith("tiny")]


def test_the_listed_families_ship_a_yaml():
    assert {
        "llava",
        "paligemma",
        "paligemma2",
        "qwen2_5_vl",
        "qwen3_vl",
        "gemma3",
        "idefics3",
        "llava_onevision",
        "internvl",
    } <= set(REAL_MODELS)


@pytest.mark.parametrize("name", REAL_MODELS)
def test_a_model_is_one_yaml_over_the_shared_keys(make_cfg, name):
    """Each model YAML names its checkpoint, a hub id, (and options of its own) over hf.yaml's keys, which live there
    once."""
    shared = set(make_cfg("model=hf", "model.checkpoint=x").model)
    cfg = make_cfg(f"model={name}")
    assert cfg.model.checkpoint.count("/") == 1 and not cfg.model.checkpoint.startswith((".", "/", "~"))
    assert shared <= set(cfg.model) and set(cfg.model) - shared <= {"max_tiles"}
    text = (Path(CONFIG_DIR) / "model" / f"{name}.yaml").read_text()
    assert "dtype:" not in text and "device_map:" not in text  # not copied from hf.yaml


def test_the_generic_model_needs_a_checkpoint(make_cfg):
    from omegaconf.errors import MissingMandatoryValue

    with pytest.raises(MissingMandatoryValue, match="checkpoint"):
        make_cfg("model=hf").model.checkpoint  # noqa: B018


def test_stage_modules_expose_run():
    """Every stage YAML names its module, each module is a stage's, and each has its run(cfg)."""
    modules = {name: OmegaConf.load(Path(CONFIG_DIR) / "stage" / f"{name}.yaml").module for name in options("stage")}
    stage_files = {f"vlx.stages.{p.stem}" for p in (REPO / "vlx" / "stages").glob("[!_]*.py")}
    assert set(modules.values()) == stage_files, (modules, stage_files)
    for module in modules.values():
        assert callable(importlib.import_module(module).run)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (["shots=2"], 2),
        (["shots=0", "fewshot.strategy=fixed"], 0),
        (["shots.k=1", "model=llava"], "shots.k=1: shots.k is now shots: write shots=<k>"),
        (["shots.source=x"], "shots.source=x: shots.source is now fewshot.source"),
    ],
)
def test_shots_is_a_number_hydra_reads(make_cfg, given, expected):
    """`shots=2` is the root key itself (Hydra reads the int; nothing rewrites the command line); the old spellings
    of the shots group are refused with one line naming the new key."""
    from vlx._cli import config_mistake

    if isinstance(expected, int):
        assert make_cfg(*given).shots == expected
        return
    with pytest.raises(Exception) as caught:  # noqa: PT011 - Hydra's own exception
        make_cfg(*given)
    line = config_mistake(caught.value, Path(CONFIG_DIR), given)
    assert line is not None and line.startswith(expected), line


def test_the_schemas_choices_are_those_the_code_takes():
    """vlx.config_schema writes the word settings' choices out (their modules import torch): the same as the code's."""
    from vlx.config_schema import RULES
    from vlx.engine.batches import BATCHING
    from vlx.engine.decoding import DECODERS
    from vlx.engine.shots import STRATEGIES
    from vlx.metrics.explanations import EVIL_REFERENCES
    from vlx.stages.judge import DECODES

    assert RULES["batching"].choices == BATCHING and RULES["decode"].choices == DECODERS
    assert RULES["fewshot.strategy"].choices == STRATEGIES and RULES["eval.evil_references"].choices == EVIL_REFERENCES
    assert DECODES == ("generate", "score")


def test_a_sweep_of_shots_is_hydras():
    """`vlx -m shots=0,3`: a sweep Hydra reads as the ints 0 and 3, one job each."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    override = OverridesParser.create().parse_override("shots=0,3")
    assert list(override.sweep_iterator()) == [0, 3]


def test_pyproject_ships_every_package_and_config_folder():
    """The wheel holds what pyproject lists: a package or a config group folder left out would be missing from an
    installed vlx (tests/test_install.py builds one)."""
    tomllib = pytest.importorskip("tomllib", reason="tomllib is Python 3.11's")
    settings = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    code = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "vlx").rglob("__init__.py")}
    # setuptools takes any folder of shipped files as a package, and warns about one that is not listed
    data = {
        ".".join(p.parent.relative_to(REPO).parts)
        for p in (REPO / "vlx").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix not in (".py", ".pyc")
    }
    folders = {folder.parts for p in shipped_configs() for folder in p.parents}
    conf = {".".join(("vlx", "conf", *parts)) for parts in folders}
    assert set(settings["packages"]) == code | data | conf
    assert settings["package-dir"] == {"vlx.conf": "conf"}
