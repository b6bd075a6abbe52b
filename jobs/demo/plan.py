"""Which LFW photographs play which part in the demo (driver only, no Spark).

The 2018 test searched 535 people (members of Congress) against 25,000 arrest photos, none of them the
same people, and counted false matches. Here, from LFW's identities (seeded, by name):
- non-mated probes: 535 people with one photograph each, whose faces are not in the gallery;
- the gallery: the first photograph of a share of the people with several photographs, plus most of the
  remaining one-photograph people (distractors);
- mated probes: the second photograph of each gallery person who has several;
- calibration: other people entirely (none in the gallery or the probes), up to 10 photographs each,
  whose impostor pairs give the threshold at a stated FMR.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from pathlib import Path

from jobs.common.errors import UserError

NON_MATED = 535
CALIBRATION_PER_PERSON = 10


@dataclass
class DemoPlan:
    gallery: list[Path] = field(default_factory=list)
    probes: list[Path] = field(default_factory=list)  # mated and non-mated
    calibration: list[Path] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)


def people_of(images_dir: Path) -> dict[str, list[Path]]:
    """LFW's `images/<Name>/<Name>_NNNN.jpg`: each person's photographs, sorted."""
    if not images_dir.is_dir():
        raise UserError(f"--data: no LFW images at {images_dir}: give the folder holding lfw/images (../shared/data)")
    people = {folder.name: sorted(folder.glob("*.jpg")) for folder in sorted(images_dir.iterdir()) if folder.is_dir()}
    return {name: photos for name, photos in people.items() if photos}


def plan_demo(images_dir: Path, people: int | None = None, seed: int = 2018) -> DemoPlan:
    """The roles above; `people` keeps a seeded subset of identities (for a quick run)."""
    everyone = people_of(images_dir)
    names = sorted(everyone)
    random.Random(seed).shuffle(names)
    if people is not None:
        names = names[:people]
    several = [n for n in names if len(everyone[n]) >= 2]
    single = [n for n in names if len(everyone[n]) == 1]
    if len(several) < 4 or len(single) < 4:
        raise UserError(f"--people {people}: too few identities for a gallery, probes and calibration")
    searched = several[: len(several) * 3 // 5]  # in the gallery, with a mated probe
    calibration_people = several[len(searched) :] + single[: len(single) // 5]
    rest = single[len(single) // 5 :]
    non_mated = rest[: min(NON_MATED, len(rest) // 3)]
    distractors = rest[len(non_mated) :]
    plan = DemoPlan()
    plan.gallery = [everyone[n][0] for n in searched + distractors]
    plan.probes = [everyone[n][1] for n in searched] + [everyone[n][0] for n in non_mated]
    plan.calibration = [p for n in calibration_people for p in everyone[n][:CALIBRATION_PER_PERSON]]
    plan.counts = {
        "gallery_photos": len(plan.gallery),
        "gallery_people": len(searched) + len(distractors),
        "mated_probes": len(searched),
        "non_mated_probes": len(non_mated),
        "calibration_photos": len(plan.calibration),
        "calibration_people": len(calibration_people),
    }
    return plan


def stage(photos: list[Path], folder: Path) -> Path:
    """`folder/<Name>/<file>` links to the photographs (the embed job reads it like LFW itself);
    links that exist are kept, so a rerun stages nothing new."""
    for photo in photos:
        link = folder / photo.parent.name / photo.name
        if not link.is_symlink():
            link.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(photo.resolve(), link)
    return folder
