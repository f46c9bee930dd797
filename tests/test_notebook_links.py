"""Relative links in the notebooks' prose (English and Chinese) point to files that exist."""

import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb")) + sorted((ROOT / "notebooks" / "zh").glob("*.ipynb"))
LINK = re.compile(r"\]\(([^)\s]+)\)")


def relative_links(markdown: str) -> list[str]:
    targets = [m.group(1).split("#")[0] for m in LINK.finditer(markdown)]
    return [t for t in targets if t and not re.match(r"^[a-z]+:", t)]  # http:, https:, mailto: … are not checked (no internet)


def test_relative_links_are_found_and_external_ones_skipped():
    text = "see [13](13_sd_v1_vs_v2.ipynb), [the paper](https://arxiv.org/abs/2112.10752) and [§2](#2-input)"
    assert relative_links(text) == ["13_sd_v1_vs_v2.ipynb"]


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: str(p.relative_to(ROOT / "notebooks")))
def test_every_relative_link_in_the_prose_points_to_a_file(notebook):
    nb = nbformat.read(notebook, as_version=4)
    missing = [(c.id, target) for c in nb.cells if c.cell_type == "markdown" for target in relative_links(c.source) if not (notebook.parent / target).exists()]
    assert not missing, f"{notebook.name}: links to files that do not exist: {missing}"
