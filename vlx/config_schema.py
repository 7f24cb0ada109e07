"""What each of vlx's settings takes, and where a setting that moved lives now: one table each, used by every stage.

How conf/ is laid out (each key lives with the component it configures and means one thing):

- The root holds what several stages read: `seed`, `shots` (demonstrations per prompt), `cpu_threads`, `batch_size`,
  `loader_workers`, `batching`, `decode`, `eval_after_infer`. `vlx model=llava task=meme shots=2 batch_size=16`
  stays as short as it was.
- A stage's own keys are in its option of the `stage` group (conf/stage/<stage>.yaml), read as `stage.<key>`: the
  run a stage reads (`stage.run`: eval, judge, review, select_correct), the run infer continues (`stage.resume`),
  the runs compare and report set side by side (`stage.runs`, `stage.sweep`), the judge whose verdicts compare reads
  (`stage.judge`). A key a stage does not have is Hydra's error ("Could not override 'stage.run'"), said in one line
  with the stages that do have it.
- Components are config groups: the judge's model is the `judge_model` group, whose options are the `model` group's
  (conf/judge_model/<option>.yaml includes conf/model/<option>.yaml), so `judge_model=llava
  judge_model.checkpoint=/models/x` is composed, checked and resolved by Hydra as `model=...` is. How
  demonstrations are drawn is the `fewshot` group (`fewshot.strategy`, `fewshot.source`, ...); how many is the root
  int `shots`, which Hydra reads as any number (`shots=2`, or a sweep `shots=0,3`) with no rewriting of the command
  line: a group option cannot be named by a number, since Hydra reads `shots=2` as the int 2.

An old spelling is refused, not aliased: a run made with `run=<dir>` would otherwise record two spellings of one
setting, and an alias kept for `judge=llava` would give `judge` its two meanings back. The refusal is Hydra's own
error for a key the config lacks, which vlx turns into one line naming the new key (`MOVED_KEYS`, the same rows as
docs/MIGRATION.md).

Values are checked against `RULES`, once, before a stage runs (`check_config`); library functions that take a value
outside a stage (`review`'s port, `eval`'s settings as a mapping) check it with the same rule (`check_value`,
`check_section`). A structured-config schema would need a Union for `auto`-or-a-number (OmegaConf has none) and
would say "could not be converted to Integer" where vlx says what to write, so the rules are data here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

from vlx.errors import ConfigError

# old key -> new key: an override of the old key is refused with one line naming the new one (Hydra finds the old
# key missing; vlx/_cli.py says which replaced it). A prefix ending in "." moves every key under it.
MOVED_KEYS = {
    "run": "stage.run",
    "resume": "stage.resume",
    "runs": "stage.runs",
    "sweep": "stage.sweep",
    "judge": "judge_model",  # stage=judge's model option; stage=compare's verdict folder is stage.judge
    "shots.k": "shots",
    "shots.": "fewshot.",
}
# how each moved key is written now, where more than a rename is needed
_MOVED_HOW = {
    "run": "stage.run=<run dir> (read by stage=eval, judge, review and select_correct)",
    "resume": "stage.resume=<run dir> (stage=infer)",
    "runs": "stage.runs=[<run>,<run>] (stage=compare and stage=report)",
    "sweep": "stage.sweep=<multirun dir> (stage=report)",
    "judge": (
        "judge_model=<model option> for stage=judge (its keys: judge_model.<key>=...); stage.judge=<judge> "
        "for stage=compare"
    ),
    "shots.k": "shots=<k>",
}


def moved_key(key: str) -> str | None:
    """The line that says where `key` (`run`, `+resume`, `shots.strategy`) lives now, or None for a key that did not
    move."""
    key = key.lstrip("+~")
    if key in _MOVED_HOW:
        return f"{key} is now {MOVED_KEYS[key]}: write {_MOVED_HOW[key]}"
    for old, new in MOVED_KEYS.items():
        if old.endswith(".") and key.startswith(old):
            now = new + key[len(old) :]
            return f"{key} is now {now} (the {old[:-1]} group is now {new[:-1]}, and the number of shots is shots=<k>)"
    return None


@dataclass(frozen=True)
class Rule:
    """What one setting takes. A number is an int (`whole`) or any finite number, from `low` to `high` (both left
    out where `exclusive`); `words` are the words taken besides (auto), `choices` the values of a word setting;
    `null`: None is taken; `boolean`: true or false only."""

    use: str = ""  # the message's advice; "" for a choice: "use one of <choices>"
    whole: bool = True
    low: float | None = None
    high: float | None = None
    exclusive: bool = False
    words: tuple[str, ...] = ()
    choices: tuple[str, ...] = ()
    null: bool = False
    boolean: bool = False

    def takes(self, value: Any) -> bool:
        """Whether `value` is one this setting takes."""
        if value is None:
            return self.null
        if isinstance(value, str) and value in self.words:
            return True
        if self.boolean:
            return isinstance(value, bool)
        if self.choices:
            return value in self.choices
        if isinstance(value, bool) or not isinstance(value, int if self.whole else (int, float)):
            return False
        if not math.isfinite(value):
            return False
        if self.low is not None and (value <= self.low if self.exclusive else value < self.low):
            return False
        return self.high is None or (value < self.high if self.exclusive else value <= self.high)

    def advice(self) -> str:
        """What to write instead, for the message."""
        if self.use:
            return self.use
        either = " or ".join(self.words)
        return f"use {either + ' or ' if either else ''}one of {', '.join(self.choices)}"


_POSITIVE = "use a positive whole number"
# every setting vlx checks the value of, by its full key (`stage.*`: the keys of the stage that has them). The word
# settings' choices are written out here, since the modules that act on them import torch (a refused command says
# why without it); tests/test_configs.py holds them equal to those modules' tuples

RULES: dict[str, Rule] = {
    "seed": Rule("use a whole number from 0 to 2**32 - 1 (numpy's range)", low=0, high=2**32 - 1),
    "shots": Rule("use a number of demonstrations >= 0", low=0),
    "cpu_threads": Rule("use auto or a positive number of threads", low=1, words=("auto",)),
    "batch_size": Rule("use a positive integer or auto", low=1, words=("auto",)),
    "loader_workers": Rule("use 0 (a thread) or a number of processes", low=0),
    "batching": Rule(choices=("length", "dataset")),  # vlx.engine.batches.BATCHING
    "decode": Rule(choices=("generate", "score", "score_then_explain")),  # vlx.engine.decoding.DECODERS
    "fewshot.strategy": Rule(words=("auto",), choices=("balanced_random", "from_correct", "fixed", "similar")),
    "generation.max_new_tokens": Rule(_POSITIVE, low=1, null=True),
    "generation.num_beams": Rule(_POSITIVE, low=1, null=True),
    "eval.resamples": Rule("use 0 (no intervals) or a number of bootstrap resamples", low=0),
    "eval.level": Rule("use a coverage between 0 and 1, e.g. 0.95", whole=False, low=0, high=1, exclusive=True),
    "eval.evil_references": Rule(choices=("auto", "all", "first")),
    "eval.java": Rule(
        "use true (METEOR, SPICE and the official PTB tokenizer, all Java) or false (none of them: "
        "scores named <protocol>_no_java)",
        boolean=True,
    ),
    "eval.calibration_bins": Rule("use a number of equal-width bins >= 1, e.g. 15", low=1),
    "review.port": Rule("use a port number, or 0 for any free port", low=0, high=65535),
    "stage.max_new_tokens": Rule(_POSITIVE, low=1),  # stage=judge
    "stage.decode": Rule(choices=("generate", "score")),  # stage=judge
    "finetune.learning_rate": Rule("use a positive number", whole=False, low=0, exclusive=True),
    "finetune.per_device_batch_size": Rule("use a positive number", whole=False, low=0, exclusive=True),
    "finetune.gradient_accumulation_steps": Rule("use a positive number", whole=False, low=0, exclusive=True),
    "finetune.logging_steps": Rule("use a positive number", whole=False, low=0, exclusive=True),
    "finetune.weight_decay": Rule("use a number >= 0 (the seed's is 1e-06)", whole=False, low=0),
    "finetune.warmup_steps": Rule("use a number >= 0 (the seed's is 2)", whole=False, low=0),
    "finetune.dataloader_num_workers": Rule("use 0 (load in the main process) or more", low=0),
    "finetune.infer_limit": Rule("use a positive number of items, or null for the split", low=1, null=True),
    "lora.r": Rule("use a positive rank (the seed's is 64)", low=1),
}


def check_value(key: str, value: Any) -> None:
    """Refuses a value that the setting `key` does not take.

    Raises:
        ConfigError: `key=value: <what to use>`.
    """
    rule = RULES[key]
    if not rule.takes(value):
        raise ConfigError(f"{key}={value!r}: {rule.advice()}")


def check_section(section: str, values: Mapping[str, Any]) -> None:
    """Checks the settings of one section (`eval`, given as a plain mapping) that `values` holds.

    Raises:
        ConfigError: the first value refused.
    """
    for key in RULES:
        if key.startswith(f"{section}.") and (name := key[len(section) + 1 :]) in values:
            check_value(key, values[name])


def check_moved_keys(cfg: DictConfig) -> None:
    """Refuses a composed config that still sets a moved key: a user's own YAML (an experiment) may add a root key
    that the command line could not.

    Raises:
        ConfigError: the first moved key found, with where it lives now.
    """
    for old in ("run", "resume", "runs", "sweep", "judge"):
        if old in cfg:
            raise ConfigError(f"{moved_key(old)} (a YAML of yours sets {old} at the root)")
    if isinstance(cfg.get("shots"), DictConfig):
        raise ConfigError(f"{moved_key('shots.k')} (a YAML of yours sets shots as a section)")


def check_config(cfg: DictConfig) -> None:
    """Checks every setting of the composed config that `RULES` has a rule for (those the run's groups hold), after
    refusing a moved key.

    Raises:
        ConfigError: the first value refused.
    """
    check_moved_keys(cfg)
    for key in RULES:
        section, _, name = key.rpartition(".")
        node = OmegaConf.select(cfg, section) if section else cfg
        if isinstance(node, DictConfig) and name in node:
            check_value(key, OmegaConf.select(cfg, key))
