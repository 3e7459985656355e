"""``robench report RUN_DIR --out report.html``: one self-contained page (robench.report.html_report).

A tiny run and a tiny suite of untrained tiny models: the page holds every layout's table, its images
decode to PNGs, nothing refers outside the page, and the same records render the same bytes. Where a
Chromium is installed, it renders the page (network off) and counts the tables and loaded images.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from robench.checkpoints.bundle import save_bundle
from robench.cli.report import report as report_command
from robench.report.html_report import CONTENT_SECURITY_POLICY, PNG_DATA_URI, info_table, render_report, sanity_frame
from robench.report.rundir import load_run_dir
from robench.report.tables import build_tables
from robench.runs.output import write_run
from robench.runs.runner import RunConfig, run
from robench.runs.suite import run_suite
from robench.scoring.metrics import summarize
from synthetic import synthetic_records
from test_cli import assert_one_line_error
from test_cli import run as run_cli
from tiny import make_tiny

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# attributes that can make a browser fetch something
URL_ATTRIBUTES = {
    "src",
    "href",
    "srcset",
    "action",
    "formaction",
    "data",
    "poster",
    "background",
    "ping",
    "manifest",
    "cite",
    "longdesc",
    "codebase",
    "xlink:href",
}
FETCHING_TAGS = {
    "script",
    "link",
    "iframe",
    "frame",
    "object",
    "embed",
    "base",
    "audio",
    "video",
    "source",
    "track",
    "form",
    "applet",
}
SUITE = """
[defaults]
n = 8
batch_size = 8
device = "cpu"
detectors = ["kd", "max-prob"]

[[model]]
name = "softmax"
path = "softmax.pt"

[[model]]
name = "gm"
path = "gm.pt"

[[threat]]
name = "semi-white-box"
attacks = ["FGSM", "PGD-10-un"]

[[threat]]
name = "white-box"
attacks = ["C&W-wb", "PGD-10-un"]
[threat.set]
"C&W-wb.steps" = 5
"C&W-wb.binary_search_steps" = 2
"C&W-wb.kd_per_class" = 20

[[threat]]
name = "black-box"
attacks = ["PGD-10-un"]
substitute = ["softmax", "gm"]
"""
SUITE_LAYOUTS = ("detection", "white-box", "black-box", "accuracy", "worst-case", "curves", "audit", "summary")


class Page(HTMLParser):
    """Every start tag with its attributes, the text of each <style>, and the ids on the page."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.styles: list[str] = []
        self._in_style = False
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, {k: v or "" for k, v in attrs}))
        self._in_style = tag == "style"

    def handle_endtag(self, tag):
        self._in_style = False

    def handle_data(self, data):
        if self._in_style:
            self.styles.append(data)

    def all(self, tag: str) -> list[dict[str, str]]:
        return [attrs for name, attrs in self.tags if name == tag]

    @property
    def ids(self) -> set[str]:
        return {attrs["id"] for _, attrs in self.tags if "id" in attrs}


def assert_self_contained(page: Page) -> None:
    """No tag that fetches, every link a #fragment to an id on the page, every src a data: PNG, no url() in CSS."""
    fetching = sorted({tag for tag, _ in page.tags} & FETCHING_TAGS)
    assert not fetching, fetching
    for tag, attrs in page.tags:
        for name, value in attrs.items():
            if name not in URL_ATTRIBUTES:
                assert "url(" not in value.lower(), (tag, name, value[:80])  # an inline style= that fetches
                continue
            if name == "href":
                assert value.startswith("#") and value[1:] in page.ids, (tag, value)
            elif name == "src":
                assert tag == "img" and value.startswith(PNG_DATA_URI), (tag, value[:80])
            else:
                raise AssertionError(f"<{tag} {name}={value[:80]!r}>")
    css = "\n".join(page.styles).lower()
    assert "url(" not in css and "@import" not in css and "@font-face" not in css
    (meta,) = [m for m in page.all("meta") if m.get("http-equiv", "").lower() == "content-security-policy"]
    assert meta["content"] == CONTENT_SECURITY_POLICY and "default-src 'none'" in meta["content"]


