"""The demo's roles on a made-up LFW tree: nobody searched as non-mated is in the gallery, the calibration
people are nobody else, every mated probe's person is in the gallery, and the plan is seeded."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobs.common.errors import UserError
from jobs.demo.plan import plan_demo, stage


def fake_lfw(root: Path, people: int = 300) -> Path:
    images = root / "lfw" / "images"
    for number in range(people):
        name = f"Person_{number:04d}"
        (images / name).mkdir(parents=True)
        for photo in range(1 + (number % 3 == 0) * (number % 7 + 1)):  # a third have several photographs
            (images / name / f"{name}_{photo + 1:04d}.jpg").write_bytes(b"jpeg")
    return images


def person(path: Path) -> str:
    return path.parent.name


def test_roles_are_disjoint_where_the_test_needs_it(tmp_path: Path) -> None:
    images = fake_lfw(tmp_path)
    plan = plan_demo(images)
    gallery = {person(p) for p in plan.gallery}
    calibration = {person(p) for p in plan.calibration}
    probe_people = [person(p) for p in plan.probes]
    mated = [name for name in probe_people if name in gallery]
    non_mated = [name for name in probe_people if name not in gallery]
    assert len(mated) == plan.counts["mated_probes"] and len(non_mated) == plan.counts["non_mated_probes"]
    assert not calibration & (gallery | set(probe_people))
    assert len(set(plan.probes)) == len(plan.probes) and not set(plan.probes) & set(plan.gallery)
    assert plan_demo(images).gallery == plan.gallery  # seeded
    assert len(plan_demo(images, people=60).gallery) < len(plan.gallery)


def test_staging_links_each_photo_once_and_a_rerun_keeps_them(tmp_path: Path) -> None:
    images = fake_lfw(tmp_path, 40)
    photos = sorted(images.rglob("*.jpg"))[:5]
    folder = stage(photos, tmp_path / "staged")
    links = sorted(folder.rglob("*.jpg"))
    assert [link.name for link in links] == sorted(p.name for p in photos)
    assert all(link.is_symlink() and link.resolve() == (images / person(link) / link.name).resolve() for link in links)
    stage(photos, folder)  # nothing to do, no error
    assert sorted(folder.rglob("*.jpg")) == links


def test_a_folder_without_lfw_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no LFW images at"):
        plan_demo(tmp_path / "nowhere")
