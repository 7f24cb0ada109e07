"""Demonstration (in-context example) selection for few-shot prompting.

Demonstrations always come from a pool (another split than the queries, the train split by default) and a query is
never among its own demonstrations (compared by id, so this holds also when the query's split is the pool). Every
choice is seeded and reproducible; none depends on Python's salted `hash()`.

Strategies (`STRATEGIES`):

- ``balanced_random``: k pool items covering the classes as evenly as possible: each class gets ``k // len(labels)``
  and the ``k % len(labels)`` extra places go to classes chosen at random by the seed (k=4 over 3 labels: 2+1+1).
  Within a class the items are drawn at random (seeded). The prompt order is a seeded shuffle of the chosen items,
  so the classes are not grouped and the last demonstration's label carries no pattern. A class with too few pool
  items gives all it has and the places left go to the other classes, as evenly as possible (logged as a warning).
- ``from_correct``: as ``balanced_random``, but only from pool items whose id is in ``correct_ids`` (items a
  previous zero-shot run on the pool split predicted correctly, see `correct_ids_from_predictions`).
- ``fixed``: the pool items with the given ``ids``, in that order, for every query.
- ``similar``: the pool items nearest the query by cosine similarity of text embeddings; with ``balanced=True`` the
  nearest per class, with places per class allocated as for ``balanced_random``. The prompt order is similarity
  ascending, so the most similar demonstration is last, right before the query. Always chosen per query; the seed
  only settles which classes get the extra places.

``per_query=False`` (the random strategies' default, the seed's way): one set is drawn once, independent of the
queries, and reused for every query; a query that is itself in that set gets a redraw that excludes it, seeded from
(seed, query id). ``per_query=True``: each query gets its own draw from an RNG seeded from (seed, query id), so its
demonstrations do not depend on the order queries are processed in (a resumed run picks the same ones).

Only pool items whose label is one of ``labels`` can be demonstrations (a demonstration shows its answer); others
are left out with a warning. The choice depends on the pool's order (the split's file order), which is fixed.
k=0 is zero-shot: ``select`` returns [] and no strategy option is checked, so a sweep over ``shots=0,3`` works
with one config.
"""

from __future__ import annotations

import functools
import hashlib
import logging
from collections.abc import Callable, Collection, Sequence
from pathlib import Path

import numpy as np

from vlx.errors import ConfigError, DataError
from vlx.run.directory import RunDir
from vlx.tasks.answers import is_correct
from vlx.tasks.items import Example
from vlx.text_files import read_objects

logger = logging.getLogger(__name__)

STRATEGIES = ("balanced_random", "from_correct", "fixed", "similar")

# What makes the predictions `from_correct` needs: a zero-shot run over the pool split.
SOURCE_RUN_HINT = (
    "make one with a zero-shot run on the pool split, e.g. `vlx task=... task.split=train shots=0 ...`, "
    "and pass its predictions.jsonl"
)