def embedded_pngs(page: Page) -> list[bytes]:
    return [base64.b64decode(img["src"][len(PNG_DATA_URI) :], validate=True) for img in page.all("img")]


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    """A one-model run (semi-white-box, FGSM + BIM, sanity checks on) and a two-model suite (three threats) of tiny
    bundles."""
    root = tmp_path_factory.mktemp("html")
    for name in ("softmax", "gm"):
        model, meta = make_tiny(name)
        save_bundle(root / f"{name}.pt", model, meta)
    config = RunConfig(
        model=root / "gm.pt",
        threat="semi-white-box",
        attacks=("FGSM", "BIM"),
        n=8,
        batch_size=8,
        device="cpu",
        detectors=("kd", "max-prob"),
    )
    run(config, root / "run", progress=False)
    (root / "suite.toml").write_text(SUITE)
    run_suite(root / "suite.toml", root / "suite", progress=False, echo=lambda _: None)
    return root


def report(capsys, run_dir: Path, out: Path, *args: str) -> str:
    code, stdout, err = run_cli(capsys, "report", str(run_dir), "--out", str(out), "--resamples", "50", *args)
    assert code == 0, err
    assert stdout == ""  # the page goes to the file, notes and 'wrote' to stderr
    return out.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def run_page(tiny_runs) -> Path:
    """The tiny run's report, with its figures and intervals (the defaults)."""
    out = tiny_runs / "run.html"
    result = CliRunner().invoke(report_command, [str(tiny_runs / "run"), "--out", str(out), "--resamples", "50"])
    assert result.exit_code == 0, result.output
    return out


def test_run_report_is_one_self_contained_page(tiny_runs, run_page, tmp_path, capsys):
    text = run_page.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>")
    page = Page(text)
    assert_self_contained(page)
    tables = {attrs.get("id") for attrs in page.all("table")}
    assert {
        "T_detection",
        "T_worst_case",
        "T_summary",
    } <= tables and "T_white_box" not in tables  # no white-box threat in the run
    assert {"evaluated", "tables", "table-detection", "table-worst-case", "summary", "sanity", "figures"} <= page.ids
    # the intervals are on by default in the page: value [low, high], low <= value <= high
    cells = re.findall(r">(\d+\.\d) \[(\d+\.\d), (\d+\.\d)\]<", text)
    assert cells and all(float(low) <= float(value) <= float(high) for value, low, high in cells)
    pngs = embedded_pngs(page)
    assert len(pngs) == 3 and all(
        png.startswith(PNG_MAGIC) and len(png) > 1000 for png in pngs
    )  # the ROC, K-density and robustness-curve figures
    stems = re.findall(r"Figure \d+: <code>([^<]+)</code>", text)
    assert stems == ["roc-gm-semi-white-box", "kd-hist-semi-white-box", "curve-gm-semi-white-box"]
    assert {"T_curves", "T_audit"} <= tables and {"table-curves", "table-audit"} <= page.ids  # built from records
    info = json.loads((tiny_runs / "run" / "run.json").read_text())
    content_hash = info["model"]["content_hash"]
    assert f'<code title="{content_hash}">{content_hash[:12]}</code>' in text
    assert f'title="{info["git_revision"]}"' in text or f"<code>{info['git_revision']}</code>" in text
    assert (
        "<th>torch</th>" in text and f"<code>{info['versions']['torch']}</code>" in text
    )  # run.json's package versions
    assert "gradient-zero-or-nan" in text and "unbounded-budget-not-reached" in text  # the run's sanity checks
    again = report(capsys, tiny_runs / "run", tmp_path / "again.html")
    assert again == text  # the same records render the same bytes


