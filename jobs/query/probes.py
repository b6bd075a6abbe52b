"""Driver side of a query: the probe faces, read from a faces table at a pinned version or embedded from
an archive by the embed job's own code, and checked against the index (model, dimension)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pyspark.errors import AnalysisException

from jobs.common.delta import read_pinned
from jobs.common.errors import UserError
from jobs.common.runs import RunRecord
from jobs.faces.config import EmbedConfig
from jobs.faces.ingest import run_embed
from jobs.faces.plan import source_prefix
from jobs.models.pack import load_pack
from jobs.query.config import QueryConfig
from jobs.shards.manifest import Manifest

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession


def probe_frame(
    config: QueryConfig, spark: SparkSession, manifest: Manifest, record: RunRecord
) -> tuple[DataFrame, dict[str, int]]:
    """The probe faces (all statuses) and what the probe source said about them."""
    from pyspark.sql import functions as F

    probes_settings = config.query.probes
    if probes_settings.archive is not None and probes_settings.kind == "archive":
        table, version, prefix, counts = _embed_archive(config, spark, manifest)
        frame, _ = _read_delta(spark, table, version, "query.probes.probe_table")
        frame = frame.where(F.col("source_path").startswith(prefix))
        record.add_input("probe_archive", probes_settings.archive.path, None)
        record.add_input("probe_faces", table, version)
        return frame, counts
    table = config.locations.table(probes_settings.faces_table, "faces")
    frame, version = _read_delta(spark, table, probes_settings.faces_version, "query.probes.faces_table")
    if probes_settings.where:
        try:
            frame = frame.where(probes_settings.where)
            frame.schema  # noqa: B018 - analysis happens here; a bad filter must fail before any work
        except AnalysisException as error:  # no such path, unreadable format, bad filter: the user's to fix
            raise UserError(
                f"query.probes.where {probes_settings.where!r} is not a valid filter on {table}: "
                f"{str(error).splitlines()[0]}"
            ) from None
    record.add_input("probe_faces", table, version)
    return frame, {}


def _embed_archive(
    config: QueryConfig, spark: SparkSession, manifest: Manifest
) -> tuple[str, int, str, dict[str, int]]:
    """Embed the probe archive with the embed job's own code into the probe faces table."""

    probes = config.query.probes
    assert probes.archive is not None  # checked by ProbeSettings
    embed_config = EmbedConfig.model_validate(
        {
            "spark": config.spark,
            "log_level": config.log_level,
            "runs_table": config.runs_table,
            "erasures_table": config.erasures_table,  # the probes consult the same erasure register
            "embed": {
                "input": probes.archive.model_copy(update={"path": config.locations.input_path(probes.archive.path)}),
                "table_path": config.probe_table_path(),
                "pack_dir": probes.pack_dir,
                "labels": probes.labels,
            },
        }
    )
    pack = load_pack(embed_config.resolved_pack_dir())
    if pack.model_id != manifest.model_id:
        raise UserError(
            f"query.probes.pack_dir gives model {pack.model_id}, the index at {config.index_path()} holds "
            f"{manifest.model_id}: embed probes with the gallery's pack"
        )
    try:
        summary = run_embed(embed_config, spark)
    except UserError as error:
        raise UserError(str(error).replace("embed.input.", "query.probes.archive.")) from None
    counts = {f"probe_{key}": value for key, value in summary.items() if isinstance(value, int)}
    counts.update({f"probe_status_{key}": value for key, value in summary["by_status"].items()})
    return (
        str(embed_config.faces_table_path()),
        summary["outputs"]["faces_table_version"],
        source_prefix(embed_config.embed.input),
        counts,
    )


def _read_delta(spark: SparkSession, table: str, version: int | None, key: str) -> tuple[DataFrame, int]:
    frame, version = read_pinned(spark, table, version, key)
    missing = {"face_id", "image_id", "embedding", "model_id", "status"} - set(frame.columns)
    if missing:
        raise UserError(f"{key} {table} is not a faces table (no columns {sorted(missing)})")
    return frame, version


def check_probes(probes: DataFrame, manifest: Manifest) -> None:
    """Refuse probes of another model or dimension: their scores would mean nothing."""
    from pyspark.sql import functions as F

    ok = probes.where(F.col("status") == "ok")
    seen = ok.groupBy("model_id", F.size("embedding").alias("d")).count().collect()  # one pass over the probes
    models = sorted({row.model_id for row in seen})
    if not models:
        return  # no usable probe: the run records their statuses
    foreign = [model for model in models if model != manifest.model_id]
    if foreign:
        raise UserError(
            f"probes were embedded with {foreign}, the index holds {manifest.model_id}: "
            "embed the probes with the gallery's model pack (or filter them with query.probes.where)"
        )
    dims = sorted({row.d for row in seen})
    if dims != [manifest.dim]:
        raise UserError(f"probe embeddings have {dims} dimensions, the index {manifest.dim}: re-embed the probes")
