"""Where Lineup keeps what setup stages (Delta jars, model packs) and what jobs write by default.

Everything lives under one home folder, `$LINEUP_HOME` (default `~/.lineup`), so that a user can point
a whole installation elsewhere with one variable and tests can use a temporary one.
"""

from __future__ import annotations

import os
from pathlib import Path

HOME_ENV = "LINEUP_HOME"


def lineup_home() -> Path:
    """The root folder for staged jars, model packs and the default data root."""
    return Path(os.environ.get(HOME_ENV, "~/.lineup")).expanduser().resolve()


def jars_dir() -> Path:
    """Folder holding the staged Delta Lake jars and their `manifest.json`."""
    return lineup_home() / "jars"


def models_dir() -> Path:
    """Folder holding built model packs, one sub-folder per pack."""
    return lineup_home() / "models"


DEFAULT_PACK_NAME = "default"


def default_pack_dir() -> Path:
    """The pack `lineup setup` builds, used where a config names none."""
    return models_dir() / DEFAULT_PACK_NAME


def accurate_pack_dir() -> Path:
    """The accuracy-first pack `lineup setup` builds beside the default: the same files, each chip's
    embedding averaged with its mirror image's."""
    return models_dir() / "default-flip"


DATA_ROOT_ENV = "LINEUP_DATA_ROOT"


def default_data_root() -> Path:
    """Default root for the warehouse and the tables jobs write: `$LINEUP_DATA_ROOT`, else
    `$LINEUP_HOME/data` (`spark.data_root` in a config wins over both)."""
    given = os.environ.get(DATA_ROOT_ENV)
    return Path(given).expanduser().resolve() if given else lineup_home() / "data"