def test_suite_report_holds_every_layout(tiny_runs, tmp_path, capsys):
    text = report(capsys, tiny_runs / "suite", tmp_path / "suite.html", "--no-figures")
    page = Page(text)
    assert_self_contained(page)
    tables = {attrs.get("id") for attrs in page.all("table")}
    for layout in SUITE_LAYOUTS:
        assert f"T_{layout.replace('-', '_')}" in tables, layout
        assert f"table-{layout}" in page.ids
    toc = {a["href"][1:] for a in page.all("a")}
    assert {f"table-{layout}" for layout in SUITE_LAYOUTS if layout != "summary"} <= toc
    sanity = pd.read_csv(tiny_runs / "suite" / "sanity.csv")
    assert text.count('<tr class="flagged">') == int(sanity["flagged"].sum())  # the suite's own sanity.csv, row for row
    assert f"{len(sanity)} checks" in text
    assert (
        "black-box (from gm)" in text and "black-box (from softmax)" in text
    )  # each run's threats, with its substitute
    assert not page.all("img") and "--no-figures" in text


def test_suite_report_embeds_every_figure(tiny_runs, tmp_path, capsys):
    text = report(capsys, tiny_runs / "suite", tmp_path / "suite.html", "--no-ci")
    page = Page(text)
    assert_self_contained(page)
    stems = re.findall(r"Figure \d+: <code>([^<]+)</code>", text)
    expected = {f"roc-{m}-{t}" for m in ("gm", "softmax") for t in ("semi-white-box", "white-box", "black-box")}
    expected |= {f"kd-hist-{t}" for t in ("semi-white-box", "white-box", "black-box")}
    expected |= {f"curve-{m}-{t}" for m in ("gm", "softmax") for t in ("semi-white-box", "white-box")}
    transfer = {s for s in stems if re.fullmatch(r"curve-(gm|softmax)-black-box-from-(gm|softmax)", s)}
    assert {s.split("-")[1] for s in transfer} == {"gm", "softmax"}  # a curve per target and substitute
    budget = {s for s in stems if s.startswith("budget-")}  # accuracy vs budget, where an attack ran at several
    assert set(stems) == expected | transfer | budget and len(stems) == len(page.all("img"))
    assert all(png.startswith(PNG_MAGIC) for png in embedded_pngs(page))


def test_no_ci_and_no_figures_and_the_stdout_fragment(tiny_runs, tmp_path, capsys):
    bare = report(capsys, tiny_runs / "run", tmp_path / "bare.html", "--no-ci", "--no-figures", "--layout", "detection")
    page = Page(bare)
    assert_self_contained(page)
    assert (
        not page.all("img")
        and not re.search(r"\d \[\d", bare)
        and [t.get("id") for t in page.all("table") if t.get("id", "").startswith("T_")] == ["T_detection"]
    )
    # --format html on stdout without --standalone: the tables' fragment, as before
    code, stdout, err = run_cli(capsys, "report", str(tiny_runs / "run"), "--format", "html", "--layout", "detection")
    assert code == 0, err
    assert (
        stdout.startswith("<style")
        and "<!DOCTYPE" not in stdout
        and "<img" not in stdout
        and 'id="T_detection"' in stdout
    )
    # --standalone on stdout: the whole page
    code, stdout, err = run_cli(
        capsys, "report", str(tiny_runs / "run"), "--format", "html", "--standalone", "--no-figures", "--no-ci"
    )
    assert code == 0, err
    assert stdout.startswith("<!DOCTYPE html>") and 'id="sanity"' in stdout
    code, _, err = run_cli(capsys, "report", str(tiny_runs / "run"), "--format", "markdown", "--no-figures")
    assert_one_line_error(code, err, "--no-figures applies to the HTML report")


def test_info_tables_escape_what_run_json_says():
    frame = pd.DataFrame([{"model": "<script>alert(1)</script>", "content hash": "ab" * 32, "path": 'x" onload="y'}])
    text = info_table(frame, code=("path",))
    assert "<script>" not in text and "&lt;script&gt;" in text and 'onload="y' not in text
    assert f'title="{"ab" * 32}">{"ab" * 6}</code>' in text


