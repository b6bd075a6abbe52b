"""Erasure selectors and digests, without Spark."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from jobs.common.config import ConfigError, load_config
from jobs.common.erasures import id_digest
from jobs.common.errors import UserError
from jobs.forget.config import ForgetConfig, SelectorSettings
from jobs.forget.plan import ErasedSet, embedding_digest, selector_values


def test_values_inline_and_from_a_file_are_merged_and_deduplicated(tmp_path: Path) -> None:
    listed = tmp_path / "people.txt"
    listed.write_text("Zico\n\nAJ_Cook\n")
    selector = SelectorSettings(kind="subject_ids", values=["Zico"], from_file=str(listed))
    assert selector_values(selector) == ["AJ_Cook", "Zico"]


@pytest.mark.parametrize(
    ("kind", "values"),
    [("face_ids", ["12", "twelve"]), ("image_ids", ["abc"]), ("subject_ids", [])],
)
def test_malformed_selectors_are_user_errors(kind: str, values: list[str]) -> None:
    with pytest.raises(UserError, match="forget.selector"):
        selector_values(SelectorSettings(kind=kind, values=values))


def test_purge_without_a_stated_retention_is_refused() -> None:
    with pytest.raises(ConfigError, match="retention_hours"):
        load_config(ForgetConfig, None, ["forget.selector.values=[x]", "forget.purge_history=true"])


def test_digests_match_exact_vectors_only() -> None:
    vector = np.array([0.25, -0.5, 0.125], np.float32)
    assert embedding_digest(vector.tolist()) == embedding_digest(vector)
    assert embedding_digest(np.nextafter(vector, 1)) != embedding_digest(vector)
    assert id_digest(42) == id_digest("42") and len(id_digest("Zico")) == 64


def test_erased_set_survives_its_pending_file() -> None:
    erased = ErasedSet({1, 2}, {"a" * 64}, {"Zico"}, {"d" * 64})
    assert ErasedSet.from_json(erased.to_json()) == erased
