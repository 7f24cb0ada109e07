"""stage=faithfulness: the faithfulness tests of `vlx.faithfulness` on a finished infer run, with its own model,
prompt and decoding; rows in `<run>/faithfulness/<output>.jsonl`, numbers in `<run>/faithfulness/faithfulness.json`
under the same name (`output_name`: `counterfactual`, `image_reliance_mean_colour`, `image_reliance_other_item`,
`cc_shap`)."""

from __future__ import annotations

import logging
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from vlx.config_data import plain_dict
from vlx.engine.batch_size import release_memory
from vlx.engine.loop import LoopSettings
from vlx.errors import ConfigError
from vlx.faithfulness import cc_shap, counterfactual, editor, image_reliance, shapley
from vlx.faithfulness.results import log_to_tracker
from vlx.faithfulness.source import RunSource, load_run_model, loop_settings, open_run, sample_items
from vlx.models.hf import VLMAdapter
from vlx.run.directory import RunDir
from vlx.run.lock import exclusive
from vlx.run.store import JsonlStore, read_json, write_json
from vlx.stages._common import resolved_config
from vlx.tasks.items import Example
from vlx.tracking import tracking

log = logging.getLogger(__name__)

TESTS = (counterfactual.NAME, image_reliance.NAME, cc_shap.NAME)
# coalitions per forward of the cc_shap test where batch_size=auto (its forwards are one prompt's, all one length)
SHAP_AUTO_BATCH = 8


def settings_of(cfg: DictConfig) -> dict[str, Any]:
    """What the stage's tests depend on, per test: a stopped test continues only with the same."""
    stage = cfg.stage
    common = {"sample": stage.sample, "seed": stage.seed}
    words = list(stage.words) if stage.words is not None else list(counterfactual.WORDS)
    return {
        counterfactual.NAME: {
            **common,
            "positions": stage.positions,
            "words_per_position": stage.words_per_position,
            "words": words,
            # only where an editor proposes words: rows made before editors existed keep their settings
            **(
                {
                    "editor": stage.editor,
                    "editor_words": stage.editor_words,
                    "editor_prompt": editor.EDITOR_PROMPT_VERSION,
                }
                if stage.get("editor")
                else {}
            ),
        },
        image_reliance.NAME: {**common, "ablation": stage.ablation},
        cc_shap.NAME: {
            **common,
            "shap_evals": stage.shap_evals,
            "shap_patches": stage.shap_patches,
            "shap_logits": stage.shap_logits,
        },
    }


def validate(cfg: DictConfig) -> list[str]:
    """The tests asked for, checked before anything loads.

    Raises:
        ConfigError: no run given, or an unknown test or ablation.
    """
    if not cfg.stage.get("run"):
        raise ConfigError("stage=faithfulness needs stage.run=<the directory of a stage=infer run>")
    tests = [str(t) for t in (OmegaConf.to_container(cfg.stage.tests) or [])]
    unknown = [t for t in tests if t not in TESTS]
    if unknown or not tests:
        raise ConfigError(f"stage.tests={tests}: give one or more of {', '.join(TESTS)}")
    if cfg.stage.ablation not in image_reliance.ABLATIONS:
        raise ConfigError(
            f"stage.ablation={cfg.stage.ablation!r}: not an ablation; use one of {', '.join(image_reliance.ABLATIONS)}"
        )
    if counterfactual.NAME in tests and cfg.stage.get("editor") is not None:
        count = cfg.stage.get("editor_words")
        if not isinstance(cfg.stage.editor, str) or not cfg.stage.editor.strip():
            raise ConfigError(
                f"stage.editor={cfg.stage.editor!r}: give run (the run's own model), a checkpoint (hub id or folder), "
                f"or null for the word list alone"
            )
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ConfigError(f"stage.editor_words={count!r}: give how many words the editor proposes per item (>= 1)")
    if cc_shap.NAME in tests:
        check_shap_settings(cfg.stage)
    return tests


