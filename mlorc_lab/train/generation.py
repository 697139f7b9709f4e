"""Greedy batched generation and stop-sequence truncation for causal-LM evaluation."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from tqdm.auto import tqdm

logger = logging.getLogger(__name__)

__all__ = ["greedy_generate", "truncate_at_stop_sequences"]


def truncate_at_stop_sequences(text: str, stop_sequences: Sequence[str]) -> str:
    """Cut ``text`` at the earliest occurrence of any stop sequence.

    Parameters
    ----------
    text : str
        Generated text.
    stop_sequences : sequence of str
        Strings that mark the end of the useful output. The stop sequence itself
        is removed along with everything after it.

    Returns
    -------
    str
        ``text`` up to the first stop sequence, or ``text`` unchanged if none occurs.
    """
    if isinstance(stop_sequences, str):
        raise TypeError(
            f"stop_sequences must be a sequence of strings, got the string {stop_sequences!r}; "
            "wrap it in a tuple"
        )
    cut = len(text)
    for stop in stop_sequences:
        if not stop:
            raise ValueError("stop_sequences contains an empty string; remove it")
        position = text.find(stop)
        if position != -1:
            cut = min(cut, position)
    return text[:cut]


def greedy_generate(
    model,
    tokenizer,
    prompts: Sequence[str],
    *,
    max_new_tokens: int,
    batch_size: int = 8,
    show_progress: bool = True,
) -> list[str]:
    """Generate a greedy continuation for each prompt, in batches.

    Batches are padded on the left so that every prompt ends at the same position
    and generation continues straight after the prompt's last token. The
    tokenizer's ``padding_side`` is set to ``"left"`` for the call and restored
    afterwards, also when generation raises.

    Parameters
    ----------
    model : transformers.PreTrainedModel
        Causal language model with a ``generate`` method. It is put in eval mode.
    tokenizer : transformers.PreTrainedTokenizerBase
        Tokenizer of ``model``. If it has no pad token, its EOS token id is used
        as ``pad_token_id`` for generation.
    prompts : sequence of str
        Prompts to continue.
    max_new_tokens : int
        Maximum number of generated tokens per prompt.
    batch_size : int, default 8
        Number of prompts per ``generate`` call.
    show_progress : bool, default True
        Show a tqdm progress bar over batches.

    Returns
    -------
    list of str
        The generated continuation of each prompt (prompt excluded), decoded with
        special tokens skipped, in the order of ``prompts``.
    """
    if isinstance(prompts, str):
        raise TypeError("prompts must be a sequence of strings, not a single string; wrap it in a list")
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be a positive integer, got {max_new_tokens!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")

    pad_token_id = tokenizer.pad_token_id
    if pad_token_id is None:
        pad_token_id = tokenizer.eos_token_id
    if pad_token_id is None:
        raise ValueError(
            "tokenizer has neither a pad token nor an EOS token; set tokenizer.pad_token "
            "before batched generation"
        )

    model.eval()
    device = next(model.parameters()).device
    continuations: list[str] = []
    original_padding_side = tokenizer.padding_side
    original_pad_token = tokenizer.pad_token
    tokenizer.padding_side = "left"
    if original_pad_token is None:
        # Padding needs a pad token in the tokenizer itself, not only in generate().
        tokenizer.pad_token = tokenizer.eos_token
    try:
        starts = range(0, len(prompts), batch_size)
        for start in tqdm(starts, desc="generate", disable=not show_progress):
            batch = list(prompts[start : start + batch_size])
            encoded = tokenizer(batch, return_tensors="pt", padding=True).to(device)
            with torch.inference_mode():
                output_ids = model.generate(
                    **encoded,
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    pad_token_id=pad_token_id,
                )
            # With left padding all prompts end at column input_ids.shape[1].
            new_ids = output_ids[:, encoded["input_ids"].shape[1] :]
            continuations.extend(tokenizer.batch_decode(new_ids, skip_special_tokens=True))
    finally:
        tokenizer.padding_side = original_padding_side
        if original_pad_token is None:
            tokenizer.pad_token = None
    logger.info("generated %d continuations (max_new_tokens=%d)", len(continuations), max_new_tokens)
    return continuations
