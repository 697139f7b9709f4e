"""GLUE and instruction-data loaders, local (``MLORC_LAB_DATA_DIR``) or from the hub, with validation."""

from mlorc_lab.data.glue import (
    GLUE_TASKS,
    GlueCollator,
    GlueTask,
    encode_glue,
    get_glue_task,
    glue_metrics,
    load_glue_split,
    read_glue_tsv,
)
from mlorc_lab.data.instruct import (
    IGNORE_INDEX,
    InstructCollator,
    encode_instruct,
    extract_gsm8k_answer,
    format_prompt,
    load_code_alpaca,
    load_codefeedback,
    load_gsm8k,
    load_metamathqa,
    tokenize_prompt_response,
)
from mlorc_lab.data.paths import DATA_DIR_ENV, resolve_data_dir

__all__ = [
    "DATA_DIR_ENV",
    "GLUE_TASKS",
    "IGNORE_INDEX",
    "GlueCollator",
    "GlueTask",
    "InstructCollator",
    "encode_glue",
    "encode_instruct",
    "extract_gsm8k_answer",
    "format_prompt",
    "get_glue_task",
    "glue_metrics",
    "load_code_alpaca",
    "load_codefeedback",
    "load_glue_split",
    "load_gsm8k",
    "load_metamathqa",
    "read_glue_tsv",
    "resolve_data_dir",
    "tokenize_prompt_response",
]