def check_shap_settings(stage: DictConfig) -> None:
    """The cc_shap test's keys, checked before anything loads (ConfigError naming the key)."""
    evals, patches = stage.get("shap_evals"), stage.get("shap_patches")
    if isinstance(evals, bool) or not isinstance(evals, int) or evals < 1:
        raise ConfigError(
            f"stage.shap_evals={evals!r}: give a number of model evaluations per output >= 1 (600: the authors')"
        )
    if patches is not None and (isinstance(patches, bool) or not isinstance(patches, int) or patches < 1):
        raise ConfigError(
            f"stage.shap_patches={patches!r}: give the image's patches per side (>= 1), or null for the authors' rule"
        )
    if stage.get("shap_logits") not in shapley.LOGITS:
        raise ConfigError(f"stage.shap_logits={stage.get('shap_logits')!r}: use one of {', '.join(shapley.LOGITS)}")


def output_name(test: str, cfg: DictConfig) -> str:
    """The name of a test's files and of its numbers in faithfulness.json: each ablation its own, so that both
    are kept side by side."""
    return f"{test}_{cfg.stage.ablation}" if test == image_reliance.NAME else test


def check_settings(run: RunDir, test: str, settings: dict[str, Any]) -> None:
    """Records the test's settings, or, where its rows exist, refuses settings that differ from theirs.

    Raises:
        ConfigError: the rows were made with other settings (each difference listed).
    """
    path, rows = run.faithfulness_settings_file(test), run.faithfulness_file(test)
    if rows.is_file() and rows.stat().st_size and path.is_file():
        saved = read_json(path, "written by stage=faithfulness")
        differ = [f"{k}: {saved.get(k)!r} -> {v!r}" for k, v in settings.items() if saved.get(k) != v]
        if differ:
            raise ConfigError(
                f"{rows} was made with other settings (saved -> now): {'; '.join(differ)}. Rerun with the same "
                f"settings, or delete {rows} to start the test again"
            )
    write_json(path, settings)


def propose_words(
    cfg: DictConfig, source: RunSource, model: VLMAdapter, items: list[Example], loop: LoopSettings
) -> dict[str, list[str]]:
    """The editor's words for each item (asked for the items whose answer is not kept yet), by item id."""
    name, count = str(cfg.stage.editor), int(cfg.stage.editor_words)
    store = JsonlStore(source.run.faithfulness_proposals_file)
    kept = store.rows(repair=True)  # an answer cut short by a kill is asked again
    editor.check_proposals(kept, name, count, store.path)
    asked = {str(r["id"]) for r in kept}
    todo = [ex for ex in items if ex.id not in asked]
    if todo:  # the editor is loaded only where an item is left to ask
        proposer = editor.load_editor(name, model)
        editor.propose(proposer, name, todo, count, source.task.labels, store, loop)
        if proposer is not model:
            del proposer
            release_memory()
    return editor.proposed_words(store.rows(), items)


def run_test(test: str, cfg: DictConfig, source: RunSource, model: VLMAdapter, settings: dict[str, Any]) -> dict:
    """Runs one test over the sample (the rows not yet written) and returns its numbers with its settings."""
    run = source.run
    items = sample_items(source.items, cfg.stage.sample, int(cfg.stage.seed))
    loop = loop_settings(source, cfg.batch_size, cfg.batching, cfg.loader_workers)
    store = JsonlStore(run.faithfulness_file(output_name(test, cfg)))
    store.rows(repair=True)  # a row cut short by a kill is removed, to be done again
    seed = int(cfg.stage.seed)
    if test == counterfactual.NAME:
        proposed = propose_words(cfg, source, model, items, loop) if cfg.stage.get("editor") else None
        edits = counterfactual.plan_edits(
            items, settings["words"], cfg.stage.positions, cfg.stage.words_per_position, seed, proposed
        )
        result = counterfactual.run_edits(model, source.task, items, edits, source.predictions, store, loop)
        summary = counterfactual.summarize(store.rows(), cfg.stage.resamples, seed)
    elif test == cc_shap.NAME:
        new = cc_shap.run_items(
            model,
            source.task,
            items,
            source.predictions,
            store,
            evals=int(cfg.stage.shap_evals),
            seed=seed,
            patches=cfg.stage.shap_patches,
            logits=str(cfg.stage.shap_logits),
            batch_size=SHAP_AUTO_BATCH if cfg.batch_size == "auto" else int(cfg.batch_size),
        )
        summary = cc_shap.summarize(store.rows(), cfg.stage.resamples, seed)
        return {**summary, "new_rows": new, "decode": source.decode, "settings": settings}
    else:
        images = image_reliance.ablated_images(items, cfg.stage.ablation, seed, run.faithfulness_images)
        result = image_reliance.run_ablation(
            model, source.task, items, images, cfg.stage.ablation, source.predictions, store, loop
        )
        summary = image_reliance.summarize(store.rows(), cfg.stage.resamples, seed)
    return {**summary, "new_rows": result.answered, "decode": source.decode, "settings": settings}


