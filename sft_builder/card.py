"""The dataset card (README.md): YAML ``configs`` (one per task plus ``all``) and the facts of this build."""

from __future__ import annotations

import json

import yaml

from schemas.sft import SPLITS
from sft_builder.tasks import multi_turn_fulfillment


def card_configs(counts: dict[str, dict[str, int]]) -> list[dict]:
    """HF ``configs``: ``all`` (default) and one per task, each listing only the splits it has records in
    (a pattern matching no file would make ``load_dataset`` fail)."""

    def files(task: str, splits: list[str]) -> list[dict]:
        return [{"split": split, "path": f"split={split}/task={task}/*.parquet"} for split in splits]

    present = [s for s in SPLITS if any(c.get(s, 0) for c in counts.values())]
    configs = [{"config_name": "all", "default": True, "data_files": files("*", present)}]
    configs += [{"config_name": task, "data_files": files(task, [s for s in SPLITS if counts[task].get(s, 0)])} for task in sorted(counts)]
    return configs


def render_card(
    *,
    dataset: str,
    counts: dict[str, dict[str, int]],
    token_stats: dict[str, dict[str, float]],
    codebook_ids: list[str],
    fingerprints: dict[str, str],
    split_mode: str,
    notes: list[str],
    config: dict,
) -> str:
    tasks = sorted(counts)
    front = yaml.safe_dump({"configs": card_configs(counts), "task_categories": ["text-generation"], "tags": ["recommendation", "semantic-ids"]},
                           sort_keys=False)
    lines = [f"---\n{front}---", f"# {dataset}: multi-task instruction SFT corpus", ""]
    lines += [
        "Records are chat conversations (`messages`, TRL format) with the same content as `instruction` / `input` / "
        "`output`; items are named by semantic IDs (SIDs). Every SID resolves to exactly one catalog item.", "",
        f"- SID codebook id: {', '.join(f'`{c}`' for c in codebook_ids) or 'unknown'}",
        f"- Split: `{split_mode}`" + (" (each user's last event is test, the one before validation)" if split_mode == "leave_one_out"
                                       else " (one global time cutoff pair)"),
        "- No validation/test target item of a user appears in any training record of that user (checked by "
        "`sft_builder.validate.find_leaks`).", "",
        "## Records per task and split", "", "| task | " + " | ".join(SPLITS) + " | total |", "|---" * (len(SPLITS) + 2) + "|",
    ]
    for task in tasks:
        row = [counts[task].get(s, 0) for s in SPLITS]
        lines.append(f"| {task} | " + " | ".join(str(v) for v in row) + f" | {sum(row)} |")
    totals = [sum(counts[t].get(s, 0) for t in tasks) for s in SPLITS]
    lines.append("| **all** | " + " | ".join(str(v) for v in totals) + f" | {sum(totals)} |")
    lines += ["", "## Token lengths", "",
              "Approximate tokens per record (SID tokens, words and punctuation over all messages).", "",
              "| task | mean | p50 | p95 | max |", "|---|---|---|---|---|"]
    for task in sorted(token_stats):
        s = token_stats[task]
        lines.append(f"| {task} | {s['mean']:.1f} | {s['p50']:.0f} | {s['p95']:.0f} | {s['max']:.0f} |")
    lines += ["", "## Inputs", "", "| input | fingerprint |", "|---|---|"]
    lines += [f"| {name} | `{fp}` |" for name, fp in sorted(fingerprints.items())]
    if notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    lines += ["", "## multi_turn_fulfillment action protocol", "", "```text", multi_turn_fulfillment.__doc__.strip(), "```"]
    lines += ["", "## Build configuration", "", "```json", json.dumps(config, indent=2, sort_keys=True), "```", ""]
    return "\n".join(lines)
