"""Labels of embedded images: subject_id and attributes from a labels table (read once on the driver,
shipped to the tasks) and/or from regexes on the image's name."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import TYPE_CHECKING

from jobs.common.errors import UserError

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from jobs.faces.config import LabelTableSettings


@dataclass(frozen=True)
class Labeller:
    """subject_id and attributes for an image, from a labels table keyed by the image's name (path
    relative to the input folder, tar member name or table id) and/or from regexes: subject_id from a
    regex on the name, attributes from the named groups of a regex on the file name. The table wins
    where both give a value."""

    subject_from_path: str | None = None
    attributes_from_name: str | None = None
    table: dict[str, tuple[str | None, dict[str, str]]] | None = None

    def subject(self, name: str) -> str | None:
        if self.table is not None and name in self.table and self.table[name][0] is not None:
            return self.table[name][0]
        if not self.subject_from_path:
            return None
        match = re.search(self.subject_from_path, name)
        if not match:
            return None
        return match.groupdict().get("subject") or (match.group(1) if match.groups() else match.group(0))

    def attributes(self, name: str) -> list[tuple[str, str]] | None:
        found: dict[str, str] = {}
        if self.attributes_from_name:
            match = re.search(self.attributes_from_name, PurePosixPath(name).name)
            if match:
                found.update({key: value for key, value in match.groupdict().items() if value is not None})
        if self.table is not None and name in self.table:
            found.update(self.table[name][1])
        return sorted(found.items()) if found else None


def load_label_table(spark: SparkSession, settings: LabelTableSettings) -> dict[str, tuple[str | None, dict[str, str]]]:
    """The labels table as {name: (subject_id, attributes)}; `UserError` naming missing columns."""
    from pyspark.errors import AnalysisException  # deferred: executors import Labeller without pyspark

    reader = spark.read.format(settings.format)
    if settings.format == "csv":
        reader = reader.option("header", "true")
    try:
        frame = reader.load(settings.path)
    except AnalysisException as error:  # no such path, unreadable format, bad filter: the user's to fix
        raise UserError(
            f"embed.labels.table.path {settings.path} is not a readable {settings.format} table: "
            f"{str(error).splitlines()[0]}"
        ) from None
    wanted = [
        settings.key_column,
        *([settings.subject_column] if settings.subject_column else []),
        *settings.attribute_columns,
    ]
    missing = [column for column in wanted if column not in frame.columns]
    if missing:
        raise UserError(
            f"embed.labels.table.path {settings.path} has no column(s) {missing} "
            f"(columns: {frame.columns}); fix embed.labels.table.*_column"
        )
    labels = {}
    for row in frame.select(*wanted).collect():
        attributes = {c: str(row[c]) for c in settings.attribute_columns if row[c] is not None}
        subject = row[settings.subject_column] if settings.subject_column else None
        labels[str(row[settings.key_column])] = (None if subject is None else str(subject), attributes)
    return labels
