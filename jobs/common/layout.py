"""Where each stage's output lives inside one run directory. The only place these names appear."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunLayout:
    """Paths of every artifact of one pipeline run (a staged, not yet published, version)."""

    run_dir: Path

    def _p(self, name: str) -> Path:
        return self.run_dir / name

    # ingest
    @property
    def catalog(self) -> Path:
        return self._p("catalog")

    @property
    def interactions(self) -> Path:
        return self._p("interactions")

    @property
    def quarantine(self) -> Path:
        return self._p("quarantine")

    # grounding
    @property
    def text_embeddings(self) -> Path:
        return self._p("embeddings_text")

    @property
    def collab_embeddings(self) -> Path:
        return self._p("embeddings_collaborative")

    @property
    def fusion_model(self) -> Path:
        """The fusion weights and the collaborative basis they were fitted in (reused by reruns)."""
        return self._p("fusion_model")

    @property
    def embeddings(self) -> Path:
        """The space the codebook is trained on (text, collaborative or fused, per config)."""
        return self._p("embeddings")

    # tokenization
    @property
    def codebook(self) -> Path:
        return self._p("codebook")

    @property
    def sids(self) -> Path:
        return self._p("sids")

    @property
    def sid_artifacts(self) -> Path:
        """Special tokens, prefix trie, glossary, hybrid item-token map."""
        return self._p("sid_artifacts")

    # checks and report
    @property
    def checks(self) -> Path:
        return self._p("checks")

    @property
    def report(self) -> Path:
        return self._p("report")

    # corpus
    @property
    def sft(self) -> Path:
        return self._p("sft")

    @property
    def hf_dataset(self) -> Path:
        return self._p("hf_dataset")

    # bookkeeping
    @property
    def stage_markers(self) -> Path:
        """One JSON per finished stage (its StageResult); written last, so a killed stage reruns."""
        return self._p("_stages")

    def marker(self, stage: str) -> Path:
        return self.stage_markers / f"{stage}.json"
