"""GSM8K accuracy: extract the final numeric answer from generated text and score it."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from decimal import Decimal, InvalidOperation

from mlorc_lab.train.generation import greedy_generate, truncate_at_stop_sequences

logger = logging.getLogger(__name__)

__all__ = [
    "ALPACA_PROMPT_TEMPLATE",
    "GSM8K_STOP_SEQUENCES",
    "answers_match",
    "extract_answer",
    "format_alpaca_prompt",
    "gsm8k_accuracy",
]

ALPACA_PROMPT_TEMPLATE = "### Instruction:\n{question}\n\n### Response:\n"

# The default prompt ends with the "### Response:" header, so a new "### " header
# starts a turn the model invented. Numbers in that turn must not count as the
# answer. The GSM8K answer marker "\n#### 72" does not match, because its fourth
# "#" comes where the space would be.
GSM8K_STOP_SEQUENCES = ("\n### ",)

ANSWER_MARKER = "####"

# An optional minus sign, then digits with comma thousands separators
# ("1,450,000") or plain digits, then an optional decimal part. A trailing period
# ("72.") is not taken, because the decimal part needs a digit after the point.
_NUMBER = re.compile(r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|-?\.\d+")


def _normalise_number(token: str) -> str:
    return token.replace(",", "")


def extract_answer(text: str) -> str | None:
    """Extract the final numeric answer from a GSM8K solution or a model output.

    The answer is the first number after the last ``"####"``. If there is no
    ``"####"``, or no number follows the last one, it is the last number in the
    whole text. Dollar signs and thousands commas are removed, and a trailing
    period is not part of the number: ``"#### $1,000."`` gives ``"1000"``.

    Parameters
    ----------
    text : str
        A GSM8K ``answer`` field or generated text.

    Returns
    -------
    str or None
        The number as written (``"72.0"`` stays ``"72.0"``; compare with
        :func:`answers_match`), or None if the text contains no number.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a string, got {type(text).__name__}")
    cleaned = text.replace("$", "")

    if ANSWER_MARKER in cleaned:
        after_marker = cleaned.rsplit(ANSWER_MARKER, 1)[1]
        match = _NUMBER.search(after_marker)
        if match is not None:
            return _normalise_number(match.group())

    numbers = _NUMBER.findall(cleaned)
    if not numbers:
        return None
    return _normalise_number(numbers[-1])


def _to_decimal(value: str) -> Decimal | None:
    try:
        number = Decimal(value.strip().replace(",", ""))
    except InvalidOperation:
        return None
    if not number.is_finite():
        return None
    return number


def answers_match(predicted: str | None, reference: str | None) -> bool:
    """Return whether two extracted answers are equal.

    Both are compared as :class:`decimal.Decimal` when both parse, so ``"72.0"``
    equals ``"72"`` and ``"1,000"`` equals ``"1000"``; otherwise as stripped
    strings. None matches nothing, not even None.
    """
    if predicted is None or reference is None:
        return False
    predicted_number = _to_decimal(predicted)
    reference_number = _to_decimal(reference)
    if predicted_number is not None and reference_number is not None:
        return predicted_number == reference_number
    return predicted.strip() == reference.strip()


def format_alpaca_prompt(question: str) -> str:
    """Format a question with the Alpaca instruction template (no input field).

    Returns ``"### Instruction:\\n{question}\\n\\n### Response:\\n"``.
    """
    return ALPACA_PROMPT_TEMPLATE.format(question=question)


def gsm8k_accuracy(
    model,
    tokenizer,
    examples: Sequence[dict],
    max_new_tokens: int = 256,
    batch_size: int = 8,
    format_prompt: Callable[[str], str] = format_alpaca_prompt,
    *,
    stop_sequences: Sequence[str] = GSM8K_STOP_SEQUENCES,
    show_progress: bool = True,
) -> dict:
    """Generate greedy solutions for GSM8K questions and score the final answers.

    Parameters
    ----------
    model, tokenizer
        A transformers causal LM and its tokenizer. Generation uses left padding;
        the tokenizer's ``padding_side`` is restored afterwards.
    examples : sequence of dict
        GSM8K rows with a ``question`` and an ``answer`` (the reference solution
        ending in ``"#### <number>"``).
    max_new_tokens : int, default 256
        Maximum number of generated tokens per question.
    batch_size : int, default 8
        Questions per ``generate`` call. With greedy decoding and left padding it
        sets speed and memory, not the generated text (up to floating-point
        differences from padded attention).
    format_prompt : callable, default format_alpaca_prompt
        Maps a question to the prompt text. The default is the Alpaca template
        ``"### Instruction:\\n{question}\\n\\n### Response:\\n"``.
    stop_sequences : sequence of str, default GSM8K_STOP_SEQUENCES
        The generation is cut at the first of these before the answer is extracted.
    show_progress : bool, default True
        Show a tqdm progress bar.

    Returns
    -------
    dict
        ``accuracy`` (float in [0, 1]), ``n_correct``, ``n_examples`` and
        ``records``: one dict per example with ``question``, ``reference``,
        ``generation``, ``prediction`` (None when no number was found) and
        ``correct``.
    """
    if isinstance(examples, dict):
        raise TypeError("examples must be a sequence of dicts, not a single dict; wrap it in a list")
    if len(examples) == 0:
        raise ValueError("examples is empty; pass at least one GSM8K row")
    if not callable(format_prompt):
        raise TypeError(f"format_prompt must be callable, got {type(format_prompt).__name__}")

    questions, references = [], []
    for index, example in enumerate(examples):
        for field in ("question", "answer"):
            if field not in example:
                raise ValueError(f"example {index} has no field {field!r}; GSM8K rows need 'question' and 'answer'")
        reference = extract_answer(example["answer"])
        if reference is None:
            raise ValueError(f"example {index}: no number found in the answer {example['answer']!r}")
        questions.append(example["question"])
        references.append(reference)

    prompts = [format_prompt(question) for question in questions]
    generations = greedy_generate(
        model,
        tokenizer,
        prompts,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        show_progress=show_progress,
    )

    records = []
    for question, reference, generation in zip(questions, references, generations):
        generation = truncate_at_stop_sequences(generation, stop_sequences)
        prediction = extract_answer(generation)
        records.append(
            {
                "question": question,
                "reference": reference,
                "generation": generation,
                "prediction": prediction,
                "correct": answers_match(prediction, reference),
            }
        )
    n_correct = sum(record["correct"] for record in records)
    accuracy = n_correct / len(records)
    logger.info("GSM8K accuracy = %.4f (%d of %d)", accuracy, n_correct, len(records))
    return {"accuracy": accuracy, "n_correct": n_correct, "n_examples": len(records), "records": records}