def test_the_sanity_section_holds_the_record_checks_behind_the_tables_daggers(tmp_path):
    # records whose run wrote no sanity checks (an older output): no sanity.csv, none in run.json
    frame = pd.concat(
        [
            synthetic_records(
                "gm", "semi-white-box", attack, n=20, seed=i, wrong=2, success_p=0.6, adv_offset=3, shift=2.0
            )
            for i, attack in enumerate(("FGSM", "BIM"))
        ],
        ignore_index=True,
    )
    write_run(tmp_path / "run", frame, summarize(frame), {"model": {"name": "gm", "defense": "gm"}})
    run = load_run_dir(tmp_path / "run")
    sanity, notes = sanity_frame(run)
    kd = sanity[sanity["check"] == "detector-not-attacked"]
    assert kd["threat"].tolist() == ["semi-white-box/detector:kd"] and kd["flagged"].all()
    assert any("recomputed from the records" in note for note in notes)
    tables, _ = build_tables(run.flagged_summary(), run.model_meta(), ["detection"])
    page = render_report(run, tables)
    assert "GM+KD" in page and page.count("†") >= 3  # two AUC cells and the caption's sentence
    assert "<code>detector-not-attacked</code>" in page  # the check behind the mark, in the sanity section


# ------------------------------------------------------------------------------------------ headless Chromium


def chromium() -> str | None:
    if Path("/usr/bin/chromium").is_file():
        return "/usr/bin/chromium"
    return next(
        (found for name in ("chromium", "chromium-browser", "google-chrome") if (found := shutil.which(name))), None
    )


PROBE = """<script>
window.addEventListener("load", function () {
  var images = Array.prototype.slice.call(document.images);
  var loaded = images.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  var probe = document.createElement("pre");
  probe.id = "probe";
  probe.textContent = "tables=" + document.querySelectorAll("table").length \
+ " images=" + images.length + " loaded=" + loaded;
  document.body.appendChild(probe);
});
</script>
"""


def headless(binary: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--host-resolver-rules=MAP * ~NOTFOUND", f"--user-data-dir={profile}"]  # fmt: skip
    return subprocess.run([binary, *flags, *args], capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(
    chromium() is None and not os.environ.get("ROBENCH_REQUIRE_CHROMIUM"),
    reason="no chromium, chromium-browser or google-chrome (CI installs it and sets ROBENCH_REQUIRE_CHROMIUM=1)",
)
def test_chromium_renders_the_tables_and_images(run_page, tmp_path):
    binary = chromium()
    if binary is None:
        pytest.fail("ROBENCH_REQUIRE_CHROMIUM is set but no chromium is installed: the HTML page would go untested")
    text = run_page.read_text(encoding="utf-8")
    # a copy with a probe script; its policy allows that inline script, nothing else beyond the report's own
    probed = tmp_path / "probed.html"
    probed.write_text(
        text.replace(CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY + "; script-src 'unsafe-inline'").replace(
            "</body>", PROBE + "</body>"
        ),
        encoding="utf-8",
    )
    done = headless(binary, tmp_path / "profile", "--virtual-time-budget=5000", "--dump-dom", probed.as_uri())
    assert done.returncode == 0, done.stderr[-2000:]
    found = re.search(r"tables=(\d+) images=(\d+) loaded=(\d+)", done.stdout)
    assert found, done.stdout[-2000:]
    tables, images, loaded = map(int, found.groups())
    assert (
        tables == len(Page(text).all("table")) >= 3 and images == len(Page(text).all("img")) == 3 and loaded == images
    )
    shot = tmp_path / "shot.png"
    done = headless(
        binary,
        tmp_path / "profile",
        "--hide-scrollbars",
        f"--screenshot={shot}",
        "--window-size=1280,2000",
        run_page.as_uri(),
    )
    assert done.returncode == 0 and shot.is_file(), done.stderr[-2000:]
    assert shot.read_bytes().startswith(PNG_MAGIC) and shot.stat().st_size > 10_000
