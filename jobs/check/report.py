"""The run report: a JSON of every metric and an HTML page with PNG plots, under ``layout.report``.

Reads the stage results the runner collected and the check stage's details file (code counts and
bucket-size histograms); plots code usage per level, the raw bucket-size histogram, collision rates
before and after resolution, and per-task corpus counts. Works with whatever stages ran: a plot
whose data is missing is left out and the page says so.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from jobs.check.main import detail_path
from jobs.common.io import atomic_write_text, ensure_dir
from jobs.common.stage import StageContext, StageResult

REPORT_JSON = "report.json"
REPORT_HTML = "report.html"
STYLE = (
    "body{font-family:sans-serif;max-width:60em;margin:2em auto;color:#222}"
    "table{border-collapse:collapse;margin:.5em 0}td{border:1px solid #ccc;padding:2px 8px}"
    ".ok{color:#2e7d32}.bad{color:#c62828}img{max-width:100%}"
)


def write_report(ctx: StageContext, results: dict[str, StageResult]) -> Path:
    """Write ``report.json``, ``report.html`` and the PNGs to ``ctx.layout.report``; return the HTML path."""
    out = ensure_dir(ctx.layout.report)
    details_file = detail_path(ctx.layout)
    details = json.loads(details_file.read_text()) if details_file.is_file() else {}
    validations = _validation_files(ctx.layout.checks)

    report = {
        "snapshot_id": ctx.snapshot_id,
        "stages": {name: result.to_dict() for name, result in results.items()},
        "sid_details": details,
        "validations": validations,
    }
    atomic_write_text(out / REPORT_JSON, json.dumps(report, indent=2, sort_keys=True, default=str))

    plots: list[tuple[str, str]] = []
    missing: list[str] = []
    for title, fn in (
        ("Code usage per level", _plot_code_usage),
        ("Bucket sizes of raw codes", _plot_bucket_sizes),
        ("Collision rates before and after resolution", _plot_collisions),
        ("SFT corpus records per task", _plot_sft_counts),
    ):
        name = fn(out, details, results)
        (plots.append((title, name)) if name else missing.append(title))
    html_path = out / REPORT_HTML
    atomic_write_text(html_path, _render_html(ctx, results, details, validations, plots, missing))
    return html_path


def _validation_files(checks_dir: Path) -> dict[str, dict[str, Any]]:
    """{"<stage>/<suite>": {success, evaluated, failed}} from the GE result JSONs kept with the run."""
    found = {}
    if not checks_dir.is_dir():
        return found
    for path in sorted(checks_dir.glob("*/*.json")):
        data = json.loads(path.read_text())
        if "results" not in data:
            continue  # not a GE validation result (e.g. the SID metrics details)
        stats = data.get("statistics", {})
        found[f"{path.parent.name}/{path.stem}"] = {
            "success": data.get("success"),
            "evaluated": stats.get("evaluated_expectations"),
            "failed": stats.get("unsuccessful_expectations"),
            "path": str(path.relative_to(checks_dir.parent)),
        }
    return found


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"figure.dpi": 100, "font.size": 9, "svg.hashsalt": "sidpipe"})
    return plt


def _save(fig, out: Path, name: str) -> str:
    # No timestamp or software version in the file: the same metrics give the same bytes.
    fig.savefig(out / name, format="png", metadata={"Software": None}, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return name


def _plot_code_usage(out: Path, details: dict, results: dict) -> str | None:
    counts = details.get("level_code_counts") or {}
    if not counts:
        return None
    plt = _pyplot()
    sizes = (details.get("shape") or {}).get("codebook_size") or []
    levels = sorted(counts, key=int)
    fig, axes = plt.subplots(len(levels), 1, figsize=(8, 2.2 * len(levels)), squeeze=False)
    for ax, level in zip(axes[:, 0], levels):
        level_counts = {int(c): n for c, n in counts[level].items()}
        k = (
            sizes[int(level) - 1]
            if int(level) - 1 < len(sizes) and sizes[int(level) - 1]
            else max(level_counts) + 1
        )
        usage = sorted((level_counts.get(code, 0) for code in range(k)), reverse=True)
        used = sum(1 for n in usage if n)
        ax.bar(range(k), usage, width=1.0, color="#3b6ea8")
        ax.set_title(f"level {level}: {used}/{k} codes used, {k - used} dead", loc="left")
        ax.set_ylabel("items")
        ax.set_xlim(-0.5, k - 0.5)
    axes[-1, 0].set_xlabel("codes, most used first")
    fig.tight_layout()
    return _save(fig, out, "code_usage.png")


def _plot_bucket_sizes(out: Path, details: dict, results: dict) -> str | None:
    histograms = details.get("bucket_size_histograms") or {}
    levels = (details.get("metrics") or {}).get("num_levels")
    raw = histograms.get(f"prefix_{levels}") if levels else None
    if not raw:
        return None
    plt = _pyplot()
    sizes = sorted(int(s) for s in raw)
    fig, ax = plt.subplots(figsize=(8, 3))
    ax.bar([str(s) for s in sizes], [raw[str(s)] for s in sizes], color="#c0504d")
    ax.set_yscale("log")
    ax.set_xlabel("items sharing one raw code (bucket size)")
    ax.set_ylabel("buckets (log scale)")
    ax.set_title("Raw full-code buckets: every bar right of 1 is a collision", loc="left")
    fig.tight_layout()
    return _save(fig, out, "bucket_sizes.png")


def _plot_collisions(out: Path, details: dict, results: dict) -> str | None:
    metrics = details.get("metrics") or {}
    if "collision_rate_raw" not in metrics:
        return None
    plt = _pyplot()
    levels = int(metrics.get("num_levels") or 0)
    labels = [f"prefix L{lv}" for lv in range(1, levels) if f"prefix_collision_rate_l{lv}" in metrics]
    values = [
        metrics[f"prefix_collision_rate_l{lv}"]
        for lv in range(1, levels)
        if f"prefix_collision_rate_l{lv}" in metrics
    ]
    labels += ["raw full code", "resolved SID"]
    values += [metrics["collision_rate_raw"], metrics["collision_rate_resolved"]]
    colors = ["#9aa7b8"] * (len(labels) - 2) + ["#c0504d", "#4f8f4f"]
    fig, ax = plt.subplots(figsize=(8, 3))
    bars = ax.bar(labels, [100 * v for v in values], color=colors)
    ax.bar_label(bars, labels=[f"{100 * v:.2f}%" for v in values], fontsize=8)
    if "identical_text_floor" in metrics:
        floor = 100 * metrics["identical_text_floor"]
        ax.axhline(
            floor, color="black", linestyle="--", linewidth=1, label=f"identical-text floor {floor:.2f}%"
        )
        ax.legend(loc="upper right", fontsize=8)
    ax.set_ylabel("% of items sharing the key")
    ax.set_title("Collision rate by prefix level, before and after resolution", loc="left")
    fig.tight_layout()
    return _save(fig, out, "collisions.png")


def _plot_sft_counts(out: Path, details: dict, results: dict) -> str | None:
    sft = results.get("sft")
    counts = {k: v for k, v in (sft.counts if sft else {}).items() if isinstance(v, (int, float))}
    if not counts:
        return None
    plt = _pyplot()
    names = sorted(counts)
    fig, ax = plt.subplots(figsize=(8, 0.35 * len(names) + 1.2))
    bars = ax.barh(names, [counts[n] for n in names], color="#3b6ea8")
    ax.bar_label(bars, labels=[f"{int(counts[n]):,}" for n in names], fontsize=8, padding=2)
    ax.invert_yaxis()
    ax.set_xlabel("records")
    ax.set_title("SFT corpus counts (from the sft stage)", loc="left")
    fig.tight_layout()
    return _save(fig, out, "sft_counts.png")


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (dict, list)):
        return html.escape(json.dumps(value, sort_keys=True, default=str))
    return html.escape(str(value))


def _table(rows: list[tuple[str, Any]]) -> str:
    body = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{_fmt(v)}</td></tr>" for k, v in rows)
    return f"<table>{body}</table>"


def _render_html(ctx, results, details, validations, plots, missing) -> str:
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>sidpipe run report: {html.escape(ctx.snapshot_id)}</title>",
        "<style>" + STYLE + "</style></head><body>",
        (
            f"<h1>sidpipe run report</h1><p>snapshot <code>{html.escape(ctx.snapshot_id)}</code>, "
            f"run <code>{html.escape(str(ctx.layout.run_dir))}</code></p>"
        ),
    ]
    sid_metrics = details.get("metrics") or {}
    if sid_metrics:
        keys = [
            "items",
            "collision_rate_raw",
            "collision_rate_resolved",
            "identical_text_floor",
            "largest_bucket_raw",
            "utilisation_l1",
            "perplexity_l1",
            "gini_l1",
            "category_nmi_l1",
            "category_nmi_ceiling_l1",
            "category_info_share_l1",
            "nn_preservation",
            "nn_random_baseline",
            "churn",
        ]
        parts.append("<h2>Semantic IDs at a glance</h2>")
        parts.append(_table([(k, sid_metrics[k]) for k in keys if k in sid_metrics]))
        failures = details.get("gate_failures") or []
        parts.append(
            f"<p class='bad'>SID gate failed: {html.escape('; '.join(failures))}</p>"
            if failures
            else "<p class='ok'>SID gates passed.</p>"
        )
    for title, name in plots:
        parts.append(f"<h2>{html.escape(title)}</h2><img src='{name}' alt='{html.escape(title)}'>")
    if missing:
        parts.append(f"<p>Not plotted (no data in this run): {html.escape(', '.join(missing))}.</p>")
    if validations:
        parts.append("<h2>great-expectations validations</h2><table>")
        for key, v in validations.items():
            status = "<span class='ok'>passed</span>" if v["success"] else "<span class='bad'>FAILED</span>"
            parts.append(
                f"<tr><td>{html.escape(key)}</td><td>{status}</td><td>{v['evaluated']} expectations, "
                f"{v['failed']} failed</td><td><code>{html.escape(v['path'])}</code></td></tr>"
            )
        parts.append("</table>")
    parts.append("<h2>Every stage</h2>")
    for name, result in results.items():
        rows = [(f"count {k}", v) for k, v in sorted(result.counts.items())]
        rows += [(k, v) for k, v in sorted(result.metrics.items()) if not k.startswith("_")]
        parts.append(f"<h3>{html.escape(name)}</h3>{_table(rows)}")
        if result.notes:
            parts.append("<ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in result.notes) + "</ul>")
    parts.append("</body></html>")
    return "\n".join(parts)