def _rng(seed: int, *parts: str) -> np.random.Generator:
    """A numpy generator seeded from the seed and string parts through SHA-256 (stable across processes)."""
    # "vlx.fewshot" is this module's old name, kept as the salt: a seed chooses the demonstrations it always chose
    digest = hashlib.sha256("\x1f".join(["vlx.fewshot", str(seed), *parts]).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def _allocate(k: int, available: dict[str, int], rng: np.random.Generator) -> dict[str, int]:
    """Places per class: as even as the classes' sizes allow, the extra places to classes chosen by `rng`.

    Water-filling: classes are visited smallest first; one with fewer items than an even share of what is left
    gives all it has, and once every class left can take an even share (plus one), the remainder is split evenly
    with the extra places drawn at random among them.

    Args:
        k: places to fill; at most the sum of `available`.
        available: class -> number of pool items of that class (in `labels` order, which breaks ties).
        rng: draws the classes that get the extra places.

    Returns:
        class -> places, summing to k.
    """
    alloc = dict.fromkeys(available, 0)
    order = sorted(available, key=lambda c: available[c])  # stable: ties keep `labels` order
    remaining = k
    short = []
    for i, cls in enumerate(order):
        left = order[i:]
        share = remaining // len(left)
        if available[cls] <= share:
            alloc[cls] = available[cls]
            remaining -= available[cls]
            if available[cls] < share:
                short.append(cls)
            continue
        # every class left has more than `share` items, so each can take share + 1
        base, extra = divmod(remaining, len(left))
        lucky = {left[j] for j in rng.choice(len(left), size=extra, replace=False)} if extra else set()
        for c in left:
            alloc[c] = base + (c in lucky)
        remaining = 0
        break
    if short:
        logger.warning(
            "few-shot: too few pool items of class(es) %s for a balanced set of %d; filled from the other classes (%s)",
            ", ".join(short),
            k,
            ", ".join(f"{c}: {n}" for c, n in alloc.items()),
        )
    return alloc


class ShotSelector:
    """Chooses the k demonstrations of each query from a pool (see the module docstring for the rules).

    Args:
        pool: the items demonstrations come from (normally the train split), in file order.
        labels: the task's class names; only pool items with one of these labels are used.
        k: demonstrations per query; 0 is zero-shot.
        strategy: one of `STRATEGIES`.
        seed: seed of every random choice.
        per_query: draw per query (seeded from seed and query id) instead of one shared set; `balanced_random` and
            `from_correct` only (`similar` is always per query, `fixed` never).
        correct_ids: for `from_correct`: ids of pool items a previous run predicted correctly.
        ids: for `fixed`: pool ids, in prompt order; exactly k of them.
        balanced: for `similar`: keep the classes balanced (nearest items per class) instead of the k nearest.
        embed: for `similar`: texts -> (n, d) embeddings; `minilm_embedder()` by default (loaded on first use).

    Raises:
        ConfigError: unknown strategy, negative k, k larger than the usable pool, `from_correct` without
            `correct_ids`, `fixed` ids that are not k pool ids with a label.
    """

    def __init__(
        self,
        pool: Sequence[Example],
        labels: Sequence[str],
        k: int,
        strategy: str = "balanced_random",
        *,
        seed: int = 0,
        per_query: bool = False,
        correct_ids: Collection[str] | None = None,
        ids: Sequence[str] | None = None,
        balanced: bool = True,
        embed: Callable[[list[str]], np.ndarray] | None = None,
    ):
        if strategy not in STRATEGIES:
            raise ConfigError(f"few-shot strategy {strategy!r} is unknown; use one of {', '.join(STRATEGIES)}")
        if k < 0:
            raise ConfigError(f"few-shot k={k}: the number of demonstrations cannot be negative")
        self.k = k
        self.strategy = strategy
        self.seed = seed
        self.per_query = per_query
        self.balanced = balanced
        self.labels = list(dict.fromkeys(labels))
        self._embed = embed
        self._pool_vectors: np.ndarray | None = None
        self._shared: list[Example] | None = None
        self._fixed: list[Example] = []
        self.pool: list[Example] = []
        if k == 0:  # zero-shot: nothing to choose, so nothing to check
            return

        if not self.labels:
            raise ConfigError(
                "few-shot: the task has no labels (open answers) to choose demonstrations by; run it "
                "zero-shot (shots=0)"
            )
        known = set(self.labels)
        usable = [ex for ex in pool if ex.label in known]
        if len(usable) < len(pool):
            logger.warning(
                "few-shot: %d of %d pool items have no label among %s and are not used as demonstrations",
                len(pool) - len(usable),
                len(pool),
                self.labels,
            )

        if strategy == "fixed":
            self._fixed = self._check_fixed(pool, known, ids)
            self.pool = usable
            return

        if strategy == "from_correct":
            if correct_ids is None:
                raise ConfigError(
                    "few-shot strategy from_correct needs the ids a previous run predicted correctly "
                    f"(correct_ids); {SOURCE_RUN_HINT}"
                )
            wanted = {str(i) for i in correct_ids}
            usable = [ex for ex in usable if ex.id in wanted]
            if not usable:
                raise ConfigError(
                    f"few-shot strategy from_correct: none of the {len(wanted)} correct ids is a labelled pool item; "
                    f"was the source run made on the pool split? ({SOURCE_RUN_HINT})"
                )
        self.pool = usable
        what = "correctly predicted pool items" if strategy == "from_correct" else "usable pool items"
        if k > len(self.pool):
            raise ConfigError(f"few-shot k={k} is larger than the pool: only {len(self.pool)} {what}")

        if strategy in ("balanced_random", "from_correct") and not per_query:
            self._shared = self._draw(self.pool, _rng(seed, "shared"))
            logger.info(
                "few-shot: %s (seed %d) chose the same %d demonstrations for every query: %s",
                strategy,
                seed,
                k,
                ", ".join(ex.id for ex in self._shared),
            )

    def _check_fixed(self, pool: Sequence[Example], known: set[str], ids: Sequence[str] | None) -> list[Example]:
        """The pool items for `ids`, in order, after checking they are k labelled pool items."""
        if ids is None or len(ids) != self.k:
            n = "no" if ids is None else len(ids)
            raise ConfigError(f"few-shot strategy fixed needs exactly k={self.k} ids, got {n}")
        by_id: dict[str, Example] = {}
        for ex in pool:
            by_id.setdefault(ex.id, ex)  # first occurrence, as elsewhere the pool's order decides
        chosen = []
        for i in ids:
            found = by_id.get(str(i))
            if found is None:
                raise ConfigError(f"few-shot strategy fixed: id {i!r} is not in the pool ({len(pool)} items)")
            if found.label not in known:
                raise ConfigError(
                    f"few-shot strategy fixed: pool item {i!r} has label {found.label!r}, not one of {sorted(known)}"
                )
            chosen.append(found)
        if len({ex.id for ex in chosen}) < len(chosen):
            raise ConfigError(f"few-shot strategy fixed: ids {list(ids)} repeat an id")
        return chosen

    def _draw(self, candidates: Sequence[Example], rng: np.random.Generator) -> list[Example]:
        """k class-balanced random items of `candidates`, shuffled into prompt order."""
        by_class = self._by_class(candidates)
        alloc = _allocate(self.k, {c: len(items) for c, items in by_class.items()}, rng)
        chosen: list[Example] = []
        for cls, items in by_class.items():
            if alloc[cls]:
                chosen.extend(items[j] for j in rng.choice(len(items), size=alloc[cls], replace=False))
        # shuffled so the prompt does not group the classes or end on a fixed class
        return [chosen[j] for j in rng.permutation(len(chosen))]

    def _by_class(self, items: Sequence[Example]) -> dict[str, list[Example]]:
        """Items grouped by label, in `labels` order, each group in pool order."""
        groups: dict[str, list[Example]] = {c: [] for c in self.labels}
        for ex in items:
            groups[ex.label].append(ex)  # type: ignore[index]  # the pool holds only items labelled in `labels`
        return groups

    def _candidates(self, query: Example) -> list[Example]:
        """The pool without the query, checked to still hold k items."""
        candidates = [ex for ex in self.pool if ex.id != query.id]
        if len(candidates) < self.k:
            raise ConfigError(
                f"few-shot k={self.k} is larger than the pool without query {query.id!r}: only {len(candidates)} items"
            )
        return candidates

    def select(self, query: Example) -> list[Example]:
        """The k demonstrations for `query`, in prompt order (never the query itself)."""
        if self.k == 0:
            return []
        if self.strategy == "fixed":
            return self._select_fixed(query)
        if self.strategy == "similar":
            return self._select_similar(query)
        if self._shared is not None and all(ex.id != query.id for ex in self._shared):
            return list(self._shared)
        # per query, or the query is in the shared set: a draw of its own, fixed by (seed, query id)
        return self._draw(self._candidates(query), _rng(self.seed, "query", query.id))

    def _select_fixed(self, query: Example) -> list[Example]:
        """The fixed items; one that is the query is replaced by a seeded pick of the same class."""
        if all(ex.id != query.id for ex in self._fixed):
            return list(self._fixed)
        taken = {ex.id for ex in self._fixed}
        out = []
        for ex in self._fixed:
            if ex.id != query.id:
                out.append(ex)
                continue
            same = [p for p in self.pool if p.label == ex.label and p.id not in taken and p.id != query.id]
            others = [p for p in self.pool if p.id not in taken and p.id != query.id]
            options = same or others
            if not options:
                raise ConfigError(
                    f"few-shot strategy fixed: query {query.id!r} is a fixed demonstration and the "
                    "pool has no other item to replace it"
                )
            out.append(options[int(_rng(self.seed, "fixed", query.id).integers(len(options)))])
            logger.warning(
                "few-shot: query %s is one of the fixed demonstrations; replaced by %s for it", query.id, out[-1].id
            )
        return out

    def _vectors(self, texts: list[str]) -> np.ndarray:
        """Unit-length embeddings of texts (cosine similarity is then a dot product)."""
        if self._embed is None:
            self._embed = minilm_embedder()
        vectors = np.asarray(self._embed(texts), dtype=np.float64)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors / np.where(norms == 0, 1.0, norms)  # a zero vector stays zero: similarity 0 to everything

    def _select_similar(self, query: Example) -> list[Example]:
        """The nearest pool items (per class when balanced), most similar last."""
        if self._pool_vectors is None:  # once per selector: the pool is embedded on the first query
            self._pool_vectors = self._vectors([ex.text for ex in self.pool])
        sims = self._pool_vectors @ self._vectors([query.text])[0]
        allowed = [i for i, ex in enumerate(self.pool) if ex.id != query.id]
        if len(allowed) < self.k:
            self._candidates(query)  # raises the error that names k and the pool size
        # nearest first; ties go to the earlier pool item so the result does not depend on float noise in sorting
        ranked = sorted(allowed, key=lambda i: (-sims[i], i))
        if self.balanced:
            by_class: dict[str, list[int]] = {c: [] for c in self.labels}
            for i in ranked:
                by_class[self.pool[i].label].append(i)  # type: ignore[index]
            alloc = _allocate(self.k, {c: len(v) for c, v in by_class.items()}, _rng(self.seed, "query", query.id))
            picked = [i for c, idx in by_class.items() for i in idx[: alloc[c]]]
        else:
            picked = ranked[: self.k]
        # ascending similarity: the most similar demonstration sits right before the query
        picked.sort(key=lambda i: (sims[i], -i))
        return [self.pool[i] for i in picked]


def correct_ids_from_predictions(path: str | Path, key: str = "fewshot.source") -> set[str]:
    """Ids of the rows a run predicted correctly (pred == gold), for the `from_correct` strategy.

    Args:
        path: a run's predictions.jsonl (JSON lines with id, gold, pred), or the run directory holding it (or its
            infer/, as a fine-tune run has).
        key: the setting `path` came from, for messages.

    Returns:
        The ids whose `pred` equals a non-null `gold`.

    Raises:
        ConfigError: the file is missing (the message says which run makes one), or a line is not a JSON object with
            id, gold and pred (named by file:line).
    """
    path = Path(path).expanduser()
    if path.is_dir():
        path = RunDir.find(path, key).predictions_file
    if not path.is_file():
        raise ConfigError(f"{path}: no predictions file for few-shot from_correct; {SOURCE_RUN_HINT}")
    correct = set()
    try:
        for where, row in read_objects(path, "a JSON object with id, gold and pred"):
            if not {"id", "gold", "pred"} <= row.keys():
                raise ConfigError(f"{where}: expected a JSON object with id, gold and pred")
            if is_correct(row):
                correct.add(str(row["id"]))
    except DataError as err:  # a broken source run is a config problem here: name it as such
        raise ConfigError(str(err)) from err
    return correct


def _minilm_path() -> Path:
    """The folder of the offline all-MiniLM-L6-v2 (located by the metrics, the one place that knows where)."""
    from vlx.metrics.bertscore import resolve_bertscore_model

    return Path(resolve_bertscore_model("minilm"))


@functools.lru_cache(maxsize=1)
def _load_minilm(path: str):
    """The SentenceTransformer at `path`, loaded once per process (every embedder shares it)."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(path)


def minilm_embedder(batch_size: int = 64) -> Callable[[list[str]], np.ndarray]:
    """A text embedder using the offline all-MiniLM-L6-v2; the model loads on the first call and only once.

    Args:
        batch_size: texts encoded per forward pass.

    Returns:
        texts -> float32 array (len(texts), 384) of L2-normalised sentence embeddings.
    """

    def embed(texts: list[str]) -> np.ndarray:
        model = _load_minilm(str(_minilm_path()))
        if not texts:
            return np.zeros((0, model.get_sentence_embedding_dimension()), dtype=np.float32)
        vectors = model.encode(
            list(texts),
            batch_size=batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)

    return embed
