"""convlens.evaluate: each protocol against answers worked out on paper, then the sweep."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

import convlens as cl
from convlens.cam import GRADIENT_METHODS
from convlens.cam.sanity import randomization_check
from convlens.evaluate import (
    METRICS,
    auto_layers,
    centre_gaussian,
    evaluate,
    make_mosaics,
    pointing_game,
    random_map,
    road,
    road_impute,
    road_impute_batch,
    sobel_map,
)
from convlens.evaluate.sweep import _confident_groups

from .conftest import tiny_convnet

pytestmark = pytest.mark.usefixtures("one_thread")  # a busy 2-core machine: one torch thread


class Quadrants(nn.Module):
    """Class c's logit is the mean red value of quadrant c (0 top-left ... 3 bottom-right) / 25."""

    def __init__(self):
        super().__init__()
        self.features = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        h, w = x.shape[2] // 2, x.shape[3] // 2
        red = x[:, 0]
        quads = [red[:, :h, :w], red[:, :h, w:], red[:, h:, :w], red[:, h:, w:]]
        return torch.stack([q.mean(dim=(1, 2)) for q in quads], dim=1) / 25


class TopLeftShare(nn.Module):
    """Probabilities [p, 1 - p] with p the mean red value of the top-left quadrant / 255."""

    def __init__(self):
        super().__init__()
        self.features = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        p = x[:, 0, : x.shape[2] // 2, : x.shape[3] // 2].mean(dim=(1, 2)) / 255
        return torch.stack([p, 1 - p], dim=1)


class MeanRed(nn.Module):
    """Probabilities [p, 1 - p] with p the mean red value of the whole image / 255."""

    def __init__(self):
        super().__init__()
        self.features = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.features(x)[:, 0].mean(dim=(1, 2)) / 255
        return torch.stack([p, 1 - p], dim=1)


# -- the grid pointing game ----------------------------------------------------------------------
def test_pointing_game_is_1_for_the_true_map_and_a_quarter_for_a_uniform_one():
    model = cl.load_model(Quadrants(), input_size=(8, 8), preprocess="raw")
    mosaic = np.zeros((8, 8, 3), np.float32)
    mosaic[..., 0] = 200  # every quadrant red: each class has evidence in its own cell only
    cams = model.cam(np.stack([mosaic] * 4), method="hirescam", target=[0, 1, 2, 3],
                     layer="features")
    np.testing.assert_allclose(pointing_game(cams.heatmap, [0, 1, 2, 3]), 1.0)
    np.testing.assert_allclose(pointing_game(np.ones((4, 8, 8)), [0, 1, 2, 3]), 0.25)
    gaussian = centre_gaussian(torch.zeros(4, 8, 8, 3))
    np.testing.assert_allclose(pointing_game(gaussian, [0, 1, 2, 3]), 0.25, rtol=1e-6)
    three_quarters = np.zeros((1, 8, 8))
    three_quarters[0, :4, :4] = 3  # 16 pixels of 3 in cell 0, 16 pixels of 1 in cell 3
    three_quarters[0, 4:, 4:] = 1
    assert pointing_game(three_quarters, [0])[0] == pytest.approx(0.75)
    assert pointing_game(-np.ones((1, 8, 8)), [0])[0] == 0.0  # no positive attribution


def test_mosaics_put_every_image_in_every_cell():
    colours = torch.arange(4, dtype=torch.float32)[:, None, None, None] * 50 + 10
    images = colours.expand(4, 8, 8, 3).clone()
    mosaics, layouts = make_mosaics(images, [[0, 1, 2, 3]], shrink=True)
    assert mosaics.shape == (4, 8, 8, 3)
    assert layouts == [[0, 1, 2, 3], [1, 2, 3, 0], [2, 3, 0, 1], [3, 0, 1, 2]]
    corners = {0: (0, 0), 1: (0, 4), 2: (4, 0), 3: (4, 4)}
    for m, layout in enumerate(layouts):
        for cell, image in enumerate(layout):
            y, x = corners[cell]
            np.testing.assert_allclose(mosaics[m, y : y + 4, x : x + 4], 50 * image + 10)
    full, _ = make_mosaics(images, [[0, 1, 2, 3]])
    assert full.shape == (4, 16, 16, 3)  # the images at their own size
    np.testing.assert_array_equal(full[1, 8:, :8], images[3])


def test_groups_take_confident_images_of_distinct_classes():
    targets = [0, 0, 1, 2, 3, 4]
    top1 = [0, 0, 1, 2, 3, 9]  # image 5 is misclassified
    confidence = np.array([0.9, 0.9, 0.9, 0.4, 0.9, 0.9])  # image 3 is not confident
    assert _confident_groups(targets, top1, confidence, 0.5, seed=0) == []
    targets, top1 = [*targets, 5], [*top1, 5]  # a confident image of a fourth class
    groups = _confident_groups(targets, top1, np.append(confidence, 0.9), 0.5, seed=0)
    assert len(groups) == 1 and len({targets[i] for i in groups[0]}) == 4
    assert {2, 4, 6} <= set(groups[0]) and 3 not in groups[0] and 5 not in groups[0]


# -- ROAD ----------------------------------------------------------------------------------------
def test_road_imputation_solved_by_hand():
    image = np.array([[12, 6, 12], [6, 100, 6], [12, 6, 12]], np.float32)[..., None]
    centre = np.zeros((3, 3), bool)
    centre[1, 1] = True
    # 4 direct neighbours of 6 at 1/6 and 4 diagonal ones of 12 at 1/12: 4 + 4 = 8
    assert road_impute(image, centre)[1, 1, 0] == pytest.approx(8.0)
    # 2x2: a (top-left) and b (top-right) removed, c = 0 below a, d = 12 below b.
    # (5/12) a = b/6 + c/6 + d/12 and (5/12) b = a/6 + d/6 + c/12  →  a = 36/7, b = 48/7
    square = np.array([[0, 0], [0, 12]], np.float32)[..., None]
    top = np.array([[True, True], [False, False]])
    filled = road_impute(square, top)[..., 0]
    np.testing.assert_allclose(filled[0], [36 / 7, 48 / 7], rtol=1e-6)
    np.testing.assert_array_equal(filled[1], [0, 12])  # known pixels are kept
    noisy = road_impute(square, top, noise=1.0, rng=np.random.default_rng(3))[..., 0]
    expected = np.array([36 / 7, 48 / 7]) + np.random.default_rng(3).normal(0, 1, (2, 1))[:, 0]
    np.testing.assert_allclose(noisy[0], expected, rtol=1e-6)


def test_batched_imputation_matches_the_exact_sparse_solve():
    """The torch solver (multigrid-preconditioned CG, all images at once) against scipy's exact
    factorization: salt-and-pepper, blob and thin-strip masks, odd sizes, every coarse level."""
    rng = np.random.default_rng(7)
    h, w = 37, 30
    images = rng.uniform(0, 255, (4, h, w, 3))
    smooth = torch.nn.functional.interpolate(torch.from_numpy(rng.random((1, 1, 3, 3))),
                                             size=(h, w), mode="bilinear")[0, 0].numpy()
    masks = np.stack([
        rng.random((h, w)) < 0.3,  # isolated pixels
        smooth > np.quantile(smooth, 0.25),  # one large hole (75 %)
        smooth < np.quantile(smooth, 0.5),
        np.zeros((h, w), bool),
    ])
    masks[3, :, 10] = masks[3, 5, :] = True  # one-pixel-wide strips
    exact = np.stack([road_impute(im, m) for im, m in zip(images, masks)])
    solved = road_impute_batch(torch.from_numpy(images), torch.from_numpy(masks), tol=1e-12,
                               max_iter=500)
    assert solved.dtype == torch.float64
    np.testing.assert_allclose(solved.numpy(), exact, atol=1e-6)
    quick = road_impute_batch(torch.from_numpy(images).float(), torch.from_numpy(masks))
    assert np.abs(quick.numpy() - exact).max() < 0.1  # the default tolerance, in float32
    np.testing.assert_array_equal(quick.numpy()[~masks], images[~masks].astype(np.float32))
    with pytest.raises(cl.ModelError, match="every pixel removed"):
        road_impute_batch(torch.zeros(1, 4, 4, 3), torch.ones(1, 4, 4, dtype=torch.bool))


def test_road_scores_of_a_tiny_image_by_hand():
    model = cl.load_model(MeanRed(), input_size=(3, 3), preprocess="raw", output="probabilities")
    red = np.array([[12, 6, 12], [6, 100, 6], [12, 6, 12]], np.float32)
    image = torch.from_numpy(np.repeat(red[..., None], 3, axis=2))[None]
    heat = torch.full((1, 3, 3), 0.5)
    heat[0, 1, 1], heat[0, 0, 0] = 1.0, 0.0  # most relevant: the centre; least: top-left
    result = road(model, image, heat, [0], fractions=[1 / 9], noise=0.0)
    # MoRF removes the centre (imputed 8); LeRF removes the top-left corner, imputed from
    # 6, 6 (direct, 1/6 each) and 100 (diagonal, 1/12), over their weight 5/12: 24.8
    assert result["morf"][0] == pytest.approx((red.sum() - 100 + 8) / 9 / 255, rel=1e-5)
    assert result["lerf"][0] == pytest.approx((red.sum() - 12 + 24.8) / 9 / 255, rel=1e-5)


# -- deletion through the sweep ------------------------------------------------------------------
def test_deletion_auc_of_a_perfect_ordering_computed_on_paper():
    """p = mean red of the top-left quadrant / 255; the image is red there only. HiResCAM's map
    is that quadrant; 8 steps of 8 pixels: p = 1, 0.5, 0, ... → AUC = 1/16 * 1.5 + 1/16 * 0.5."""
    model = cl.load_model(TopLeftShare(), input_size=(8, 8), preprocess="raw",
                          output="probabilities")
    image = np.zeros((8, 8, 3), np.float32)
    image[:4, :4, 0] = 255
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # one image: no mosaic
        ev = evaluate(model, [image], methods=["hirescam"], layers=["features"], steps=8,
                      protocols=["deletion", "drop"], bootstrap=20, progress=False)
    row = ev.table.set_index("method").loc["hirescam"]
    assert row["deletion_auc"] == pytest.approx(0.125, abs=1e-6)
    assert row["avg_drop"] == pytest.approx(0.0, abs=1e-4)  # E = map * image = image
    assert np.isnan(row["pointing"]) and np.isnan(row["road_morf"])


# -- baselines -----------------------------------------------------------------------------------
def test_baselines():
    pixels = torch.zeros(2, 6, 8, 3)
    pixels[:, :, 4:] = 255  # a vertical edge between columns 3 and 4
    edges = sobel_map(pixels)
    assert edges.shape == (2, 6, 8)
    assert torch.all(edges[:, :, 3:5] == 1) and torch.all(edges[:, :, :2] == 0)
    gaussian = centre_gaussian(pixels)
    torch.testing.assert_close(gaussian, gaussian.flip(1).flip(2))
    assert gaussian[0, 2:4, 3:5].min() == gaussian.max()
    a, b = random_map(pixels, [0, 1], seed=5), random_map(pixels, [1], seed=5)
    torch.testing.assert_close(a[1], b[0])  # each image's map depends on its id, not the batch
    assert not torch.equal(a[0], a[1])


# -- the sweep -----------------------------------------------------------------------------------
def test_auto_layers():
    model = cl.load_model(tiny_convnet(), input_size=(32, 32), preprocess="unit")
    assert [i.name for i in auto_layers(model)] == ["3", "4"]  # the last conv and its ReLU


def test_auto_layers_of_the_default_model(default_model):
    names = [i.name for i in auto_layers(default_model)]
    assert names == ["_blocks.14", "_blocks.15", "_bn1", "_swish#2"]
    default = cl.cam.default_layer
    assert default(default_model, "gradcam").name == "_bn1"
    assert default(default_model, "layercam").name == "_blocks.15"
    assert default(default_model, "hirescam").name == default(default_model).name == "_swish#2"


def test_randomization_column_is_the_sanity_checks_fully_randomized_stage(tiny_model):
    images = np.random.default_rng(4).uniform(0, 255, (3, 32, 32, 3)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        ev = evaluate(tiny_model, images, methods=["gradcam"], layers=["4"], steps=4,
                      road_fractions=(0.5,), bootstrap=50, progress=False)
        check = randomization_check(tiny_model, images, "gradcam", layer="4", stages=1)
    got = ev.per_image[("gradcam", "4")]["randomization_rank_corr"]
    np.testing.assert_allclose(got, check.correlations[0], atol=1e-6)
    baselines = ev.table[ev.table["baseline"]]
    np.testing.assert_allclose(baselines["randomization_rank_corr"], 1.0)


def test_sweep_table_is_reproducible_and_saved(tiny_model, tmp_path):
    from convlens.report.evaluation import save_evaluation

    images = np.random.default_rng(5).uniform(0, 255, (5, 32, 32, 3)).astype(np.float32)
    options = dict(methods=["gradcam", "eigencam"], layers="auto", steps=4,
                   road_fractions=(0.25, 0.75), bootstrap=100, chunk=2, progress=False,
                   min_confidence=0.0, labels=[0, 1, 2, 0, 1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        first = evaluate(tiny_model, images, **options)
        second = evaluate(tiny_model, images, **options)
    table = first.table
    assert list(table["method"]) == ["random", "centre_gaussian", "sobel"] + [
        "gradcam", "eigencam"] * 2
    for metric in [*METRICS, "ms_per_image"]:
        assert {metric, f"{metric}_lo", f"{metric}_hi"} <= set(table.columns)
    stable = [c for c in table.columns if not c.startswith("ms_per_image")]
    numeric = table[stable].select_dtypes("number").columns
    np.testing.assert_allclose(table[numeric], second.table[numeric], rtol=1e-5, atol=1e-6)
    measured = table.dropna(subset=["deletion_auc"])
    assert (measured["deletion_auc_lo"] <= measured["deletion_auc"] + 1e-9).all()
    assert (measured["deletion_auc"] <= measured["deletion_auc_hi"] + 1e-9).all()
    best = first.best()
    assert best.method in ("gradcam", "eigencam") and 0.0 <= best.share_first <= 1.0
    page = save_evaluation(first, tmp_path)
    assert (tmp_path / "evaluation.parquet").stat().st_size > 0
    import pandas as pd

    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "evaluation.parquet"), table)
    assert "data:image/png;base64" in page.read_text()


def test_rows_batched_together_give_each_rows_own_table(tiny_model):
    """The sweep runs every row's perturbed images in shared batches and one CAM pass for all
    methods and layers; each row's values are those of the row's own CAM call and metrics."""
    from convlens.cam.metrics import average_drop_increase, deletion_insertion

    images = np.random.default_rng(6).uniform(0, 255, (4, 32, 32, 3)).astype(np.float32)
    labels = [0, 1, 2, 0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        ev = evaluate(tiny_model, images, methods=["gradcam", "layercam", "eigencam"],
                      layers=["3", "4"], steps=4, road_fractions=(0.3, 0.6), bootstrap=50,
                      progress=False, min_confidence=0.0, labels=labels, chunk=3,
                      protocols=["deletion", "road", "drop"])
        for method, layer in [("gradcam", "3"), ("eigencam", "4"), ("layercam", "4")]:
            heat = tiny_model.cam(images, method, target=labels, layer=layer).heatmap
            rise = deletion_insertion(tiny_model, images, heat, labels, steps=4)
            drops = average_drop_increase(tiny_model, images, heat, labels)
            roads = road(tiny_model, torch.from_numpy(images), torch.from_numpy(heat), labels,
                         fractions=(0.3, 0.6))
            got = ev.per_image[method, layer]
            for metric, expected in [
                ("deletion_auc", rise["deletion"]), ("insertion_auc", rise["insertion"]),
                ("avg_drop", 100 * drops["drop"]), ("road_morf", roads["morf"]),
                ("road_lerf", roads["lerf"]),
            ]:
                np.testing.assert_allclose(got[metric], expected, rtol=1e-5, atol=1e-6,
                                           err_msg=f"{method} {layer} {metric}")


def test_bad_arguments_fail_before_any_work(tiny_model, tmp_path):
    with pytest.raises(cl.ModelError, match="unknown CAM method"):
        evaluate(tiny_model, "chelsea", methods=["gradcma"])
    with pytest.raises(cl.LayerNotFoundError):
        evaluate(tiny_model, "chelsea", layers=["nope"])
    with pytest.raises(cl.ImageError, match="no images in"):
        evaluate(tiny_model, tmp_path)
    with pytest.raises(cl.ImageError, match="image not found"):
        evaluate(tiny_model, [str(tmp_path / "missing.png")])
    with pytest.raises(cl.ModelError, match="2 labels for 1 images"):
        evaluate(tiny_model, "chelsea", labels=[0, 1])


# -- the default model: the layer chosen by this evaluation --------------------------------------
def test_default_gradcam_points_at_the_right_photo_in_mosaics(default_model):
    """Mosaics of the 4 bundled photos (each in every cell): Grad-CAM at its default layer puts
    >= 95 % of its mass in the target's cell, and every gradient method, at its default layer,
    beats the three baselines."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        ev = evaluate(default_model, None, methods=list(GRADIENT_METHODS), layers="default",
                      protocols=["pointing"], bootstrap=200, progress=False)
    table = ev.table.set_index("method")
    assert ev.settings["mosaics"] == 4 and table.loc["gradcam", "layer"] == "_bn1"
    assert table.loc["gradcam", "pointing"] >= 0.95
    for method in GRADIENT_METHODS:
        assert table.loc[method, "beats_baselines"], (method, table.loc[method, "not_beaten"])


def test_default_boxes_single_out_the_object_on_every_bundled_photo(default_model):
    """The Grad-CAM paper's box (15 % of the max, largest region) at the default layer covers
    less than 70 % of each photo (at the head's ReLU6 output, chelsea's box was the image)."""
    cams = default_model.cam(list(cl.SAMPLES))
    for name, (x0, y0, x1, y1) in zip(cl.SAMPLES, cams.boxes):
        assert (x1 - x0 + 1) * (y1 - y0 + 1) / 224**2 < 0.7, name


def test_cli_bad_arguments_are_one_line_before_any_work(tmp_path, capsys):
    from convlens.cli import main

    out = tmp_path / "eval"
    assert main(["evaluate", "chelsea", "--methods", "gradcma", "--out", str(out)]) == 2
    assert main(["evaluate", "chelsea", "--protocols", "pointng", "--out", str(out)]) == 2
    assert main(["evaluate", str(tmp_path / "nope.png"), "--out", str(out)]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 3 and all(line.startswith("convlens: error: ") for line in errors)
    assert "gradcma" in errors[0] and "pointng" in errors[1] and "nope.png" in errors[2]
    assert not out.exists()  # nothing half-written
