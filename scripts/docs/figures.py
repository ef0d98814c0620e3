"""Redraw the docs site's figures (docs/figures/*.png) from the outputs of the runs they show.

Each figure comes from one run's output folder; give the folders you have and the figures they
make are redrawn, the others left as they are:

    python scripts/docs/figures.py --demo demo_out              # synister demo --out demo_out
    python scripts/docs/figures.py --positions demo_positions   # synister predict-positions
    python scripts/docs/figures.py --explain explained          # synister explain
    python scripts/docs/figures.py --bench-explain bench_out/explain --bench-accuracy bench_out/long

Plots are drawn again from the run's own data (`synister train-plot`) or copied from the PNG the
run wrote; pages (HTML reports) are photographed in headless Chromium (Debian's chromium and
chromium-driver, as the service's browser test uses). Which run and command made each figure is
in FIGURES below and beside the figure on its page.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "docs" / "figures"

#: figure -> (the run's folder option, how it is made, the command whose output it shows)
FIGURES = {
    "demo_training_curves.png": ("demo", "train-plot", "synister demo --out demo_out"),
    "demo_validation_report.png": ("demo", "screenshot", "synister demo --out demo_out"),
    "demo_test_calibration.png": ("demo", "screenshot", "synister demo --out demo_out"),
    "synthetic_easy_montage_serotonin.png": ("demo", "copy", "synister demo --out demo_out"),
    "predict_positions_report.png": (
        "positions",
        "screenshot",
        "synister predict-positions ... --out demo_positions",
    ),
    "explain_montage.png": ("explain", "copy", "synister explain ... --out explained"),
    "explain_mass_ratio.png": ("bench_explain", "copy", "python benchmarks/bench_explain.py"),
    "accuracy_fafb_long_run.png": (
        "bench_accuracy",
        "copy",
        "python benchmarks/bench_accuracy.py --preset fafb --minutes 70 --out bench_out/long",
    ),
}


def screenshot(html: Path, png: Path, width: int, height: int, anchor: str | None = None) -> None:
    """``html`` as headless Chromium shows it in a window of ``width`` x ``height`` pixels,
    scrolled to the first element whose text is ``anchor`` (a heading), if given."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        f"--window-size={width},{height}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    try:
        driver.get(html.resolve().as_uri())
        if anchor:
            driver.execute_script(
                "for (const e of document.querySelectorAll('h1,h2,h3')) {"
                " if (e.textContent.trim() === arguments[0]) { e.scrollIntoView(); break; } }",
                anchor,
            )
        driver.save_screenshot(str(png))
    finally:
        driver.quit()


def copy(source: Path, name: str) -> None:
    if not source.is_file():
        raise SystemExit(f"{source}: not found (made by: {FIGURES[name][2]})")
    shutil.copyfile(source, OUT / name)


def demo(folder: Path) -> None:
    from synister.train.curves import plot_training_curves

    plot_training_curves(
        folder / "demo" / "02_train" / "setup_t0", OUT / "demo_training_curves.png"
    )
    screenshot(
        folder / "evaluation_validation" / "report.html",
        OUT / "demo_validation_report.png",
        1100,
        1400,
    )
    screenshot(
        folder / "evaluation_test" / "report.html",
        OUT / "demo_test_calibration.png",
        1100,
        1355,
        anchor="Calibration",
    )
    copy(folder / "data" / "montage_serotonin.png", "synthetic_easy_montage_serotonin.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--demo", type=Path, help="folder of `synister demo --out`")
    parser.add_argument("--positions", type=Path, help="folder of `predict-positions --out`")
    parser.add_argument("--explain", type=Path, help="folder of `synister explain --out`")
    parser.add_argument("--synapse", default="100117", help="the synapse of the montage")
    parser.add_argument("--bench-explain", type=Path, help="--out of bench_explain.py")
    parser.add_argument("--bench-accuracy", type=Path, help="--out of bench_accuracy.py")
    parser.add_argument("--to", type=Path, default=OUT, help="where the figures go")
    args = parser.parse_args()
    globals()["OUT"] = args.to
    if args.demo:
        demo(args.demo)
    if args.positions:
        screenshot(args.positions / "report.html", OUT / "predict_positions_report.png", 1200, 1500)
    if args.explain:
        copy(args.explain / f"synapse_{args.synapse}.png", "explain_montage.png")
    if args.bench_explain:
        copy(args.bench_explain / "mass_ratio.png", "explain_mass_ratio.png")
    if args.bench_accuracy:
        copy(args.bench_accuracy / "learning_curve.png", "accuracy_fafb_long_run.png")


if __name__ == "__main__":
    main()
