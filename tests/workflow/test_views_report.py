"""The data views run as Snakemake stages on the tiny study and land in `snakemake --report`, grouped per dataset.

The report is checked by its structure: the categories and the results the
report's script embeds (each with its caption and labels), and the profile page
it carries, parsed as HTML. A headless Chromium screenshot is taken too where
Chromium is installed (Debian's `chromium`), and skipped cleanly elsewhere.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest
import yaml

from .conftest import CONFIGS, snakemake

pytestmark = pytest.mark.workflow

VIEWS = ["results/views/tiny/profile.csv", "results/views/tiny/profile.html", "results/views/tiny/montage.png",
         "results/views/intensity_histograms.png", "results/views/embedding.csv", "results/views/embedding.png"]


class Scripts(HTMLParser):
    """The text of every <script> element, and the tags seen."""

    def __init__(self):
        super().__init__()
        self.scripts: list[str] = []
        self.tags: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self._in_script = tag == "script"
        if self._in_script:
            self.scripts.append("")

    def handle_endtag(self, tag):
        if tag == "script":
            self._in_script = False

    def handle_data(self, data):
        if self._in_script:
            self.scripts[-1] += data


def embedded(scripts: list[str], name: str) -> dict:
    """The JSON object the report's script assigns to ``var <name>``."""
    for script in scripts:
        for line in script.splitlines():
            if line.strip().startswith(f"var {name} = {{"):
                return json.loads(line.strip()[len(f"var {name} = "):].rstrip(";"))
    raise AssertionError(f"no 'var {name}' in the report")


@pytest.fixture(scope="module")
def views_report(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("views")
    config = yaml.safe_load((CONFIGS / "tiny.yaml").read_text())
    config["views"] = {"montage": {"cases": {"tiny": "BraTS2021_00003"}}, "embedding": {"fraction": 1.0}}
    path = workdir / "study.yaml"
    path.write_text(yaml.safe_dump(config))
    done = snakemake(workdir, "--cores", "2", *VIEWS, configfile=path)  # an option between --configfile and the targets
    assert done.returncode == 0, done.output[-4000:]
    report = snakemake(workdir, "--report", "report.html", "--cores", "2", *VIEWS, configfile=path)
    assert report.returncode == 0, report.output[-3000:]
    return workdir


def test_the_views_are_in_the_report_grouped_per_dataset_with_captions(views_report):
    parser = Scripts()
    parser.feed((views_report / "report.html").read_text())
    categories = embedded(parser.scripts, "categories")
    assert list(categories) == ["Datasets"] and set(categories["Datasets"]) == {"tiny", "all datasets"}
    assert sorted(categories["Datasets"]["tiny"]) == sorted(VIEWS[:3])
    assert sorted(categories["Datasets"]["all datasets"]) == sorted(VIEWS[3:])
    results = embedded(parser.scripts, "results")
    for path in VIEWS:
        item = results[path]
        assert item["caption"].startswith("<p>") and len(item["caption"]) > 100, path
        assert set(item["labels"]) == {"dataset", "view"}
    assert results[VIEWS[2]]["mime_type"] == "image/png" and "dataset tiny" in results[VIEWS[2]]["caption"]
    assert "t-SNE" in results[VIEWS[5]]["caption"]

    page = results[VIEWS[1]]["data_uri"].split("base64,", 1)[1]
    profile = Scripts()
    profile.feed(base64.b64decode(page).decode())
    assert profile.tags.count("table") == 6 and profile.tags.count("h2") == 7


def test_the_views_hold_every_case_and_the_named_montage_case(views_report):
    results = views_report / "results"
    profile = pd.read_csv(results / "views/tiny/profile.csv", keep_default_na=False)
    assert len(profile) == 8 and set(profile["volume_unit"]) == {"cm3"}
    embedding = pd.read_csv(results / "views/embedding.csv")
    assert sorted(embedding["case"]) == sorted(profile["case"])  # fraction 1.0
    log = (results / "logs/figures/tiny_montage.log").read_text()
    assert "--case BraTS2021_00003" in log


@pytest.mark.skipif(not (shutil.which("chromium") or shutil.which("chromium-browser")), reason="no headless Chromium installed")
def test_the_report_renders_in_a_headless_browser(views_report, tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    shot = tmp_path / "report.png"
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={shot}", "--window-size=1280,900",
                    (views_report / "report.html").as_uri()], check=True, capture_output=True, timeout=120)
    assert shot.stat().st_size > 10_000
