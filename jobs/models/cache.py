"""The face pipeline as an executor task needs it: named by a small picklable reference, built once per
Python worker process (ONNX sessions are built there, never pickled). Embedding and compare share it."""

from __future__ import annotations

from dataclasses import dataclass

from jobs.models.pack import locate_pack
from jobs.models.pipeline import FacePipeline, PipelineSettings

_PIPELINES: dict[tuple[str, str, int, int, bool, bool], FacePipeline] = {}


@dataclass(frozen=True)
class PipelineRef:
    pack_dir: str  # where the driver saw the pack; executors fall back to the shipped copy
    model_id: str  # checked against the pack found
    threads: int  # onnxruntime threads per Python worker
    max_pixels: int
    retry_rotations: bool = False
    quality: bool = True

    def built(self) -> bool:
        """Whether this worker process has built the pipeline already (by a warm-up or an earlier task)."""
        return self._key() in _PIPELINES

    def _key(self) -> tuple[str, str, int, int, bool, bool]:
        return (self.pack_dir, self.model_id, self.threads, self.max_pixels, self.retry_rotations, self.quality)

    def pipeline(self) -> FacePipeline:
        """This worker's pipeline for the pack, built on first use."""
        key = self._key()
        if key not in _PIPELINES:
            pack = locate_pack(self.pack_dir, self.model_id)
            settings = PipelineSettings(
                threads=self.threads,
                max_pixels=self.max_pixels,
                retry_rotations=self.retry_rotations,
                quality=self.quality,
            )
            _PIPELINES[key] = FacePipeline(pack, settings)
        return _PIPELINES[key]