def run(cfg: DictConfig) -> dict[str, Any]:
    """Runs the tests of `stage.tests` on `stage.run`; returns faithfulness.json's numbers (also written there)."""
    tests = validate(cfg)
    run = RunDir.find(cfg.stage.run, "stage.run")
    with exclusive(run.path):  # not while an infer run still writes its predictions
        source = open_run(run)
    if cc_shap.NAME in tests and source.shots is not None:
        raise ConfigError(
            f"stage.tests has cc_shap, and {run.path} is a few-shot run (shots={source.k}): CC-SHAP's players are "
            f"one prompt's image patches and tokens, and its demonstrations' images are not among them yet; run "
            f"cc_shap on a zero-shot run (the other tests take this one)"
        )
    settings = settings_of(cfg)
    if source.config.get("generation", {}).get("do_sample"):  # each batch draws its own samples
        log.warning(
            "%s sampled its answers (generation.do_sample): an edited item's answer is another draw, so a label may "
            "change with no edit at all; test a greedy run for rates that measure the edits alone",
            run.path,
        )
    with exclusive(run.faithfulness_dir):  # one writer of the tests' files
        for test in tests:
            check_settings(run, output_name(test, cfg), settings[test])
        model = load_run_model(source)
        results = (
            read_json(run.faithfulness_results_file, "stage=faithfulness")
            if run.faithfulness_results_file.is_file()
            else {}
        )
        for test in tests:
            name = output_name(test, cfg)
            results[name] = run_test(test, cfg, source, model, settings[test])
            log.info(
                "%s: %s",
                name,
                {k: v["value"] for k, v in results[name].items() if isinstance(v, dict) and "value" in v},
            )
            write_json(run.faithfulness_results_file, results)
    logger_cfg = plain_dict(cfg.logger, "logger") if cfg.logger else None
    with tracking(logger_cfg, resolved_config(cfg), name=f"faithfulness-{run.path.name}") as tracker:
        log_to_tracker(tracker, run, results, [output_name(test, cfg) for test in tests])
    return results


def config_after_infer(cfg: DictConfig, settings: Any, key: str, run: str) -> DictConfig:
    """`cfg` as this stage's config on the infer run `run`, made by another stage (`key`: the setting that holds
    `settings`, e.g. finetune.faithfulness): the stage's defaults with `settings` on top, checked.

    Raises:
        ConfigError: a setting this stage does not have, `stage.run` among them, or one `validate` refuses.
    """
    from vlx.configs import group_option

    given = plain_dict(settings, key)
    defaults = group_option("stage", "faithfulness")
    unknown = sorted(k for k in given if k not in defaults or k in ("run", "name", "module"))
    if unknown:
        raise ConfigError(
            f"{key}.{unknown[0]}: not a setting of the faithfulness tests; use "
            f"{', '.join(str(k) for k in defaults if k not in ('run', 'name', 'module'))}"
        )
    sub = cfg.copy()
    with open_dict(sub):
        sub.stage = OmegaConf.merge(defaults, given, {"run": run})
    try:
        validate(sub)
    except ConfigError as err:
        raise ConfigError(f"{key}: {err}") from None
    return sub
