"""Experiment tracking: Weights & Biases when `logger=wandb`, nothing when `logger=none`.

wandb is imported only when used. The run is always finished, with a non-zero exit code when the stage failed, so a
crashed run in a sweep does not stay "running" on the dashboard. API keys come from `wandb login` or WANDB_API_KEY and
are never written to configs or outputs.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vlx.run.records import Prediction

log = logging.getLogger(__name__)

# the W&B predictions table: `image` shows the first `logger.log_images` images, `image_path` names every file
PREDICTION_COLUMNS = ("id", "image", "image_path", "text", "gold", "pred", "explanation", "raw")


class Tracker:
    """No tracking: every call does nothing (`logger=none`)."""

    def log_summary(self, summary: dict[str, Any]) -> None:
        """Records the run's summary (nothing here)."""
        pass

    def log_predictions(self, rows: Sequence[Prediction], images: int = 0) -> None:
        """Records a table of prediction rows, the first `images` with their image (nothing here)."""
        pass

    def log_metrics(self, metrics: dict[str, float], per_class: dict[str, dict[str, float]], figure: Path) -> None:
        """Records metric values, a per-class table and a figure (nothing here)."""
        pass

    def log_table(self, key: str, columns: Sequence[str], data: Sequence[Sequence[Any]]) -> None:
        """Records a table (nothing here)."""
        pass

    def log_artifact(self, path: Path, name: str, kind: str) -> None:
        """Records a file or folder as an artifact (nothing here)."""
        pass

    def log_image(self, key: str, path: Path) -> None:
        """Records an image file (nothing here)."""
        pass


class WandbTracker(Tracker):
    """Logs to an open wandb run."""

    def __init__(self, run: Any):
        self.run = run

    def log_summary(self, summary: dict[str, Any]) -> None:
        """Sets the W&B run's summary to the summary's plain values."""
        flat = {k: v for k, v in summary.items() if isinstance(v, (int, float, str, bool)) or v is None}
        self.run.summary.update(flat)
        self.run.log({k: v for k, v in flat.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})

    def log_metrics(self, metrics: dict[str, float], per_class: dict[str, dict[str, float]], figure: Path) -> None:
        """Scalar metrics into the summary, a per-class table, and the confusion matrix image."""
        import wandb

        self.run.summary.update(metrics)
        logged: dict[str, Any] = dict(metrics)
        if per_class:
            columns: list[str | int] = ["label", *next(iter(per_class.values())).keys()]  # (wandb's column type)
            logged["per_class"] = wandb.Table(columns=columns, data=[[k, *v.values()] for k, v in per_class.items()])
        if figure.is_file():
            logged["confusion_matrix"] = wandb.Image(str(figure))
        self.run.log(logged)

    def log_artifact(self, path: Path, name: str, kind: str) -> None:
        """A folder (the LoRA adapter) as a W&B artifact; only online, where it is uploaded (offline runs would
        copy it into the run folder for nothing)."""
        import wandb

        if self.run.settings.mode != "online":
            log.info("W&B is %s: the adapter is not uploaded as an artifact", self.run.settings.mode)
            return
        artifact = wandb.Artifact(name, type=kind)
        artifact.add_dir(str(path))
        self.run.log_artifact(artifact)

    def log_image(self, key: str, path: Path) -> None:
        """A PNG (a plot) under `key`."""
        import wandb

        self.run.log({key: wandb.Image(str(path))})

    def log_table(self, key: str, columns: Sequence[str], data: Sequence[Sequence[Any]]) -> None:
        """Logs a W&B table."""
        import wandb

        self.run.log(
            {
                key: wandb.Table(
                    columns=list(columns),
                    data=[
                        [None if v is None else str(v) if not isinstance(v, (int, float)) else v for v in row]
                        for row in data
                    ],
                )
            }
        )

    def log_predictions(self, rows: Sequence[Prediction], images: int = 0) -> None:
        """A table of predictions whose first `images` rows carry their image, and those images with captions.

        The image column holds images only (an empty cell after the first `images` rows, and for a file that is
        gone): a table column has one type, and wandb refuses a path string in a column of images. The image file's
        path is a column of its own. The separate image list is there because wandb writes table images only
        online: offline runs (and `wandb sync` of them) show the word "Image" in the table (wandb issue 4611).
        """
        import wandb

        table = wandb.Table(columns=list(PREDICTION_COLUMNS))
        shown = []
        for i, row in enumerate(rows):
            values = {c: getattr(row, c, None) for c in PREDICTION_COLUMNS}
            values["image_path"], values["image"] = row.image, None
            if i < images and row.image is not None and Path(row.image).is_file():
                caption = f"{row.id}: gold {row.gold}, pred {row.pred}"
                values["image"] = wandb.Image(row.image, caption=caption)
                shown.append(values["image"])
            table.add_data(*(values[c] for c in PREDICTION_COLUMNS))
        self.run.log({"predictions": table, **({"examples": shown} if shown else {})})


@contextmanager
def tracking(settings: dict[str, Any] | None, config: dict[str, Any], name: str) -> Iterator[Tracker]:
    """Opens a tracker for one stage run and always closes it.

    Args:
        settings: the `logger` config (project, entity, mode, group, tags, dir); None or empty = no tracking.
        config: the resolved run config, logged once.
        name: the run's name (its directory).
    """
    if not settings:
        yield Tracker()
        return
    import wandb

    init = {k: settings.get(k) for k in ("project", "entity", "group", "tags", "dir", "mode")}
    if init["dir"] is not None:  # a logger config of the user's own may leave it to W&B (./wandb)
        Path(init["dir"]).mkdir(parents=True, exist_ok=True)
    try:
        run = wandb.init(name=name, config=config, **{k: v for k, v in init.items() if v is not None})
    except Exception as err:  # noqa: BLE001 - wandb's errors (no key, no network, a bad setting) as one line
        from vlx.errors import ConfigError

        raise ConfigError(
            f"W&B could not start a run ({type(err).__name__}: {' '.join(str(err).split())[:300]}); run `wandb login`, "
            f"or log offline with logger.mode=offline (WANDB_MODE=offline), or turn it off with logger=none"
        ) from err
    log.info("W&B run %s (mode %s) in %s", run.name, run.settings.mode, run.dir)
    exit_code = 1
    try:
        yield WandbTracker(run)
        exit_code = 0
    finally:
        run.finish(exit_code=exit_code)
