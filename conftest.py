"""Shared fixtures of the tests and of the doctests (`jobs/`, `lineup/`): one local Spark per test run,
the evaluation data folder, the default pack, and the small world the Python API's examples run on."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobs.common.config import SparkSettings
from jobs.common.errors import UserError

REPO_ROOT = Path(__file__).resolve().parent
DATA_ENV = "LINEUP_DATA_DIR"


def shared_data_root() -> Path:
    """The evaluation data: $LINEUP_DATA_DIR, else ../shared/data beside the checkout."""
    return Path(os.environ.get(DATA_ENV, REPO_ROOT.parent / "shared" / "data")).expanduser().resolve()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    root = shared_data_root()
    if not (root / "lfw").is_dir():
        pytest.skip(f"evaluation data not found at {root}: set {DATA_ENV} to the folder holding lfw/")
    return root


@pytest.fixture(scope="session", autouse=True)
def isolated_data_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Jobs that fall back to the default data root (runs table, default tables) write under a temp
    folder, never into the user's $LINEUP_HOME; subprocesses inherit it."""
    from jobs.common.paths import DATA_ROOT_ENV

    root = tmp_path_factory.mktemp("default-data-root")
    previous = os.environ.get(DATA_ROOT_ENV)
    os.environ[DATA_ROOT_ENV] = str(root)
    yield root
    if previous is None:
        os.environ.pop(DATA_ROOT_ENV, None)
    else:
        os.environ[DATA_ROOT_ENV] = previous


@pytest.fixture(scope="session")
def spark_settings(tmp_path_factory: pytest.TempPathFactory) -> SparkSettings:
    """Small local Spark: two cores, UI off, two shuffle partitions, warehouse in a temp folder."""
    return SparkSettings(
        master="local[2]",
        app_name="lineup-tests",
        data_root=str(tmp_path_factory.mktemp("lineup-data")),
        shuffle_partitions=2,
        driver_memory="2g",
    )


@pytest.fixture(scope="session")
def s3_environment() -> Iterator[tuple[int, dict[str, str]]]:
    """The local S3 server's endpoint and test credentials, in the environment before the shared
    SparkSession starts (a JVM's environment is fixed at launch), so Spark (S3A), drivers and executors
    (s3fs) reach it the standard way; the server itself starts only for tests that use it (`s3_server`)."""
    from tests.fixtures.s3 import free_port, s3_env

    port = free_port()
    env = s3_env(f"http://127.0.0.1:{port}")
    previous = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    yield port, env
    for key, value in previous.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def s3_server(s3_environment: tuple[int, dict[str, str]]) -> Iterator[object]:
    """A local S3-compatible server (moto) on the port `s3_environment` announced, for the rest of the run."""
    from tests.fixtures.s3 import S3Server, moto_server

    port, env = s3_environment
    with moto_server(port=port) as endpoint:
        yield S3Server(endpoint, env)


@pytest.fixture(scope="session")
def spark(spark_settings: SparkSettings, s3_environment) -> Iterator[object]:
    from jobs.common.spark import get_spark

    try:
        session = get_spark(spark_settings)
    except UserError as error:
        pytest.fail(f"cannot start the test SparkSession: {error}", pytrace=False)
    yield session
    session.stop()


@pytest.fixture(scope="session")
def default_pack():
    from jobs.common.paths import default_pack_dir
    from jobs.models.pack import PackError, load_pack

    try:
        return load_pack(default_pack_dir())
    except PackError as error:
        pytest.fail(f"the default model pack is not built: {error} (run `make install`)", pytrace=False)


@pytest.fixture(scope="session")
def face_pipeline(default_pack):
    from jobs.models.pipeline import FacePipeline

    return FacePipeline(default_pack)


@pytest.fixture(scope="session")
def api_world(shared_data: Path, spark, tmp_path_factory: pytest.TempPathFactory):
    from tests.fixtures.api_world import build_world

    return build_world(shared_data, spark, tmp_path_factory.mktemp("api-world"))


@pytest.fixture(autouse=True)
def _api_examples(request: pytest.FixtureRequest, doctest_namespace: dict) -> None:
    """The Python API's examples (`lineup/api.py`) get `world` and `spark`; nothing else pays for them."""
    if request.node.__class__.__name__ == "DoctestItem" and request.node.name.startswith("lineup.api."):
        doctest_namespace["world"] = request.getfixturevalue("api_world")
        doctest_namespace["spark"] = request.getfixturevalue("spark")
