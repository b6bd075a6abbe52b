"""Photos as phones and cameras hand them over: HEIC and AVIF (converted from LFW at test time by real
encoders), and JPEGs with data after their end-of-image marker (Android motion photos)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from jobs.models import decode
from jobs.models.decode import DECODE_ERROR, OK, TOO_LARGE, UNSUPPORTED_FORMAT, decode_image

pytestmark = pytest.mark.data

PEOPLE = ["Aaron_Peirsol", "Abdullah_Gul", "Adrien_Brody", "Alejandro_Toledo", "Ali_Naimi"]


def lfw_jpegs(shared_data: Path) -> list[Path]:
    return [sorted((shared_data / "lfw" / "images" / name).glob("*.jpg"))[0] for name in PEOPLE]


def encoded(jpeg: Path, image_format: str, **options: object) -> bytes:
    """The JPEG's pixels written by a real encoder (pillow-heif for HEIF, Pillow's libavif for AVIF)."""
    if image_format == "HEIF":
        import pillow_heif

        pillow_heif.register_heif_opener()
    buffer = io.BytesIO()
    with Image.open(jpeg) as image:
        image.convert("RGB").save(buffer, image_format, quality=90, **options)
    return buffer.getvalue()


def embedding_of(face_pipeline, data: bytes) -> np.ndarray:
    [result] = face_pipeline.process_bytes([data])
    assert result.status == OK, result.error
    return max(result.faces, key=lambda face: face.det_score).embedding


@pytest.mark.parametrize("image_format", ["HEIF", "AVIF"])
def test_heic_and_avif_embed_within_0_99_of_their_jpeg(face_pipeline, shared_data: Path, image_format: str) -> None:
    cosines = []
    for jpeg in lfw_jpegs(shared_data):
        data = encoded(jpeg, image_format)
        assert decode_image(data).image_format == image_format
        cosines.append(float(embedding_of(face_pipeline, data) @ embedding_of(face_pipeline, jpeg.read_bytes())))
    assert min(cosines) >= 0.99, cosines


def test_heic_orientation_and_pixel_limit_apply_as_for_jpeg(shared_data: Path) -> None:
    jpeg = lfw_jpegs(shared_data)[0]
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: shown rotated 90 degrees clockwise
    with Image.open(jpeg) as image:
        sideways = image.convert("RGB").rotate(90, expand=True)
        buffer = io.BytesIO()
        decode._heif_registered()
        sideways.save(buffer, "HEIF", quality=90, exif=exif.tobytes())
    upright = decode_image(buffer.getvalue())
    original = decode_image(jpeg.read_bytes()).rgb
    assert upright.status == OK and upright.rgb is not None and original is not None
    assert (
        upright.rgb.shape == original.shape
        and sideways.size[::-1] != original.shape[:2]
        or sideways.size == sideways.size[::-1]
    )
    assert np.abs(upright.rgb.astype(int) - original.astype(int)).mean() < 8  # upright again, lossy once
    height, width = original.shape[:2]
    refused = decode_image(buffer.getvalue(), max_pixels=width * height - 1)
    assert refused.status == TOO_LARGE and f"{width}x{height}" in (refused.error or "")  # from the header


def test_without_pillow_heif_a_heic_is_unsupported_and_says_how_to_add_it(
    shared_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = encoded(lfw_jpegs(shared_data)[0], "HEIF")
    monkeypatch.setattr(decode, "_HEIF", [False])
    monkeypatch.setattr(Image, "OPEN", {k: v for k, v in Image.OPEN.items() if k != "HEIF"})
    result = decode_image(data)
    assert result.status == UNSUPPORTED_FORMAT and "lineup[heif]" in (result.error or "")


def motion_photo(jpeg: bytes, trailer_bytes: int = 3 * 2**20) -> bytes:
    """A JPEG with a video-sized payload after it; the payload holds markers to mislead a naive search."""
    rng = np.random.default_rng(7)
    payload = bytearray(rng.integers(0, 256, trailer_bytes, dtype=np.uint8).tobytes())
    payload[:8] = b"\x00\x00\x00\x18ftyp"  # an MP4 box, as Android's MicroVideo appends
    payload[1000:1002], payload[-2:] = b"\xff\xd8", b"\xff\xd9"
    return jpeg + bytes(payload)


def test_a_motion_photo_embeds_exactly_as_its_jpeg(face_pipeline, shared_data: Path) -> None:
    for path in lfw_jpegs(shared_data):
        jpeg = path.read_bytes()
        with_trailer = motion_photo(jpeg)
        assert decode.jpeg_end(with_trailer) == len(jpeg)
        assert np.array_equal(embedding_of(face_pipeline, with_trailer), embedding_of(face_pipeline, jpeg))


def test_a_cut_short_jpeg_is_refused_whatever_follows_it(shared_data: Path) -> None:
    jpeg = lfw_jpegs(shared_data)[0].read_bytes()
    for cut in (0.3, 0.6, 0.95):
        short = jpeg[: int(len(jpeg) * cut)]
        # An end-of-image marker straight after the cut (a "repaired" file), a video, and random bytes:
        # in about 1 in 250 of these the walk meets an end-of-image marker first (seeds 773 and 808 at
        # 0.95 do), which only the decoder can tell from a whole image.
        followed = {"end-of-image marker": short + b"\xff\xd9", "video": motion_photo(short, 70_000)}
        for seed in range(1000):
            followed[f"seed {seed}"] = short + b"\xff" + np.random.default_rng(seed).bytes(20_000)
        for what, data in followed.items():
            result = decode_image(data)
            assert result.status == DECODE_ERROR and "truncated JPEG" in (result.error or ""), (cut, what)


def test_jpeg_pixels_are_opencvs(shared_data: Path) -> None:
    """libjpeg-turbo through simplejpeg decodes a JPEG to the pixels OpenCV gave before it took over."""
    import cv2

    photos = sorted((shared_data / "lfw" / "images").glob("*/*.jpg"))[::40]
    photos += sorted((shared_data / "utkface-dev").rglob("*.jpg"))[::40]
    assert len(photos) > 300
    for photo in photos:
        data = photo.read_bytes()
        reference = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1]
        assert np.array_equal(decode_image(data).rgb, reference), photo


def test_an_archive_of_phone_photos_embeds_every_one(spark, tmp_path: Path, shared_data: Path) -> None:
    from jobs.common.config import load_config
    from jobs.embed.config import EmbedConfig
    from jobs.embed.job import run_embed

    photos = tmp_path / "phone"
    photos.mkdir()
    jpegs = lfw_jpegs(shared_data)
    (photos / "a.heic").write_bytes(encoded(jpegs[0], "HEIF"))
    (photos / "b.avif").write_bytes(encoded(jpegs[1], "AVIF"))
    (photos / "c.jpg").write_bytes(motion_photo(jpegs[2].read_bytes()))
    cut = jpegs[3].read_bytes()
    (photos / "d.jpg").write_bytes(motion_photo(cut[: len(cut) // 2], 70_000))  # cut short, then a video
    config = load_config(EmbedConfig, None, [f"embed.input.path={photos}", f"embed.table_path={tmp_path / 'faces'}"])
    summary = run_embed(config, spark)
    rows = spark.read.format("delta").load(str(tmp_path / "faces")).collect()
    by_file = {}
    for row in rows:
        by_file.setdefault(row.source_path.rsplit("/", 1)[-1], set()).add(row.status)
    assert by_file == {"a.heic": {"ok"}, "b.avif": {"ok"}, "c.jpg": {"ok"}, "d.jpg": {"decode_error"}}
    assert summary["files_seen"] == 4 == len({row.source_path for row in rows})


def jpeg_of(rgb: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, "JPEG", quality=95)  # no EXIF: nothing says it is sideways
    return buffer.getvalue()


def test_sideways_scans_are_found_with_retry_rotations(default_pack, shared_data: Path) -> None:
    from jobs.models.pipeline import FacePipeline, PipelineSettings

    plain, retrying = FacePipeline(default_pack), FacePipeline(default_pack, PipelineSettings(retry_rotations=True))
    photos = [decode_image(p.read_bytes()).rgb for p in lfw_jpegs(shared_data)]
    upright = [embedding_of(plain, jpeg_of(rgb)) for rgb in photos]
    recovered, missed_upright = 0, 0
    for turns, undo in ((1, 90), (2, 180), (3, 270)):  # turned counter-clockwise; the pipeline turns back
        sideways = [jpeg_of(np.ascontiguousarray(np.rot90(rgb, k=turns))) for rgb in photos]
        for original, lost, result in zip(upright, plain.process_bytes(sideways), retrying.process_bytes(sideways)):
            if lost.status != "no_face":
                continue  # a face was found upright (well or badly): not retried, by design
            missed_upright += 1
            if result.status == OK and result.rotation == undo:
                best = max(result.faces, key=lambda face: face.det_score)
                recovered += float(best.embedding @ original) >= 0.95
    assert missed_upright >= 5  # without the retry, sideways faces are mostly lost
    assert recovered == missed_upright  # with it, each is found at the turn that undoes it
    # Photos with a face upright are never turned: same faces, rotation 0.
    for rgb, expected in zip(photos, upright):
        [result] = retrying.process_bytes([jpeg_of(rgb)])
        assert result.rotation == 0 and np.array_equal(embedding_of(retrying, jpeg_of(rgb)), expected)


def test_the_rotation_used_is_recorded_in_the_faces_table(
    spark, face_pipeline, tmp_path: Path, shared_data: Path
) -> None:
    from jobs.common.config import load_config
    from jobs.embed.config import EmbedConfig
    from jobs.embed.job import run_embed

    photos = tmp_path / "scans"
    photos.mkdir()
    candidates = [decode_image(path.read_bytes()).rgb for path in lfw_jpegs(shared_data)]
    rgb = next(
        rgb
        for rgb in candidates
        if face_pipeline.process_bytes([jpeg_of(np.ascontiguousarray(np.rot90(rgb, k=1)))])[0].status == "no_face"
    )  # a photo whose face is lost sideways
    (photos / "upright.jpg").write_bytes(jpeg_of(rgb))
    (photos / "sideways.jpg").write_bytes(jpeg_of(np.ascontiguousarray(np.rot90(rgb, k=1))))
    settings = [f"embed.input.path={photos}", f"embed.table_path={tmp_path / 'faces'}", "embed.retry_rotations=true"]
    run_embed(load_config(EmbedConfig, None, settings), spark)
    rows = spark.read.format("delta").load(str(tmp_path / "faces")).collect()
    by_file = {r.source_path.rsplit("/", 1)[-1]: (r.status, r.rotation) for r in rows if r.face_index == 0}
    assert by_file == {"upright.jpg": ("ok", 0), "sideways.jpg": ("ok", 90)}
