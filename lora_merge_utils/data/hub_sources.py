"""Where each full-profile task lives on the Hugging Face Hub: repositories, data files, class names (data, no
loading code; :mod:`.hub` reads it)."""

from __future__ import annotations

import json
from dataclasses import dataclass


# --------------------------------------------------------------------------------------------------- hub loaders
@dataclass(frozen=True)
class HubSource:
    """Where a full-profile task lives on the Hugging Face Hub (all parquet-backed; no loading scripts).

    ``files`` maps each split the book reads to its data files inside the repository; ``other_splits`` names the
    splits it never reads (and never downloads). ``class_names`` are the dataset's ``ClassLabel`` names, in order.
    """

    repo: str
    class_names: tuple[str, ...]
    files: dict
    config: str | None = None
    other_splits: tuple[str, ...] = ()
    image_column: str = "image"
    label_column: str = "label"

    def __hash__(self) -> int:
        return hash((self.repo, self.config, json.dumps(self.files, sort_keys=True)))

    @property
    def title(self) -> str:
        return f"{self.repo}{' (' + self.config + ')' if self.config else ''}"


CORRUPTIONS = ("contrast", "gaussian_noise", "impulse_noise", "jpeg_compression", "motion_blur", "pixelate", "spatter")


_DIGITS = tuple(str(i) for i in range(10))


_TANGANKE_FILES = {"train": "data/train-*.parquet", "test": "data/test-*.parquet"}


HUB_SOURCES: dict[str, HubSource] = {
    "mnist": HubSource(
        "ylecun/mnist", _DIGITS, {"train": "mnist/train-*.parquet", "test": "mnist/test-*.parquet"}, config="mnist"
    ),
    "svhn": HubSource(
        "ufldl-stanford/svhn",
        _DIGITS,
        {"train": "cropped_digits/train-*.parquet", "test": "cropped_digits/test-*.parquet"},
        config="cropped_digits",
        other_splits=("extra",),
    ),
    "eurosat": HubSource(
        "tanganke/eurosat",
        (
            "annual crop land",
            "forest",
            "brushland or shrubland",
            "highway or road",
            "industrial buildings or commercial buildings",
            "pasture land",
            "permanent crop land",
            "residential buildings or homes or apartments",
            "river",
            "lake or sea",
        ),
        _TANGANKE_FILES,
        other_splits=CORRUPTIONS,
    ),
    "resisc45": HubSource(
        "tanganke/resisc45",
        (
            "airplane",
            "airport",
            "baseball diamond",
            "basketball court",
            "beach",
            "bridge",
            "chaparral",
            "church",
            "circular farmland",
            "cloud",
            "commercial area",
            "dense residential",
            "desert",
            "forest",
            "freeway",
            "golf course",
            "ground track field",
            "harbor",
            "industrial area",
            "intersection",
            "island",
            "lake",
            "meadow",
            "medium residential",
            "mobile home park",
            "mountain",
            "overpass",
            "palace",
            "parking lot",
            "railway",
            "railway station",
            "rectangular farmland",
            "river",
            "roundabout",
            "runway",
            "sea ice",
            "ship",
            "snowberg",
            "sparse residential",
            "stadium",
            "storage tank",
            "tennis court",
            "terrace",
            "thermal power station",
            "wetland",
        ),
        _TANGANKE_FILES,
        other_splits=CORRUPTIONS,
    ),
    "gtsrb": HubSource(
        "tanganke/gtsrb",
        (
            "red and white circle 20 kph speed limit",
            "red and white circle 30 kph speed limit",
            "red and white circle 50 kph speed limit",
            "red and white circle 60 kph speed limit",
            "red and white circle 70 kph speed limit",
            "red and white circle 80 kph speed limit",
            "end / de-restriction of 80 kph speed limit",
            "red and white circle 100 kph speed limit",
            "red and white circle 120 kph speed limit",
            "red and white circle red car and black car no passing",
            "red and white circle red truck and black car no passing",
            "red and white triangle road intersection warning",
            "white and yellow diamond priority road",
            "red and white upside down triangle yield right-of-way",
            "stop",
            "empty red and white circle",
            "red and white circle no truck entry",
            "red circle with white horizonal stripe no entry",
            "red and white triangle with exclamation mark warning",
            "red and white triangle with black left curve approaching warning",
            "red and white triangle with black right curve approaching warning",
            "red and white triangle with black double curve approaching warning",
            "red and white triangle rough / bumpy road warning",
            "red and white triangle car skidding / slipping warning",
            "red and white triangle with merging / narrow lanes warning",
            "red and white triangle with person digging / construction / road work warning",
            "red and white triangle with traffic light approaching warning",
            "red and white triangle with person walking warning",
            "red and white triangle with child and person walking warning",
            "red and white triangle with bicyle warning",
            "red and white triangle with snowflake / ice warning",
            "red and white triangle with deer warning",
            "white circle with gray strike bar no speed limit",
            "blue circle with white right turn arrow mandatory",
            "blue circle with white left turn arrow mandatory",
            "blue circle with white forward arrow mandatory",
            "blue circle with white forward or right turn arrow mandatory",
            "blue circle with white forward or left turn arrow mandatory",
            "blue circle with white keep right arrow mandatory",
            "blue circle with white keep left arrow mandatory",
            "blue circle with white arrows indicating a traffic circle",
            "white circle with gray strike bar indicating no passing for cars has ended",
            "white circle with gray strike bar indicating no passing for trucks has ended",
        ),
        _TANGANKE_FILES,
        other_splits=CORRUPTIONS,
    ),
    "dtd": HubSource(
        "tanganke/dtd",
        (
            "banded",
            "blotchy",
            "braided",
            "bubbly",
            "bumpy",
            "chequered",
            "cobwebbed",
            "cracked",
            "crosshatched",
            "crystalline",
            "dotted",
            "fibrous",
            "flecked",
            "freckled",
            "frilly",
            "gauzy",
            "grid",
            "grooved",
            "honeycombed",
            "interlaced",
            "knitted",
            "lacelike",
            "lined",
            "marbled",
            "matted",
            "meshed",
            "paisley",
            "perforated",
            "pitted",
            "pleated",
            "polka-dotted",
            "porous",
            "potholed",
            "scaly",
            "smeared",
            "spiralled",
            "sprinkled",
            "stained",
            "stratified",
            "striped",
            "studded",
            "swirly",
            "veined",
            "waffled",
            "woven",
            "wrinkled",
            "zigzagged",
        ),
        _TANGANKE_FILES,
    ),
}
