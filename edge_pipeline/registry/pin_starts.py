"""Pin the start models a recorded night used, so `dvc repro` re-executes that night.

A warm night's train, distill and prune stages start from the registry's champion *of that night*
(`init: champion`), which DVC does not hash; re-running an old night's commit with `dvc repro -f`
would fine-tune from today's champion instead. Each of those stages records the run it started
from in its data/<stage>/meta.json (`init_from_run_id`, null for a scratch start). On the night's
commit, after `dvc pull` (or `dvc checkout`), `make pin-starts` writes those runs into params.yaml
as `init: runs:/<run id>` (or `scratch`); the params change, so `dvc repro benchmark` re-runs
train .. benchmark from the same start weights, and the run cache may restore what it has already
run with the same pins. Leave `register` out: it compares with *today's* champion.
`git checkout params.yaml` unpins.

`python -m edge_pipeline.registry.pin_starts [params.yaml]`.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import yaml

from edge_pipeline.artifacts.catalog import META, stage_paths
from edge_pipeline.config import load_params
from edge_pipeline.core.entry import run_stage
from edge_pipeline.core.errors import InputError
from edge_pipeline.core.io import atomic_path
from edge_pipeline.core.lineage import LINEAGE_STAGES, PIN_PREFIX, SCRATCH, START_TAG


def recorded_starts(meta_paths: dict[str, Path]) -> dict[str, str]:
    """{stage: the `init` that re-creates its recorded start}: `runs:/<id>` or `scratch`.

    Raises:
        InputError: a meta.json is missing or unreadable (the message says to `dvc pull`).
    """
    starts = {}
    for stage, path in meta_paths.items():
        try:
            meta = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise InputError(
                f"{path}: {e}; it records where {stage} started. Run `dvc pull` (or `dvc "
                "checkout`) on the night's commit first"
            ) from e
        if START_TAG not in meta:  # meta.json records the start run under its MLflow tag
            raise InputError(f"{path} has no {START_TAG} (written before lineage existed): this "
                             f"night's {stage} start cannot be pinned")  # fmt: skip
        run_id = meta[START_TAG]
        starts[stage] = f"{PIN_PREFIX}{run_id}" if run_id else SCRATCH
    return starts


def set_inits(text: str, inits: dict[str, str]) -> str:
    """params.yaml `text` with `<section>.init` set to each value; other lines (comments, layout)
    kept, and a comment after the value stays in its column where the value fits. A section
    without an `init:` line gets one; a missing section is appended."""
    lines = text.splitlines(keepends=True)
    for section, value in inits.items():
        start = next(
            (i for i, line in enumerate(lines) if re.match(rf"{section}:(\s|$)", line)), None
        )
        if start is None:
            lines += ["\n" if lines and not lines[-1].endswith("\n") else "", f"{section}:\n"]
            start = len(lines) - 1
        end = next(
            (i for i in range(start + 1, len(lines))
             if lines[i].strip() and not lines[i].startswith((" ", "#"))),
            len(lines),
        )  # fmt: skip
        key = next((x for x in lines[start + 1 : end]
                    if x[:1] == " " and not x.lstrip().startswith("#")), None)  # fmt: skip
        indent = re.match(r" +", key)[0] if key else "  "  # the section's own key indent
        for i in range(start + 1, end):
            found = re.match(rf"({indent}init:[ \t]*)([^\s#]+)([ \t]*)(.*)", lines[i], re.DOTALL)
            if found:
                head, gap, rest = found[1] + value, found[3], found[4]
                if rest.startswith("#"):  # keep the comment's column: a pin is longer than a word
                    gap = " " * max(found.start(4) - len(head), 1)
                lines[i] = head + gap + rest
                break
        else:
            lines.insert(start + 1, f"{indent}init: {value}\n")
    return "".join(lines)


def pin(params_file: Path) -> dict[str, str]:
    """Write the recorded starts of `LINEAGE_STAGES` into `params_file`; returns them."""
    starts = recorded_starts({s: stage_paths(s, params_file).data / META for s in LINEAGE_STAGES})
    text = set_inits(params_file.read_text(), starts)

    def by_hand(stages: list[str]) -> str:
        return "set " + ", ".join(f"{s}.init: {starts[s]}" for s in stages) + " by hand"

    try:
        parsed = load_params(raw=yaml.safe_load(text))  # the schema checks pins before writing
    except yaml.YAMLError as e:  # a layout set_inits does not edit (flow style, tabs)
        why = " ".join(str(e).split())
        raise InputError(f"{params_file}: its layout cannot take the pins by line edits "
                         f"({why}); {by_hand(list(starts))}") from e  # fmt: skip
    unset = [s for s, v in starts.items() if getattr(parsed, s).init != v]
    if unset:  # an `init` this line edit did not reach
        raise InputError(
            f"{params_file}: could not set {', '.join(f'{s}.init' for s in unset)}; write each "
            f"as its own `  init: <value>` line under its section, or {by_hand(unset)}"
        )
    with atomic_path(params_file) as tmp:
        tmp.write_text(text)
    return starts


def main() -> None:
    path = Path(sys.argv[1] if len(sys.argv) > 1 else "params.yaml")
    for stage, init in pin(path).items():
        print(f"{path}: {stage}.init = {init}")
    print("next: `dvc repro benchmark` re-runs the night from these starts (leave register out); "
          "`git checkout params.yaml` unpins")  # fmt: skip


if __name__ == "__main__":  # `make pin-starts`
    run_stage(main)
