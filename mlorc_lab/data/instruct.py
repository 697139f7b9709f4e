"""Instruction data for causal-LM fine-tuning: loaders, prompt format, tokenisation.

Every loader returns a list of ``{"prompt": str, "response": str}`` dicts. The
prompt uses the Alpaca template::

    ### Instruction:
    {instruction}

    ### Input:
    {input}

    ### Response:

The ``### Input:`` block, with its trailing blank line, is left out when the input is
empty. The prompt ends with the newline after ``### Response:`` and the response is
the target text. GSM8K and MetaMathQA use the question as the instruction and the
full worked answer (for GSM8K ending in ``#### <number>``) as the response. Code
Alpaca uses its instruction, input and output fields, CodeFeedback its query and
answer.

Local files, under the data folder (argument ``data_dir`` or ``MLORC_LAB_DATA_DIR``):

- ``gsm8k/{train,test}.jsonl``: JSON lines with ``question`` and ``answer``.
- ``codealpaca/code_alpaca_2k.json``: one JSON list of objects with
  ``instruction``, ``input`` and ``output``.

With no data folder the loaders read the Hugging Face hub: ``openai/gsm8k`` (config
``main``), ``sahil280114/codealpaca`` (its full set of about 20k examples, not the
2k subset), ``meta-math/MetaMathQA`` and ``m-a-p/CodeFeedback-Filtered-Instruction``.
The last two have no local stand-in of the same name; GSM8K train and Code Alpaca 2k
serve for math and code at CPU scale.

``max_examples`` keeps the first N examples in file order, a deterministic head
rather than a random sample.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import pathlib
import re
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from mlorc_lab.data.paths import DATA_DIR_ENV, resolve_data_dir

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100
"""Label value that ``torch.nn.CrossEntropyLoss`` (and transformers) skip."""

GSM8K_SPLITS = ("train", "test")
GSM8K_HUB = ("openai/gsm8k", "main")
CODE_ALPACA_HUB = "sahil280114/codealpaca"
METAMATHQA_HUB = "meta-math/MetaMathQA"
CODEFEEDBACK_HUB = "m-a-p/CodeFeedback-Filtered-Instruction"
CODE_ALPACA_FILE = "code_alpaca_2k.json"


def format_prompt(instruction: str, input_text: str = "") -> str:
    """Format an instruction (and optional input) with the Alpaca template."""
    if input_text.strip():
        return f"### Instruction:\n{instruction}\n\n### Input:\n{input_text}\n\n### Response:\n"
    return f"### Instruction:\n{instruction}\n\n### Response:\n"


def _check_max_examples(max_examples: int | None) -> None:
    if max_examples is not None and (not isinstance(max_examples, int) or max_examples < 1):
        raise ValueError(f"max_examples must be a positive int or None, got {max_examples!r}")


def _require_fields(record: Any, fields: Sequence[str], path: pathlib.Path, line: int) -> None:
    if not isinstance(record, dict):
        raise ValueError(f"{path}, line {line}: expected a JSON object, got {type(record).__name__}")
    for field in fields:
        if field not in record:
            raise ValueError(f"{path}, line {line}: missing field {field!r}; expected fields {list(fields)}")
        if not isinstance(record[field], str):
            raise ValueError(
                f"{path}, line {line}: field {field!r} must be a string, got {type(record[field]).__name__}"
            )


def _missing_file_error(path: pathlib.Path, layout: str) -> FileNotFoundError:
    return FileNotFoundError(
        f"Data file not found: {path}. Expected {layout}. Set {DATA_DIR_ENV} (or pass "
        "data_dir) to the folder that contains it, or unset both to load from the hub."
    )


def _iter_json_lines(path: pathlib.Path) -> Iterator[tuple[int, Any]]:
    """Yield (line number, parsed object) for each non-blank line of a JSON lines file."""
    with path.open("r", encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                yield line_number, json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}, line {line_number}: malformed JSON ({error.msg})") from error


def _iter_json_array(path: pathlib.Path) -> Iterator[tuple[int, Any]]:
    """Yield (line number where the element starts, element) for a file holding one JSON list.

    The list is decoded element by element with ``raw_decode`` so that a missing
    field can be reported with the line where its object starts.
    """
    text = path.read_text(encoding="utf-8")
    decoder = json.JSONDecoder()
    whitespace = re.compile(r"\s*")

    def skip(position: int) -> int:
        return whitespace.match(text, position).end()

    def fail(position: int, what: str) -> ValueError:
        line = text.count("\n", 0, position) + 1
        return ValueError(f"{path}, line {line}: malformed JSON ({what}); expected one JSON list of objects")

    position = skip(0)
    if not text.startswith("[", position):
        raise fail(position, "the file does not start with '['")
    position = skip(position + 1)
    if text.startswith("]", position):
        return
    while True:
        start_line = text.count("\n", 0, position) + 1
        try:
            element, position = decoder.raw_decode(text, position)
        except json.JSONDecodeError as error:
            raise fail(error.pos, error.msg) from error
        yield start_line, element
        position = skip(position)
        if text.startswith(",", position):
            position = skip(position + 1)
        elif text.startswith("]", position):
            break
        else:
            raise fail(position, "expected ',' or ']' after an element")
    if skip(position + 1) != len(text):
        raise fail(skip(position + 1), "extra data after the closing ']'")


def _load_hub(path: str, name: str | None, split: str) -> Any:
    import datasets  # imported here: only the hub path needs it

    logger.info("Loading %s (config %s, split %s) from the Hugging Face hub", path, name, split)
    try:
        if name is None:
            return datasets.load_dataset(path, split=split)
        return datasets.load_dataset(path, name, split=split)
    except OSError as error:
        raise OSError(
            f"Could not load {path} from the Hugging Face hub ({error}). Without network "
            f"access, set {DATA_DIR_ENV} to the local data folder and use the local stand-ins "
            "(load_gsm8k for math, load_code_alpaca for code)."
        ) from error


def _from_hub_records(
    dataset: Any, fields: Sequence[str], source: str, max_examples: int | None
) -> list[dict[str, Any]]:
    if max_examples is not None:
        dataset = dataset.select(range(min(max_examples, len(dataset))))
    missing = [field for field in fields if field not in dataset.column_names]
    if missing:
        raise ValueError(f"{source} lacks the fields {missing}; found {dataset.column_names}")
    return [dict(record) for record in dataset]


def load_gsm8k(
    split: str = "train", data_dir: str | os.PathLike | None = None, max_examples: int | None = None
) -> list[dict[str, str]]:
    """Load GSM8K as prompt/response pairs.

    Parameters
    ----------
    split : {"train", "test"}
    data_dir : str or path-like, optional
        Local data folder with ``gsm8k/<split>.jsonl``; default ``MLORC_LAB_DATA_DIR``,
        else the hub data set ``openai/gsm8k`` (config ``main``).
    max_examples : int, optional
        Keep the first N examples (deterministic head).

    Returns
    -------
    list of dict
        ``prompt`` (the question in the Alpaca template) and ``response`` (the worked
        answer ending in ``#### <number>``).
    """
    if split not in GSM8K_SPLITS:
        raise ValueError(f"Unknown GSM8K split {split!r}; valid splits are: {', '.join(GSM8K_SPLITS)}")
    _check_max_examples(max_examples)

    root = resolve_data_dir(data_dir)
    if root is None:
        dataset = _load_hub(*GSM8K_HUB, split=split)
        records = _from_hub_records(dataset, ("question", "answer"), GSM8K_HUB[0], max_examples)
    else:
        path = root / "gsm8k" / f"{split}.jsonl"
        if not path.is_file():
            raise _missing_file_error(path, "JSON lines with the fields question and answer")
        records = []
        for line, record in _iter_json_lines(path):
            if max_examples is not None and len(records) >= max_examples:
                break
            _require_fields(record, ("question", "answer"), path, line)
            records.append(record)
    return [{"prompt": format_prompt(r["question"]), "response": r["answer"]} for r in records]


def load_code_alpaca(
    data_dir: str | os.PathLike | None = None, max_examples: int | None = None
) -> list[dict[str, str]]:
    """Load Code Alpaca as prompt/response pairs.

    The local file is the 2k subset ``codealpaca/code_alpaca_2k.json``; the hub
    fallback ``sahil280114/codealpaca`` is the full set (about 20k examples).
    Records are returned as they are: the 2k file has two with an empty output,
    whose response is then only the EOS token after tokenisation.
    See :func:`load_gsm8k` for the parameters.
    """
    _check_max_examples(max_examples)
    fields = ("instruction", "input", "output")

    root = resolve_data_dir(data_dir)
    if root is None:
        dataset = _load_hub(CODE_ALPACA_HUB, None, split="train")
        records = _from_hub_records(dataset, fields, CODE_ALPACA_HUB, max_examples)
    else:
        path = root / "codealpaca" / CODE_ALPACA_FILE
        if not path.is_file():
            raise _missing_file_error(path, "one JSON list of objects with instruction, input and output")
        records = []
        for line, record in _iter_json_array(path):
            if max_examples is not None and len(records) >= max_examples:
                break
            _require_fields(record, fields, path, line)
            records.append(record)
    return [
        {"prompt": format_prompt(r["instruction"], r["input"]), "response": r["output"]} for r in records
    ]


def load_metamathqa(max_examples: int | None = None) -> list[dict[str, str]]:
    """Load MetaMathQA (``query``, ``response``) from the hub; there is no local copy."""
    _check_max_examples(max_examples)
    dataset = _load_hub(METAMATHQA_HUB, None, split="train")
    records = _from_hub_records(dataset, ("query", "response"), METAMATHQA_HUB, max_examples)
    return [{"prompt": format_prompt(r["query"]), "response": r["response"]} for r in records]


def load_codefeedback(max_examples: int | None = None) -> list[dict[str, str]]:
    """Load CodeFeedback-Filtered-Instruction (``query``, ``answer``) from the hub; no local copy."""
    _check_max_examples(max_examples)
    dataset = _load_hub(CODEFEEDBACK_HUB, None, split="train")
    records = _from_hub_records(dataset, ("query", "answer"), CODEFEEDBACK_HUB, max_examples)
    return [{"prompt": format_prompt(r["query"]), "response": r["answer"]} for r in records]


def tokenize_prompt_response(
    example: dict[str, str], tokenizer: Any, max_length: int
) -> dict[str, list[int]]:
    """Tokenise one prompt/response pair for loss on the response only.

    The prompt is tokenised with the tokenizer's special tokens (e.g. a BOS token if
    it adds one) and the response without, followed by the EOS token. The two parts
    are tokenised separately so the boundary is exact, then concatenated and cut
    from the right to ``max_length``.

    Parameters
    ----------
    example : dict
        ``{"prompt": str, "response": str}``.
    tokenizer : transformers tokenizer
        Must define ``eos_token_id``.
    max_length : int
        Maximum number of tokens after concatenation.

    Returns
    -------
    dict
        ``input_ids``, ``attention_mask`` (all ones) and ``labels``, which is -100 on
        prompt tokens and the token id on response tokens and EOS. When the prompt
        alone fills ``max_length`` every label is -100; :func:`encode_instruct` drops
        such examples.
    """
    if max_length < 1:
        raise ValueError(f"max_length must be positive, got {max_length}")
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError("tokenizer has no eos_token_id; set tokenizer.eos_token before tokenising")

    prompt_ids = tokenizer(example["prompt"], add_special_tokens=True)["input_ids"]
    response_ids = tokenizer(example["response"], add_special_tokens=False)["input_ids"] + [eos]
    input_ids = (prompt_ids + response_ids)[:max_length]
    labels = ([IGNORE_INDEX] * len(prompt_ids) + response_ids)[:max_length]
    return {"input_ids": input_ids, "attention_mask": [1] * len(input_ids), "labels": labels}


def encode_instruct(
    examples: Sequence[dict[str, str]], tokenizer: Any, max_length: int
) -> list[dict[str, list[int]]]:
    """Tokenise examples with :func:`tokenize_prompt_response`.

    Examples whose prompt fills ``max_length`` have no response token to learn from
    (and would give a NaN loss in a batch of their own), so they are dropped, and the
    number dropped is logged as a warning.
    """
    features = []
    dropped = 0
    for example in examples:
        feature = tokenize_prompt_response(example, tokenizer, max_length)
        if all(label == IGNORE_INDEX for label in feature["labels"]):
            dropped += 1
            continue
        features.append(feature)
    if dropped:
        logger.warning(
            "Dropped %d of %d examples whose prompt fills max_length=%d", dropped, len(examples), max_length
        )
    return features


@dataclasses.dataclass
class InstructCollator:
    """Pad causal-LM features on the right to the longest example of the batch.

    ``input_ids`` are padded with ``pad_token_id``, ``attention_mask`` with 0 and
    ``labels`` with -100, so padding adds nothing to the loss.
    """

    pad_token_id: int

    def __call__(self, features: Sequence[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        length = max(len(feature["input_ids"]) for feature in features)
        batch = {
            "input_ids": torch.full((len(features), length), self.pad_token_id, dtype=torch.long),
            "attention_mask": torch.zeros((len(features), length), dtype=torch.long),
            "labels": torch.full((len(features), length), IGNORE_INDEX, dtype=torch.long),
        }
        for row, feature in enumerate(features):
            size = len(feature["input_ids"])
            for key in batch:
                batch[key][row, :size] = torch.tensor(feature[key], dtype=torch.long)
        return batch


_NUMBER = r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+"
_AFTER_MARKER = re.compile(r"\s*\$?\s*(" + _NUMBER + r")")


def _normalise_number(text: str) -> str:
    number = text.replace(",", "")
    if "." in number:
        number = number.rstrip("0").rstrip(".")
    if number in ("", "-", "-0"):
        number = "0"
    return number


def extract_gsm8k_answer(text: str) -> str | None:
    """Extract the final numeric answer from a GSM8K answer or a model generation.

    The answer is the number right after the last ``####`` (a ``$`` and spaces
    before it are allowed). If there is no ``####`` followed by a number, the last
    number anywhere in the text is used instead, which is the usual rule for model
    generations.

    Returns
    -------
    str or None
        The number with thousands separators removed and trailing decimal zeros
        dropped (``"1,000.50"`` becomes ``"1000.5"``, ``"18.00"`` becomes ``"18"``),
        so equal answers compare equal as strings; None if the text has no number.
    """
    marker = text.rfind("####")
    if marker != -1:
        match = _AFTER_MARKER.match(text, marker + len("####"))
        if match:
            return _normalise_number(match.group(1))
    numbers = re.findall(_NUMBER, text)
    if not numbers:
        return None
    return _normalise_number(numbers[-1])
