"""FacePipeline: decoded images -> faces (box, 5 landmarks, detection score, quality, embedding).

Pure Python + onnxruntime, no Spark: the embed job calls it inside executors, tests call it directly.
Detection runs one image at a time (YuNet/SCRFD on a padded image is fastest unbatched on CPU); chips
from all images of a call are embedded in batches.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from jobs.models.align import template_chip_to_image, warp_chip
from jobs.models.decode import OK, decode_image
from jobs.models.detect import Detections, decode_scrfd, decode_yunet, finish, letterbox
from jobs.models.pack import Pack
from jobs.models.quality import QualityComponents, components
from jobs.models.quality_model import assess

if TYPE_CHECKING:
    from pathlib import Path

log = logging.getLogger(__name__)

NO_FACE = "no_face"
TOO_SMALL = "too_small"


@dataclass
class Face:
    face_index: int
    bbox: np.ndarray  # x1, y1, x2, y2
    landmarks: np.ndarray  # (5, 2)
    det_score: float
    quality: float | None  # the unified score (`jobs.models.quality_model`); None with quality off
    embedding: np.ndarray  # (dim,) float32, L2-normalised
    components: QualityComponents | None = None
    quality_reasons: tuple[str, ...] | None = None


@dataclass
class ImageResult:
    """What became of one image: status `ok` with faces, or a status and the reason."""

    status: str
    error: str | None = None
    width: int | None = None
    height: int | None = None
    faces: list[Face] = field(default_factory=list)
    rotation: int = 0  # degrees clockwise the decoded image was turned before its faces were found


@dataclass(frozen=True)
class PipelineSettings:
    providers: tuple[str, ...] = ("CPUExecutionProvider",)
    threads: int = 1
    embed_batch: int = 8
    max_faces: int = 20
    max_pixels: int = 50_000_000
    min_face_px: int | None = None  # None: the pack's value
    retry_rotations: bool = False  # an image with no face upright is tried at 90, 180 and 270 degrees
    quality: bool = True  # measure each face's quality components and unified score


def _session(model_path: Path | str, settings: PipelineSettings) -> Any:  # an onnxruntime.InferenceSession
    import onnxruntime as ort

    options = ort.SessionOptions()
    # onnxruntime ignores OMP_NUM_THREADS: without this each Spark worker would use every core.
    options.intra_op_num_threads = settings.threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Tiny activations late in the ResNet become denormals, which cost x86 CPUs dozens of cycles each.
    options.add_session_config_entry("session.set_denormal_as_zero", "1")
    return ort.InferenceSession(str(model_path), options, providers=list(settings.providers))


class FacePipeline:
    """Runs a pack: detect -> align -> embed -> L2-normalise. Build once per process; not picklable."""

    def __init__(self, pack: Pack, settings: PipelineSettings | None = None) -> None:
        self.pack = pack
        self.settings = settings or PipelineSettings()
        self.detector_cfg = pack.detector
        self.embedder_cfg = pack.embedder
        self.alignment_cfg = pack.alignment
        import cv2

        cv2.setNumThreads(self.settings.threads)  # OpenCV's pool would otherwise spin on every core
        self.detector = _session(pack.file_path("detector"), self.settings)
        self.embedder = _session(pack.file_path("embedder"), self.settings)
        self.detector_outputs = [output.name for output in self.detector.get_outputs()]
        self.template = np.asarray(self.alignment_cfg["template"], dtype=np.float64)
        refine = self.alignment_cfg.get("refine_template")
        self.refine_template = None if refine is None else np.asarray(refine, dtype=np.float64)
        # the frontal reference for head pose: the template the chip's landmarks were last fitted to
        self.pose_template = self.template if self.refine_template is None else self.refine_template
        self.chip_size = int(self.alignment_cfg["chip_size"])
        self.min_face_px = self.settings.min_face_px or int(self.detector_cfg["min_face_px"])
        mean = np.asarray(self.embedder_cfg["mean"], np.float32)
        scale = 1.0 / np.asarray(self.embedder_cfg["std"], np.float32)
        # The embedder's input value of every 8-bit level per channel, computed as (level - mean) * scale in
        # float32 (the same arithmetic per pixel): a chip then becomes its tensor by one lookup per channel.
        self._embed_levels = ((np.arange(256, dtype=np.float32)[:, None] - mean) * scale).T.copy()

    # -- public API -------------------------------------------------------------------------------------

    def process_bytes(self, blobs: Sequence[bytes]) -> list[ImageResult]:
        """Decode and process image files; every input gets exactly one result, bad ones a status."""
        decoded = [decode_image(blob, self.settings.max_pixels) for blob in blobs]
        images = [item.rgb if item.status == OK else None for item in decoded]
        results = self.process_images(images)
        for index, item in enumerate(decoded):
            if item.status != OK:
                results[index] = ImageResult(item.status, item.error, item.width, item.height)
        return results

    def process_images(self, images: Sequence[np.ndarray | None]) -> list[ImageResult]:
        """Process RGB uint8 images (None entries get a placeholder result for the caller to replace)."""
        results: list[ImageResult] = []
        pending: list[tuple[int, Detections]] = []
        chips: list[np.ndarray] = []
        chip_marks: list[np.ndarray] = []  # the landmarks each chip was cut by
        for image in images:
            if image is None:
                results.append(ImageResult("skipped"))
                continue
            result, detections = self._detect_one(image)
            if detections is None and result.status == NO_FACE and self.settings.retry_rotations:
                image, result, detections = self._detect_turned(image, result)
            results.append(result)
            if detections is not None:
                pending.append((len(results) - 1, detections))
                for marks in detections.landmarks:
                    chip, used = self.cut_chip_and_landmarks(image, marks)
                    chips.append(chip)
                    chip_marks.append(used)
        raw = self.embed_chips_raw(np.stack(chips)) if chips else np.zeros((0, self.pack.dim), np.float32)
        norms = np.linalg.norm(raw, axis=1)
        embeddings = _unit(raw)
        row = 0
        for index, detections in pending:
            for face_index in range(len(detections)):
                marks, score = detections.landmarks[face_index], float(detections.scores[face_index])
                face = Face(face_index, detections.boxes[face_index], marks, score, None, embeddings[row])
                if self.settings.quality:
                    face.components = components(
                        chip_marks[row], self.pose_template, chips[row], score, float(norms[row])
                    )
                    face.quality, face.quality_reasons = assess(face.components, self.pack.model_id)
                results[index].faces.append(face)
                row += 1
        return results

    def warm(self) -> None:
        """One detection and one embedding of blank input: onnxruntime sizes its buffers and picks its
        kernels on a session's first run, a cost the first real image would otherwise pay."""
        self.detect(np.zeros((self.chip_size * 2, self.chip_size * 2, 3), np.uint8))
        self.embed_chips_raw(np.zeros((1, self.chip_size, self.chip_size, 3), np.uint8))

    def embed_chips(self, chips: np.ndarray) -> np.ndarray:
        """Aligned RGB uint8 chips (N, S, S, 3) -> L2-normalised float32 embeddings (N, dim)."""
        return _unit(self.embed_chips_raw(chips))

    def embed_chips_raw(self, chips: np.ndarray) -> np.ndarray:
        """The embedder's outputs before they are made unit length (their norm is a quality component)."""
        outputs = []
        for start in range(0, len(chips), self.settings.embed_batch):
            outputs.append(self._embed_batch(chips[start : start + self.settings.embed_batch]))
        return np.concatenate(outputs).astype(np.float32)

    def embedder_input(self, chips: np.ndarray) -> np.ndarray:
        """Aligned RGB uint8 chips (N, S, S, 3) -> the embedder's normalised float32 NCHW input."""
        channels = (0, 1, 2) if self.embedder_cfg["colour"] == "RGB" else (2, 1, 0)
        tensor = np.empty((len(chips), 3, *chips.shape[1:3]), np.float32)
        for position, channel in enumerate(channels):
            np.take(self._embed_levels[position], chips[..., channel], out=tensor[:, position])
        return tensor

    def detect(self, image: np.ndarray) -> Detections:
        """All faces in one RGB image above the pack's score threshold, best first.

        A face that fills the whole frame (tight crops such as UTKFace) can be missed for lack of
        context; only then is the image framed with a black border and searched again.
        """
        found = self._detect_framed(image, 0)
        border = int(round(float(self.detector_cfg.get("border_fraction", 0.0)) * max(image.shape[:2])))
        if not len(found) and border:
            found = self._detect_framed(image, border)
        return found

    def cut_chip(self, image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """Cut the chip; with a refine template, detect again on that chip and cut once more."""
        return self.cut_chip_and_landmarks(image, landmarks)[0]

    def cut_chip_and_landmarks(self, image: np.ndarray, landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The chip, and the landmarks (image pixels) it was cut by: with a refine template, those of a
        second detection on the first chip.

        The second look sees the face upright and at chip scale, where the detector's landmarks are
        steadier (a detector trained on upright faces underestimates a turn in the picture's plane);
        they are mapped back to the image and fitted to the template measured at that scale.
        """
        chip_to_image = template_chip_to_image(self.template, landmarks)
        chip = warp_chip(image, chip_to_image, self.chip_size)
        if self.refine_template is None:
            return chip, landmarks
        found = self._detect_framed(chip, 0)
        if not len(found):
            return chip, landmarks
        centre = self.chip_size / 2
        nearest = int(np.argmin(np.linalg.norm(found.landmarks[:, 2] - centre, axis=1)))
        refined = found.landmarks[nearest].astype(np.float64) @ chip_to_image[:, :2].T + chip_to_image[:, 2]
        return warp_chip(image, template_chip_to_image(self.refine_template, refined), self.chip_size), refined

    # -- internals ---------------------------------------------------------------------------------------

    def _detect_one(self, image: np.ndarray) -> tuple[ImageResult, Detections | None]:
        height, width = image.shape[:2]
        if min(height, width) < self.min_face_px:
            reason = f"image {width}x{height} is smaller than the minimum face size {self.min_face_px} px"
            return ImageResult(TOO_SMALL, reason, width, height), None
        found = self.detect(image)
        if not len(found):
            return ImageResult(NO_FACE, "no face detected", width, height), None
        sizes = np.minimum(found.boxes[:, 2] - found.boxes[:, 0], found.boxes[:, 3] - found.boxes[:, 1])
        keep = np.flatnonzero(sizes >= self.min_face_px)[: self.settings.max_faces]
        if not keep.size:
            reason = f"{len(found)} face(s) found, all smaller than {self.min_face_px} px"
            return ImageResult(TOO_SMALL, reason, width, height), None
        kept = Detections(found.boxes[keep], found.scores[keep], found.landmarks[keep])
        return ImageResult(OK, None, width, height), kept

    def _detect_turned(
        self, image: np.ndarray, upright: ImageResult
    ) -> tuple[np.ndarray, ImageResult, Detections | None]:
        """A sideways scan (no EXIF tag to say so): the image turned 90, 180 and 270 degrees clockwise, the
        turn whose best face the detector is surest of kept (a face upside down is often still detected,
        less surely; boxes and landmarks are in the turned image's frame)."""
        best: tuple[float, np.ndarray, ImageResult, Detections] | None = None
        for degrees in (90, 180, 270):
            turned = np.ascontiguousarray(np.rot90(image, k=-(degrees // 90)))
            result, detections = self._detect_one(turned)
            if detections is not None and (best is None or float(detections.scores.max()) > best[0]):
                result.rotation = degrees
                best = (float(detections.scores.max()), turned, result, detections)
        return (image, upright, None) if best is None else best[1:]

    def _detect_framed(self, image: np.ndarray, border: int) -> Detections:
        cfg = self.detector_cfg
        framed = np.pad(image, ((border, border), (border, border), (0, 0))) if border else image
        tensor, scale = letterbox(framed if cfg["colour"] == "RGB" else framed[:, :, ::-1], int(cfg["max_side"]))
        if cfg["mean"] != 0.0 or cfg["std"] != 1.0:
            tensor = (tensor - np.float32(cfg["mean"])) / np.float32(cfg["std"])
        outputs = self.detector.run(None, {cfg["input_name"]: tensor})
        height, width = tensor.shape[2:]
        raw: tuple[np.ndarray, np.ndarray, np.ndarray]
        if cfg["kind"] == "yunet":
            raw = decode_yunet(dict(zip(self.detector_outputs, outputs)), height, width, float(cfg["score_threshold"]))
        elif cfg["kind"] == "scrfd":
            raw = decode_scrfd(outputs, height, width)
        else:
            raise ValueError(f"unknown detector kind {cfg['kind']!r} in pack {self.pack.path}")
        found = finish(*raw, float(cfg["score_threshold"]), float(cfg["nms_iou"]), scale)
        if border and len(found):
            found.boxes -= border
            found.landmarks -= border
        return found

    def _embed_batch(self, chips: np.ndarray) -> np.ndarray:
        cfg = self.embedder_cfg
        tensor = self.embedder_input(chips)
        output = self.embedder.run(None, {cfg["input_name"]: tensor})[0]
        if cfg.get("flip_average"):  # mean of the chip's and its mirror image's unit embeddings
            flipped = np.ascontiguousarray(tensor[..., ::-1])
            mirrored = self.embedder.run(None, {cfg["input_name"]: flipped})[0]
            output = _unit(output) + _unit(mirrored)
        return output


def _unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
