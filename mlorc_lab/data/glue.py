"""GLUE loaders (CoLA, MRPC, RTE, STS-B), their metrics and tokenisation.

Every split loads into a DataFrame with the columns ``sentence1``, ``sentence2`` and
``label``, whether it comes from a local folder or from the ``nyu-mll/glue`` data set
on the Hugging Face hub. CoLA has one sentence, so its ``sentence2`` is None. Labels
follow ``nyu-mll/glue``: integers for the classification tasks (RTE: entailment is 0,
not_entailment is 1) and floats in [0, 5] for the STS-B regression.

The local layout is ``<data_dir>/glue/<folder>/{train,dev}.tsv`` with the files of
the classic GLUE download (``download_glue_data.py``):

- CoLA: no header, 4 columns: source, label, original label, sentence.
- MRPC: header ``Quality #1 ID #2 ID #1 String #2 String`` after a UTF-8 byte
  order mark, with ``Quality`` the label.
- RTE: header ``index sentence1 sentence2 label``, with string labels.
- STS-B: header ``index genre filename year old_index source1 source2 sentence1
  sentence2 score``, with the score as the label.

The ``validation`` split reads ``dev.tsv``.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import math
import os
import pathlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import scipy.stats
import torch

from mlorc_lab.data.paths import DATA_DIR_ENV, resolve_data_dir

logger = logging.getLogger(__name__)

HUB_DATASET = "nyu-mll/glue"
SPLITS = ("train", "validation")
_SPLIT_FILES = {"train": "train.tsv", "validation": "dev.tsv"}
RTE_LABELS = {"entailment": 0, "not_entailment": 1}
STSB_SCORE_RANGE = (0.0, 5.0)


@dataclasses.dataclass(frozen=True)
class GlueTask:
    """Description of one GLUE task: its file layout, hub config, columns and metrics.

    Attributes
    ----------
    name : str
        Canonical lowercase name, equal to the hub config name.
    folder : str
        Folder name in the local GLUE layout, e.g. ``"STS-B"``.
    hub_config : str
        Config name of ``nyu-mll/glue``.
    text_columns : tuple of str
        Text columns of the hub data set, in model input order.
    num_labels : int
        Output size of the classifier head (1 for the STS-B regression).
    is_regression : bool
        True when the label is a float score.
    metric_names : tuple of str
        Keys of the dict that :func:`glue_metrics` returns for this task.
    header : tuple of str or None
        Expected header of the local TSV files, or None for CoLA, which has none.
    num_columns : int
        Number of tab-separated columns in every row of the local files.
    sentence_columns : tuple of int
        Column indices of the sentences in the local files.
    label_column : int
        Column index of the label in the local files.
    """

    name: str
    folder: str
    hub_config: str
    text_columns: tuple[str, ...]
    num_labels: int
    is_regression: bool
    metric_names: tuple[str, ...]
    header: tuple[str, ...] | None
    num_columns: int
    sentence_columns: tuple[int, ...]
    label_column: int

    def layout(self) -> str:
        """Describe the expected local file layout, for error messages."""
        if self.header is None:
            return f"{self.num_columns} tab-separated columns and no header"
        return f"a header of {self.num_columns} tab-separated columns: {' | '.join(self.header)}"


GLUE_TASKS: dict[str, GlueTask] = {
    "cola": GlueTask(
        name="cola",
        folder="CoLA",
        hub_config="cola",
        text_columns=("sentence",),
        num_labels=2,
        is_regression=False,
        metric_names=("matthews_correlation",),
        header=None,
        num_columns=4,
        sentence_columns=(3,),
        label_column=1,
    ),
    "mrpc": GlueTask(
        name="mrpc",
        folder="MRPC",
        hub_config="mrpc",
        text_columns=("sentence1", "sentence2"),
        num_labels=2,
        is_regression=False,
        metric_names=("accuracy", "f1"),
        header=("Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"),
        num_columns=5,
        sentence_columns=(3, 4),
        label_column=0,
    ),
    "rte": GlueTask(
        name="rte",
        folder="RTE",
        hub_config="rte",
        text_columns=("sentence1", "sentence2"),
        num_labels=2,
        is_regression=False,
        metric_names=("accuracy",),
        header=("index", "sentence1", "sentence2", "label"),
        num_columns=4,
        sentence_columns=(1, 2),
        label_column=3,
    ),
    "stsb": GlueTask(
        name="stsb",
        folder="STS-B",
        hub_config="stsb",
        text_columns=("sentence1", "sentence2"),
        num_labels=1,
        is_regression=True,
        metric_names=("pearson", "spearmanr"),
        header=(
            "index", "genre", "filename", "year", "old_index",
            "source1", "source2", "sentence1", "sentence2", "score",
        ),
        num_columns=10,
        sentence_columns=(7, 8),
        label_column=9,
    ),
}

_TASK_ALIASES = {"sts-b": "stsb"}


def get_glue_task(task: str | GlueTask) -> GlueTask:
    """Look up a GLUE task by name, case-insensitively.

    Parameters
    ----------
    task : str or GlueTask
        ``"cola"``, ``"mrpc"``, ``"rte"``, ``"stsb"`` or ``"sts-b"`` in any case, or
        a :class:`GlueTask`, which is returned unchanged.

    Raises
    ------
    ValueError
        If the name is not one of the supported tasks.
    """
    if isinstance(task, GlueTask):
        return task
    if not isinstance(task, str):
        raise TypeError(f"task must be a str or GlueTask, got {type(task).__name__}")
    key = task.strip().lower()
    key = _TASK_ALIASES.get(key, key)
    if key not in GLUE_TASKS:
        valid = ", ".join([*GLUE_TASKS, *_TASK_ALIASES])
        raise ValueError(f"Unknown GLUE task {task!r}; valid tasks are: {valid} (case-insensitive)")
    return GLUE_TASKS[key]


def load_glue_split(
    task: str | GlueTask,
    split: str,
    data_dir: str | os.PathLike | None = None,
    max_examples: int | None = None,
) -> pd.DataFrame:
    """Load one split of a GLUE task as a DataFrame.

    Parameters
    ----------
    task : str or GlueTask
        Task name, see :func:`get_glue_task`.
    split : {"train", "validation"}
        ``"validation"`` is the GLUE dev set (``dev.tsv``).
    data_dir : str or path-like, optional
        Local data folder containing ``glue/<folder>/``. If omitted, the environment
        variable ``MLORC_LAB_DATA_DIR`` is used; if that is unset too, the split is
        loaded from ``nyu-mll/glue`` on the Hugging Face hub.
    max_examples : int, optional
        Keep only the first ``max_examples`` rows in file order. This is a
        deterministic head of the file, not a random sample, so the result does not
        depend on any seed. The head may not have the label balance of the whole
        split.

    Returns
    -------
    pandas.DataFrame
        Columns ``sentence1`` (str), ``sentence2`` (str, or None for CoLA) and
        ``label`` (int64 for classification, float64 for STS-B), with a fresh
        RangeIndex.

    Raises
    ------
    FileNotFoundError
        If the local TSV file does not exist.
    ValueError
        If the task or split is unknown, or a local file does not have the expected
        layout: wrong header, wrong column count or unparseable label. The message
        names the file and the line number.
    """
    glue_task = get_glue_task(task)
    if split not in SPLITS:
        raise ValueError(f"Unknown GLUE split {split!r}; valid splits are: {', '.join(SPLITS)}")
    if max_examples is not None and (not isinstance(max_examples, int) or max_examples < 1):
        raise ValueError(f"max_examples must be a positive int or None, got {max_examples!r}")

    root = resolve_data_dir(data_dir)
    if root is None:
        frame = _load_glue_from_hub(glue_task, split, max_examples)
    else:
        path = root / "glue" / glue_task.folder / _SPLIT_FILES[split]
        frame = read_glue_tsv(path, glue_task, max_examples=max_examples)
    return frame


def read_glue_tsv(
    path: str | os.PathLike, task: str | GlueTask, max_examples: int | None = None
) -> pd.DataFrame:
    """Parse one GLUE TSV file in the layout of ``task`` and validate every row.

    See :func:`load_glue_split` for the returned columns and the errors.
    """
    glue_task = get_glue_task(task)
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"GLUE file not found: {path}. Expected {glue_task.folder} TSV with "
            f"{glue_task.layout()}. Set {DATA_DIR_ENV} (or pass data_dir) to the folder "
            f"that contains glue/{glue_task.folder}/."
        )

    sentences1: list[str] = []
    sentences2: list[str | None] = []
    labels: list[int | float] = []
    # "utf-8-sig" drops the byte order mark at the start of the MRPC files.
    # QUOTE_NONE because GLUE text contains unbalanced double quotes that are part
    # of the sentences, not CSV quoting.
    with path.open("r", encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        if glue_task.header is not None:
            header = next(reader, None)
            if header is None or tuple(header) != glue_task.header:
                raise ValueError(
                    f"{path}, line 1: invalid header {header!r}; expected {glue_task.layout()}"
                )
        for row in reader:
            if max_examples is not None and len(labels) >= max_examples:
                break
            line = reader.line_num
            if len(row) != glue_task.num_columns:
                raise ValueError(
                    f"{path}, line {line}: found {len(row)} columns, expected "
                    f"{glue_task.num_columns} ({glue_task.layout()})"
                )
            labels.append(_parse_label(glue_task, row[glue_task.label_column], path, line))
            sentences1.append(row[glue_task.sentence_columns[0]])
            if len(glue_task.sentence_columns) == 2:
                sentences2.append(row[glue_task.sentence_columns[1]])
            else:
                sentences2.append(None)

    if not labels:
        raise ValueError(f"{path}: no data rows; expected {glue_task.layout()}")
    return _make_frame(glue_task, sentences1, sentences2, labels)


def _parse_label(task: GlueTask, text: str, path: pathlib.Path, line: int) -> int | float:
    if task.name == "rte":
        if text not in RTE_LABELS:
            raise ValueError(
                f"{path}, line {line}: invalid RTE label {text!r}; expected one of "
                f"{', '.join(RTE_LABELS)}"
            )
        return RTE_LABELS[text]

    if task.is_regression:
        try:
            score = float(text)
        except ValueError:
            score = math.nan
        low, high = STSB_SCORE_RANGE
        if not low <= score <= high:  # also rejects NaN
            raise ValueError(
                f"{path}, line {line}: invalid STS-B score {text!r}; expected a number "
                f"in [{low}, {high}] in the last column"
            )
        return score

    if text not in ("0", "1"):
        raise ValueError(
            f"{path}, line {line}: invalid {task.folder} label {text!r}; expected 0 or 1 "
            f"in column {task.label_column + 1}"
        )
    return int(text)


def _make_frame(
    task: GlueTask,
    sentences1: Sequence[str],
    sentences2: Sequence[str | None],
    labels: Sequence[int | float],
) -> pd.DataFrame:
    label_dtype = "float64" if task.is_regression else "int64"
    return pd.DataFrame(
        {
            "sentence1": pd.Series(list(sentences1), dtype=object),
            "sentence2": pd.Series(list(sentences2), dtype=object),
            "label": pd.Series(list(labels), dtype=label_dtype),
        }
    )


def _load_glue_from_hub(task: GlueTask, split: str, max_examples: int | None) -> pd.DataFrame:
    """Load a split of ``nyu-mll/glue`` and map it to the local column layout."""
    import datasets  # imported here: only the hub path needs it

    logger.info("Loading %s/%s split %s from the Hugging Face hub", HUB_DATASET, task.hub_config, split)
    try:
        dataset = datasets.load_dataset(HUB_DATASET, task.hub_config, split=split)
    except OSError as error:
        raise OSError(
            f"Could not load {HUB_DATASET} config {task.hub_config!r} from the Hugging Face "
            f"hub ({error}). To read local GLUE TSV files instead, set {DATA_DIR_ENV} or "
            f"pass data_dir."
        ) from error
    if max_examples is not None:
        dataset = dataset.select(range(min(max_examples, len(dataset))))

    missing = [column for column in (*task.text_columns, "label") if column not in dataset.column_names]
    if missing:
        raise ValueError(
            f"{HUB_DATASET} config {task.hub_config!r} split {split!r} lacks the columns "
            f"{missing}; found {dataset.column_names}"
        )
    sentences1 = dataset[task.text_columns[0]]
    if len(task.text_columns) == 2:
        sentences2 = dataset[task.text_columns[1]]
    else:
        sentences2 = [None] * len(sentences1)
    labels = dataset["label"]
    return _make_frame(task, sentences1, sentences2, labels)


def glue_metrics(task: str | GlueTask, predictions: Any, labels: Any) -> dict[str, float]:
    """Compute the GLUE metrics of a task.

    Parameters
    ----------
    task : str or GlueTask
        Task name, see :func:`get_glue_task`.
    predictions : array-like, shape (n,)
        Predicted class ids (take the argmax of the logits first), or predicted
        scores for STS-B.
    labels : array-like, shape (n,)
        Reference labels in the same order.

    Returns
    -------
    dict
        CoLA: ``matthews_correlation``. MRPC: ``accuracy`` and ``f1`` (positive
        class 1, the paraphrases). RTE: ``accuracy``. STS-B: ``pearson`` and
        ``spearmanr``, which are NaN when either input is constant.

    Raises
    ------
    ValueError
        If the inputs are not 1-D, differ in length or are empty.
    """
    glue_task = get_glue_task(task)
    pred = np.asarray(predictions)
    ref = np.asarray(labels)
    if pred.ndim != 1 or ref.ndim != 1:
        raise ValueError(
            f"predictions and labels must be 1-D, got shapes {pred.shape} and {ref.shape}; "
            "for classification pass class ids (argmax of the logits), for STS-B a score per pair"
        )
    if pred.shape != ref.shape:
        raise ValueError(f"predictions and labels differ in length: {pred.shape[0]} vs {ref.shape[0]}")
    if pred.size == 0:
        raise ValueError("predictions and labels are empty; at least one example is needed")

    if glue_task.is_regression:
        pred = pred.astype(np.float64)
        ref = ref.astype(np.float64)
        return {
            "pearson": float(scipy.stats.pearsonr(pred, ref).statistic),
            "spearmanr": float(scipy.stats.spearmanr(pred, ref).statistic),
        }

    pred = pred.astype(np.int64)
    ref = ref.astype(np.int64)
    accuracy = float(np.mean(pred == ref))
    if glue_task.name == "cola":
        return {"matthews_correlation": matthews_correlation(pred, ref)}
    if glue_task.name == "mrpc":
        return {"accuracy": accuracy, "f1": binary_f1(pred, ref)}
    return {"accuracy": accuracy}


def _confusion_counts(pred: np.ndarray, ref: np.ndarray) -> tuple[int, int, int, int]:
    """Return (tp, tn, fp, fn) of binary predictions with 1 as the positive class."""
    values = set(np.unique(pred).tolist()) | set(np.unique(ref).tolist())
    if not values <= {0, 1}:
        raise ValueError(f"binary metrics need labels and predictions in {{0, 1}}, got values {sorted(values)}")
    tp = int(np.sum((pred == 1) & (ref == 1)))
    tn = int(np.sum((pred == 0) & (ref == 0)))
    fp = int(np.sum((pred == 1) & (ref == 0)))
    fn = int(np.sum((pred == 0) & (ref == 1)))
    return tp, tn, fp, fn


def matthews_correlation(predictions: Any, labels: Any) -> float:
    """Compute the Matthews correlation coefficient of binary predictions.

    MCC = (tp * tn - fp * fn) / sqrt((tp + fp)(tp + fn)(tn + fp)(tn + fn)). When a
    factor of the denominator is zero (a constant prediction or label vector) the
    result is 0.0, the convention of scikit-learn and of the GLUE leaderboard.
    """
    tp, tn, fp, fn = _confusion_counts(np.asarray(predictions), np.asarray(labels))
    denominator = math.sqrt(float(tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    if denominator == 0.0:
        return 0.0
    return (tp * tn - fp * fn) / denominator


def binary_f1(predictions: Any, labels: Any) -> float:
    """Compute the F1 score of the positive class 1; 0.0 when there is no true positive."""
    tp, _, fp, fn = _confusion_counts(np.asarray(predictions), np.asarray(labels))
    if tp == 0:
        return 0.0
    return 2 * tp / (2 * tp + fp + fn)


def encode_glue(frame: pd.DataFrame, tokenizer: Any, max_length: int) -> list[dict[str, Any]]:
    """Tokenise a GLUE DataFrame into one feature dict per row.

    Parameters
    ----------
    frame : pandas.DataFrame
        Output of :func:`load_glue_split`.
    tokenizer : transformers tokenizer
        Called on the sentence (pair) with truncation to ``max_length`` and no
        padding; :class:`GlueCollator` pads each batch.
    max_length : int
        Maximum number of tokens per example, special tokens included.

    Returns
    -------
    list of dict
        The tokenizer's fields as lists of ints (``input_ids``, ``attention_mask``
        and, for BERT, ``token_type_ids``) plus ``labels``: a float32 scalar tensor
        when the label column is floating point (STS-B regression), an int64 scalar
        tensor when it is integer (classification).
    """
    if max_length < 2:
        raise ValueError(f"max_length must be at least 2 tokens, got {max_length}")
    for column in ("sentence1", "sentence2", "label"):
        if column not in frame.columns:
            raise ValueError(f"frame lacks the column {column!r}; pass the output of load_glue_split")
    if pd.api.types.is_float_dtype(frame["label"]):
        label_dtype = torch.float32
    elif pd.api.types.is_integer_dtype(frame["label"]):
        label_dtype = torch.int64
    else:
        raise ValueError(f"label column must be integer or float, got dtype {frame['label'].dtype}")

    first = frame["sentence1"].tolist()
    second = frame["sentence2"].tolist()
    single = all(text is None for text in second)
    if single:
        encoded = tokenizer(first, truncation=True, max_length=max_length)
    else:
        encoded = tokenizer(first, second, truncation=True, max_length=max_length)

    features = []
    keys = list(encoded.keys())
    for row, label in enumerate(frame["label"].tolist()):
        feature = {key: encoded[key][row] for key in keys}
        feature["labels"] = torch.tensor(label, dtype=label_dtype)
        features.append(feature)
    return features


@dataclasses.dataclass
class GlueCollator:
    """Batch :func:`encode_glue` features: pad with ``tokenizer.pad``, stack labels.

    Padding goes to the longest example of the batch. Picklable, so it works with
    DataLoader worker processes.
    """

    tokenizer: Any

    def __call__(self, features: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        labels = torch.stack([feature["labels"] for feature in features])
        inputs = [{key: value for key, value in feature.items() if key != "labels"} for feature in features]
        batch = dict(self.tokenizer.pad(inputs, padding="longest", return_tensors="pt"))
        batch["labels"] = labels
        return batch

