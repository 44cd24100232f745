"""Rebuild the bundled sample from the LC-Rec files of Amazon 2018 Industrial & Scientific.

    python samples/build_amazon_scientific.py ../shared/data/amazon-scientific

Writes samples/amazon_scientific/{catalog,interactions}.jsonl in sidpipe's own input format
(schemas.RAW_CATALOG / schemas.RAW_INTERACTIONS). Only run by maintainers; the output is committed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from jobs.ingest.lcrec import iter_lcrec_interactions, iter_lcrec_items

OUT = Path(__file__).resolve().parent / "amazon_scientific"


def _write_jsonl(rows, path: Path) -> int:
    n = 0
    with open(path, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps({k: v for k, v in row.items() if v is not None}, ensure_ascii=False) + "\n")
            n += 1
    return n


def main(src: str) -> None:
    src_dir = Path(src)
    OUT.mkdir(parents=True, exist_ok=True)
    n_items = _write_jsonl(iter_lcrec_items(src_dir / "Scientific.item.json"), OUT / "catalog.jsonl")
    n_inter = _write_jsonl(iter_lcrec_interactions(src_dir / "Scientific.inter.json"), OUT / "interactions.jsonl")
    print(f"wrote {n_items} items and {n_inter} interactions to {OUT}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/amazon-scientific")
