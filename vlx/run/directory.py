"""`RunDir`: a run directory, the one place that names its files, and their typed readers and writers.

    <run>/
      predictions.jsonl         one `Prediction` per item (stage=infer; under a launcher predictions.rank<n>.jsonl
                                shards first), predictions.csv in the seed's format
      summary.json              stage=infer's counts and throughput, with `run` (`RunInfo`: what the run was)
      manifest.json             everything that changes outputs (vlx.run.manifest); run_config.json the config
                                keys they depend on, resolved (vlx.stages._resume)
      metrics.json              stage=eval's numbers; explanation_items.jsonl its per-item statistics;
                                confusion_matrix.png, reliability.png its plots
      judgements/<judge>/       stage=judge, one folder per judge: verdicts.jsonl (one `Verdict` per item),
                                judge.json (its numbers), judge_config.json, prompt.txt
      faithfulness/             stage=faithfulness: <name>.jsonl, one row per edit or ablated item (counterfactual,
                                image_reliance_<ablation>), <name>.settings.json (what made them), faithfulness.json
                                (the numbers), images/ (the ablation images made)
      ratings.jsonl             stage=review's human ratings; review_sample.json the sample rated
      error.json                a sweep job that failed (vlx.run.sweeps)
      .vlx.lock                 the writer's lock (vlx.run.lock)
      .hydra/                   Hydra's record of the config (config.yaml, hydra.yaml, overrides.yaml)
      adapter/, infer/          a fine-tune run's LoRA adapter, and the inference run with it; checkpoints/ its
                                Trainer checkpoints, train_summary.json its training numbers
      merged/                   stage=merge's full model

Each stage writes its own results file (eval `metrics.json`, each judge its `judge.json`); `RunDir.results` is what
readers (report, compare, review) show: metrics.json with every judge's numbers added.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlx.errors import ConfigError
from vlx.run.records import Prediction, RunInfo, Verdict
from vlx.run.store import JsonlStore, read_json, unique_rows, write_json

log = logging.getLogger(__name__)

# the judge's numbers that readers show beside eval's (as metrics.json held them before each judge kept its own)
JUDGE_HEADLINE = ("judge_score", "judge_score_ci", "judge_n", "all_judge_score", "all_judge_score_ci", "all_judge_n")
# keys of an old metrics.json that stage=judge merged in (the last judge's); readers take them as that judge's
OLD_JUDGE_KEYS = (*JUDGE_HEADLINE, "judge_model", "judge_prompt_version", "judge_unparsed")
HYDRA_FILES = ("config.yaml", "hydra.yaml", "overrides.yaml")


@dataclass(frozen=True)
class RunDir:
    """A run directory. Paths are properties (nothing is made by asking for one); readers raise one-line errors.

    Attributes:
        path: the folder.
    """

    path: Path

    PREDICTIONS = "predictions.jsonl"
    SUMMARY = "summary.json"
    METRICS = "metrics.json"
    MANIFEST = "manifest.json"
    RUN_CONFIG = "run_config.json"
    ERROR = "error.json"
    JUDGEMENTS = "judgements"
    VERDICTS = "verdicts.jsonl"
    JUDGE_RESULTS = "judge.json"
    TRAIN_SUMMARY = "train_summary.json"
    FAITHFULNESS = "faithfulness"

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def __str__(self) -> str:
        return str(self.path)

    @classmethod
    def find(cls, given: str | Path, key: str) -> RunDir:
        """The run a user named: the folder itself, its `infer/` (a fine-tune or demo run, whose adapter inference
        lands there), or the folder of a predictions.jsonl given directly.

        Args:
            given: what the user gave.
            key: the setting it came from, for the message (`run`, `resume`, `fewshot.source`, ...).

        Raises:
            ConfigError: no such folder.
        """
        path = Path(given).expanduser()
        if path.is_file() and path.name == cls.PREDICTIONS:
            return cls(path.parent)
        if not path.is_dir():
            raise ConfigError(f"{key}={str(path)!r}: no such directory; pass the directory of an infer run")
        if not (path / cls.PREDICTIONS).is_file() and (path / "infer" / cls.PREDICTIONS).is_file():
            return cls(path / "infer")
        return cls(path)

    # --- the files -------------------------------------------------------------------------------------------------

    @property
    def predictions_file(self) -> Path:
        """predictions.jsonl: one row per item."""
        return self.path / self.PREDICTIONS

    @property
    def predictions_csv(self) -> Path:
        """predictions.csv: the rows as a spreadsheet."""
        return self.path / "predictions.csv"

    def shard_file(self, rank: int) -> Path:
        """One rank's predictions under a multi-process launcher, merged into predictions.jsonl at the end."""
        return self.path / f"predictions.rank{rank}.jsonl"

    def shard_files(self) -> list[Path]:
        """The ranks' shard files present, in rank order."""
        return sorted(self.path.glob("predictions.rank*.jsonl"))

    @property
    def summary_file(self) -> Path:
        """summary.json: the run's settings and outcome."""
        return self.path / self.SUMMARY

    @property
    def run_config_file(self) -> Path:
        """The config keys the run's outputs depend on, resolved (`vlx.stages._resume`; the faithfulness tests
        rebuild the run's model and task from it)."""
        return self.path / self.RUN_CONFIG

    @property
    def manifest(self) -> Path:
        """The run's manifest: what changes outputs, recorded once."""
        return self.path / self.MANIFEST

    @property
    def metrics_file(self) -> Path:
        """metrics.json: eval's metric values."""
        return self.path / self.METRICS

    @property
    def explanation_items(self) -> Path:
        """stage=eval's per-item explanation statistics, which stage=compare and the review page read."""
        return self.path / "explanation_items.jsonl"

    @property
    def confusion_matrix_png(self) -> Path:
        """The confusion matrix figure."""
        return self.path / "confusion_matrix.png"

    @property
    def reliability_png(self) -> Path:
        """The reliability diagram (calibration) figure."""
        return self.path / "reliability.png"

    @property
    def plots(self) -> tuple[Path, ...]:
        """The plots stage=eval draws (what the review page serves, by name)."""
        return self.confusion_matrix_png, self.reliability_png

    @property
    def ratings_file(self) -> Path:
        """ratings.jsonl: the human ratings of the review page."""
        return self.path / "ratings.jsonl"

    @property
    def review_sample(self) -> Path:
        """The review page's sample of items."""
        return self.path / "review_sample.json"

    @property
    def error_file(self) -> Path:
        """The error record a failed run leaves."""
        return self.path / self.ERROR

    def lock_file(self, rank: int = 0) -> Path:
        """The lock a rank holds while it writes into the run."""
        # under a launcher every rank writes into the run directory: each holds its own lock, so that a second
        # launched run is refused on every rank (none waits at a barrier for ranks that were refused)
        return self.path / (".vlx.lock" if rank == 0 else f".vlx.rank{rank}.lock")

    @property
    def hydra_dir(self) -> Path:
        """Hydra's folder of the run's config, overrides and hydra settings."""
        return self.path / ".hydra"

    @property
    def overrides_file(self) -> Path:
        """The command-line overrides Hydra recorded for the run."""
        return self.hydra_dir / "overrides.yaml"

    @property
    def adapter_dir(self) -> Path:
        """A fine-tune run's LoRA adapter."""
        return self.path / "adapter"

    @property
    def infer_dir(self) -> Path:
        """A fine-tune (or demo) run's inference with its adapter."""
        return self.path / "infer"

    @property
    def checkpoints_dir(self) -> Path:
        """A fine-tune run's Trainer checkpoints (a stopped fine-tune continues from the last whole one)."""
        return self.path / "checkpoints"

    @property
    def train_summary(self) -> Path:
        """A fine-tune run's training numbers, written when the training finished."""
        return self.path / self.TRAIN_SUMMARY

    @property
    def merged_dir(self) -> Path:
        """stage=merge's full model."""
        return self.path / "merged"

    @property
    def judgements(self) -> Path:
        """The folder of the judges' results, one folder per judge."""
        return self.path / self.JUDGEMENTS

    def judge_dir(self, judge: str) -> Path:
        """One judge's folder."""
        return self.judgements / judge

    def verdicts_file(self, judge: str) -> Path:
        """One judge's verdicts file."""
        return self.judge_dir(judge) / self.VERDICTS

    def judge_results_file(self, judge: str) -> Path:
        """The judge's numbers: its scores with intervals, counts, the judge and its prompt."""
        return self.judge_dir(judge) / self.JUDGE_RESULTS

    def judge_config_file(self, judge: str) -> Path:
        """What made the judge's verdicts; a judge run continues only with the same."""
        return self.judge_dir(judge) / "judge_config.json"

    def judge_prompt_file(self, judge: str) -> Path:
        """The prompt one judge was asked with, as rendered."""
        return self.judge_dir(judge) / "prompt.txt"

    @property
    def faithfulness_dir(self) -> Path:
        """stage=faithfulness's folder: its tests' rows, settings and numbers."""
        return self.path / self.FAITHFULNESS

    def faithfulness_file(self, test: str) -> Path:
        """One faithfulness test's rows (an edit or an ablated item each), appended batch by batch."""
        return self.faithfulness_dir / f"{test}.jsonl"

    @property
    def faithfulness_proposals_file(self) -> Path:
        """The counterfactual test's editor answers: the words it proposed per item (`vlx.faithfulness.editor`)."""
        return self.faithfulness_dir / "counterfactual_proposals.jsonl"

    def faithfulness_settings_file(self, test: str) -> Path:
        """What made one test's rows; a stopped test continues only with the same."""
        return self.faithfulness_dir / f"{test}.settings.json"

    @property
    def faithfulness_results_file(self) -> Path:
        """faithfulness.json: every test's numbers with their intervals, and the settings they were made with."""
        return self.faithfulness_dir / "faithfulness.json"

    @property
    def faithfulness_images(self) -> Path:
        """The ablation images stage=faithfulness made (an item's image as a blank of its mean colour)."""
        return self.faithfulness_dir / "images"

    # --- readers ---------------------------------------------------------------------------------------------------

    def has_predictions(self) -> bool:
        """Whether the run has its predictions file."""
        return self.predictions_file.is_file()

    def prediction_store(self) -> JsonlStore:
        """The store of the run's prediction rows."""
        return JsonlStore(self.predictions_file)

    def predictions(self, doing: str = "read") -> list[Prediction]:
        """The run's predictions, one per id, for a stage that reads them (`doing`: "score", "judge", ...).

        Raises:
            ConfigError: the directory has no predictions.jsonl, or an empty one.
            DataError: a bad row (named by file:line), or two different rows for one id.
        """
        store = self.prediction_store()
        if not store.path.is_file():
            raise ConfigError(
                f"stage.run={str(self.path)!r}: no predictions.jsonl there ({store.path} not found); to "
                f"{doing} a run, pass the directory stage=infer wrote "
                "(`stage.run=<run dir>`)"
            )
        rows = read_predictions(store)
        if not rows:
            raise ConfigError(f"{store.path} is empty: nothing to {doing}")
        return unique_rows(rows, store.path)

    def summary(self) -> dict[str, Any]:
        """summary.json ({} where the run has none: a hand-made predictions file)."""
        return read_json(self.summary_file, "written by stage=infer") if self.summary_file.is_file() else {}

    def run_info(self) -> RunInfo | None:
        """summary.json's `run` block: what the run was; None where there is no summary.json."""
        if not self.summary_file.is_file():
            return None
        return RunInfo.from_json(self.summary().get("run") or {}, f"{self.summary_file}: run")

    def write_summary(self, summary: dict[str, Any], info: RunInfo, skipped: list[dict[str, str]]) -> None:
        """summary.json: stage=infer's numbers, the run's identity under `run`, the items left out."""
        write_json(self.summary_file, {**summary, "run": info.to_json(), "skipped_items": skipped})

    def metrics(self) -> dict[str, Any]:
        """metrics.json as stage=eval wrote it ({} where the run is not scored)."""
        return read_json(self.metrics_file, "written by stage=eval") if self.metrics_file.is_file() else {}

    def write_metrics(self, metrics: dict[str, Any]) -> None:
        """Writes metrics.json."""
        write_json(self.metrics_file, metrics)

    def judge_names(self) -> list[str]:
        """The judges that have judged the run (folders under judgements/ holding verdicts)."""
        return sorted(p.parent.name for p in self.judgements.glob(f"*/{self.VERDICTS}"))

    def verdicts(self, judge: str) -> list[Verdict]:
        """A judge's verdicts, one per id (see `predictions` for the errors)."""
        store = JsonlStore(self.verdicts_file(judge))
        return unique_rows(read_verdicts(store), store.path)

    def judge_results(self) -> dict[str, dict[str, Any]]:
        """Each judge's judge.json, by judge name (judges whose judge.json is missing or unreadable left out)."""
        out = {}
        for name in self.judge_names():
            path = self.judge_results_file(name)
            if path.is_file():
                try:
                    out[name] = read_json(path, "written by stage=judge")
                except ConfigError as err:
                    log.warning("%s", err)
        return out

    def faithfulness_results(self) -> dict[str, dict[str, Any]]:
        """faithfulness.json: each test output's numbers and settings, by output name ({} where none ran)."""
        path = self.faithfulness_results_file
        return read_json(path, "written by stage=faithfulness") if path.is_file() else {}

    def faithfulness_rows(self, output: str) -> list[dict[str, Any]]:
        """One test output's rows, in the order written ([] where it has none)."""
        path = self.faithfulness_file(output)
        return JsonlStore(path).rows() if path.is_file() else []

    def write_judge_results(self, judge: str, results: dict[str, Any]) -> None:
        """Writes one judge's results file."""
        write_json(self.judge_results_file(judge), results)

    def results(self) -> dict[str, Any]:
        """What readers show of a scored run: metrics.json, every judge's numbers under `judges` (name -> its
        `JUDGE_HEADLINE` numbers with `judge_model`, `judge_prompt_version`, `judge_unparsed`), and where
        stage=faithfulness ran, faithfulness.json under `faithfulness`. A run judged by one
        judge also has that judge's numbers at the top level, as one key each (`judge_score`, ...).

        A metrics.json written before each judge kept its own numbers holds the last judge's at the top level: where
        no judge.json is found they are read as that judge's; where judge.json files are, they replace them.
        """
        metrics = self.metrics()
        judges = {name: judge_headline(data) for name, data in self.judge_results().items()}
        old = {k: metrics[k] for k in OLD_JUDGE_KEYS if k in metrics}
        if judges:
            metrics = {k: v for k, v in metrics.items() if k not in OLD_JUDGE_KEYS}
        elif old.get("judge_score") is not None or old.get("all_judge_score") is not None:
            judges = {str(old.get("judge_model") or "judge"): old}
        if judges:
            metrics["judges"] = judges
        if len(judges) == 1:
            metrics.update(next(iter(judges.values())))
        if faithfulness := self.faithfulness_results():
            metrics["faithfulness"] = faithfulness
        return metrics


def judge_headline(results: dict[str, Any]) -> dict[str, Any]:
    """A judge.json's numbers as readers show them (and as metrics.json held them before)."""
    out = {k: results.get(k) for k in JUDGE_HEADLINE}
    out.update(
        judge_model=results.get("judge"),
        judge_prompt_version=results.get("prompt_version"),
        judge_unparsed=results.get("unparsed"),
    )
    return out


def read_predictions(store: JsonlStore, repair: bool = False) -> list[Prediction]:
    """Every row of a predictions file as a `Prediction`, in the order written (a bad row named by file:line)."""
    return [Prediction.from_json(row, where) for where, row in store.numbered_rows(repair)]


def read_verdicts(store: JsonlStore, repair: bool = False) -> list[Verdict]:
    """Every row of a verdicts file as a `Verdict`, in the order written."""
    return [Verdict.from_json(row, where) for where, row in store.numbered_rows(repair)]
