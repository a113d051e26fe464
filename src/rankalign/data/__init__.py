"""The ranked list: readers, layout normalizers, validation, filters and atomic/resumable writers.

One unit flows between every stage (docs/design.md §1):

    {"id": "hh-00017", "prompt": "...", "responses": ["...", "..."],
     "scores": [0.8, -1.2], "sources": ["policy:diverse-beam", "dataset:chosen"]}

`prompt` is a string or a list of chat messages; `scores` are optional until the score stage,
higher is better, ties allowed; k may differ between rows. Readers accept the layouts below and
normalize them into this unit; any other field of a row is kept as is.

| layout | fields |
|---|---|
| ranked list / RRHF original | `prompt` or `query`, `responses`, optional `scores` / `sources` |
| pairwise | `prompt`, `chosen`, `rejected` (strings or message lists) |
| Anthropic-HH transcript | `chosen`, `rejected` full dialogues, split at the last `\\n\\nAssistant:` |
| PRO | `prefix`, `suffix`, `reward` |
| conversation | `messages` (the last assistant message is the response) |
| ShareGPT (LLaMA-Factory) | `conversations` of `{from, value}` turns (+ optional `system`): SFT, or the prompt of a `chosen`/`rejected` pair |
| prompt only | `prompt` (or `query` / `instruction` / `question`) |

The package is split by job; every name is importable from `rankalign.data`:

| module | job |
|---|---|
| `files` | read files: every reader, the strict JSON parser, `check_value` |
| `layouts` | normalize one record of any layout into a row (`normalize`) |
| `validate` | validate rows: `load_lists` with its checks across rows and counted filters |
| `write` | write outputs atomically (`write_json`, `write_jsonl`, `check_output_location`) |
| `resume` | the resume protocol of long stages (`check_resume`, `start_run`, `ShardedWriter`) |
"""

from __future__ import annotations

from rankalign.data.files import (
    FILE_SUFFIXES,
    MAX_DEPTH,
    MAX_LINE_BYTES,
    PYTHON_ROWS_PREFIX,
    check_value,
    field_path,
    python_rows_path,
    read_json_file,
    read_records,
    row_error,
)
from rankalign.data.layouts import (
    HH_ASSISTANT,
    MAX_TEXT_CHARS,
    PRO_TAGS,
    PROMPT_KEYS,
    ROLES,
    SHAREGPT_ROLES,
    normalize,
    pro_prefix,
)
from rankalign.data.resume import (
    RUN_FILE,
    ShardedWriter,
    check_resume,
    done_ids,
    done_rows,
    parts_folder,
    start_run,
)
from rankalign.data.validate import (
    LoadedData,
    LoadReport,
    load_lists,
)
from rankalign.data.write import (
    atomic_write_text,
    check_output_location,
    json_text,
    side_path,
    strict_json,
    to_jsonl,
    write_json,
    write_jsonl,
)

__all__ = [
    "FILE_SUFFIXES",
    "HH_ASSISTANT",
    "LoadReport",
    "LoadedData",
    "MAX_DEPTH",
    "MAX_LINE_BYTES",
    "MAX_TEXT_CHARS",
    "PROMPT_KEYS",
    "PRO_TAGS",
    "PYTHON_ROWS_PREFIX",
    "ROLES",
    "RUN_FILE",
    "SHAREGPT_ROLES",
    "ShardedWriter",
    "atomic_write_text",
    "check_output_location",
    "check_resume",
    "check_value",
    "done_ids",
    "done_rows",
    "field_path",
    "json_text",
    "load_lists",
    "normalize",
    "parts_folder",
    "pro_prefix",
    "python_rows_path",
    "read_json_file",
    "read_records",
    "row_error",
    "side_path",
    "start_run",
    "strict_json",
    "to_jsonl",
    "write_json",
    "write_jsonl",
]
