"""convlens scan: every number against a brute-force per-image computation, on tiny models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import convlens as cl
from convlens.scan import ScanError, receptive, scan
from convlens.scan.receptive import Axis, chain_fields, field_box, gradient_box, graph_fields

from .compat_models import HAND_BUILT
from .conftest import tiny_convnet

DEAD = 5  # the channel of the first conv given a large negative bias


def write_folder(root: Path, per_class: int = 52, seed: int = 0) -> list[Path]:
    """An ImageFolder of random 32x32 PNGs (cats/, dogs/) plus one corrupt file; the good ones."""
    rng = np.random.default_rng(seed)
    good = []
    for name in ("cats", "dogs"):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
            if name == "dogs":
                pixels[:, :16] //= 3  # a darker left half: something to tell the classes apart
            path = root / name / f"{i:03d}.png"
            Image.fromarray(pixels).save(path)
            good.append(path)
    (root / "cats" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    return good


def dead_channel_model() -> cl.Model:
    net = tiny_convnet(classes=2, seed=1)
    with torch.no_grad():
        net[0].bias[DEAD] = -10.0  # |weights| < 0.2 on 27 inputs in 0..1: never above 0
    return cl.load_model(net, input_size=(32, 32), preprocess="unit", class_names=["cats", "dogs"])


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> tuple[Path, list[Path]]:
    root = tmp_path_factory.mktemp("imagefolder")
    return root, write_folder(root)


def brute_force(model: cl.Model, paths: list[str], layers: list[str], k: int, rank: str = "max"):
    """Per-channel statistics and top-k from model.activations, one image at a time."""
    acts = [model.activations(p, layers=layers) for p in paths]
    stats, top = [], []
    for layer in layers:
        maps = np.concatenate([a[layer] for a in acts])  # (N, H, W, C), channels-last
        n, _, w, c = maps.shape
        smax = maps.max(axis=(1, 2)).astype(np.float64)
        smean = maps.mean(axis=(1, 2), dtype=np.float64)
        for ch in range(c):
            stats.append({
                "layer": layer, "channel": ch, "firing_rate": (smax[:, ch] > 0).mean(),
                "mean": smean[:, ch].mean(), "std": smean[:, ch].std(), "max": smax[:, ch].max(),
                "dead": bool((smax[:, ch] <= 0).all()),
            })
            value = smax[:, ch] if rank == "max" else smean[:, ch]
            order = sorted(range(n), key=lambda i, v=value: (-v[i], i))[:k]
            for r, i in enumerate(order):
                y, x = divmod(int(np.argmax(maps[i, :, :, ch])), w)
                top.append({"layer": layer, "channel": ch, "rank": r, "path": paths[i],
                            "value": value[i], "y": y, "x": x})
    return pd.DataFrame(stats), pd.DataFrame(top)


def test_oracle_imagefolder(folder, tmp_path, one_thread):
    root, good = folder
    model = dead_channel_model()
    result = scan(model, root, tmp_path / "scan", top_k=4, shard_size=40, batch_size=16)
    paths = sorted(str(p) for p in good)
    layers = result.layers
    assert layers == ["0", "3"]  # the two convs of the tiny model
    stats, top = brute_force(model, paths, layers, k=4)

    channels = result.channels
    pd.testing.assert_frame_equal(
        channels[["layer", "channel", "firing_rate", "mean", "std", "max", "dead"]],
        stats, check_exact=False, rtol=1e-5, atol=1e-6,
    )
    assert (channels["images"] == len(good)).all()
    assert result.dead_channels() == {"0": [DEAD], "3": []}

    topk = result.topk
    pd.testing.assert_frame_equal(
        topk[["layer", "channel", "rank", "path", "value", "y", "x"]], top,
        check_exact=False, rtol=1e-5, atol=1e-6,
    )
    # image ids are positions in the sorted file list; the corrupt file has its own id
    images = result.images
    assert images["path"].tolist() == paths
    assert (topk["image"].map(dict(zip(images["image"], images["path"]))) == topk["path"]).all()
    # receptive fields on paper: conv3x3 pad 1 -> rows y-1..y+1; then pool 2 and conv 3x3 pad 1
    # -> rows 2y-3..2y+4 (clipped to 0..31)
    first = topk[topk["layer"] == "0"]
    assert (first["x0"] == (first["x"] - 1).clip(0)).all()
    assert (first["y1"] == (first["y"] + 1).clip(upper=31)).all()
    second = topk[topk["layer"] == "3"]
    assert (second["y0"] == (2 * second["y"] - 3).clip(0)).all()
    assert (second["x1"] == (2 * second["x"] + 4).clip(upper=31)).all()

    skipped = result.skipped
    assert [row["path"] for row in skipped] == [str(root / "cats" / "broken.png")]
    assert "not an image" in skipped[0]["reason"]
    assert len(images) + len(skipped) == len(good) + 1  # nothing else is missing


@pytest.mark.filterwarnings("ignore:Grad-CAM map is all zero")
def test_predictions_classes_and_cams(folder, tmp_path, one_thread):
    root, good = folder
    model = dead_channel_model()
    result = scan(model, root, tmp_path / "scan", top_k=2)
    paths = sorted(str(p) for p in good)
    probs = model.probabilities(paths).numpy()
    images = result.images
    np.testing.assert_array_equal(images["prediction"], probs.argmax(axis=1))
    np.testing.assert_allclose(images["score"], probs.max(axis=1), rtol=1e-5)
    labels = np.array([0 if "/cats/" in p else 1 for p in paths])
    np.testing.assert_array_equal(images["label"], labels)

    confusion = result.confusion
    assert confusion.values.sum() == len(paths)
    assert confusion.loc["cats"].sum() == (labels == 0).sum()
    assert result.accuracy == pytest.approx((probs.argmax(axis=1) == labels).mean())

    for index, name in enumerate(("cats", "dogs")):  # one fused pass = model.cam, image by image
        members = [p for p, lab in zip(paths, labels) if lab == index]
        expected = model.cam(members, target=index).heatmap.mean(axis=0)
        np.testing.assert_allclose(result.class_mean_cam(name), expected, atol=1e-5)
    cats = [p for p, lab in zip(paths, labels) if lab == 0]

    mistakes = result.mistakes()
    wrong = [p for p, lab, pred in zip(paths, labels, probs.argmax(axis=1)) if lab != pred]
    assert [m["path"] for m in mistakes] == wrong
    if mistakes:
        m = mistakes[0]
        cam = model.cam(m["path"], target=int(m["prediction"])).heatmap[0]
        np.testing.assert_allclose(m["cam_predicted"], cam, atol=1 / 255 + 1e-6)

    # class selectivity: each channel's mean activation over each class's images
    acts = model.activations(cats, layers="3")["3"].mean(axis=(1, 2)).mean(axis=0)
    sel = result.selectivity
    got = sel[(sel["layer"] == "3") & (sel["class"] == 0)].sort_values("channel")["mean"]
    np.testing.assert_allclose(got, acts, rtol=1e-5, atol=1e-6)


def test_any_split_gives_the_same_tables(folder, tmp_path, one_thread):
    root, _ = folder
    model = dead_channel_model()
    a = scan(model, root, tmp_path / "a", top_k=5, cam=False, rank="mean", shard_size=1000)
    b = scan(model, root, tmp_path / "b", top_k=5, cam=False, rank="mean", shard_size=7,
             batch_size=3)
    c = scan(model, root, tmp_path / "c", top_k=5, cam=False, rank="mean", shard_size=1000)
    pd.testing.assert_frame_equal(a.topk, b.topk, check_exact=False, rtol=1e-6)
    pd.testing.assert_frame_equal(a.channels, b.channels, check_exact=False, rtol=1e-6)
    for name in ("topk", "channels", "images", "classes", "selectivity"):  # the same run twice
        pd.testing.assert_frame_equal(getattr(a, name), getattr(c, name), check_exact=True)


@pytest.mark.filterwarnings("ignore:Grad-CAM map is all zero")
def test_a_batch_in_host_chunks_gives_one_pass_tables_and_reserves_the_recorded_maps(
        folder, tmp_path, monkeypatch, one_thread):
    from convlens.scan import aggregate

    root, _ = folder
    model = dead_channel_model()
    whole = scan(model, root, tmp_path / "whole", top_k=5, batch_size=16)
    asked = []

    def chunk(batch, largest, device, limit=None, kept_bytes=0):  # as glibc's heap would cut
        asked.append((batch, largest, kept_bytes))
        return min(batch, 3)

    monkeypatch.setattr(aggregate, "host_chunk", chunk)
    cut = scan(model, root, tmp_path / "cut", top_k=5, batch_size=16)
    # every pass keeps the outputs of both convs and of the CAM layer (the ReLU "4") of each
    # image: 8 x 32 x 32 + 16 x 16 x 16 + 16 x 16 x 16 floats
    kept = (8 * 32 * 32 + 2 * 16 * 16 * 16) * 4
    assert {(largest, k) for _, largest, k in asked} == {(8 * 32 * 32 * 4, kept)}
    # 104 images: 6 batches of 16 and one of 8, each run in chunks of 3 (the last 1 or 2)
    assert {b for b, _, _ in asked} == {16, 8, 3, 2, 1}
    # the same images in the same order; values as a pass over fewer images computes them
    for name in ("topk", "images", "classes", "channels", "selectivity"):
        pd.testing.assert_frame_equal(getattr(whole, name), getattr(cut, name),
                                      check_exact=False, rtol=1e-5, atol=1e-6)
    assert np.allclose(whole.class_mean_cam("cats"), cut.class_mean_cam("cats"), atol=1e-6)


def test_a_plan_run_again_after_an_interruption_loses_nothing(folder, tmp_path, monkeypatch,
                                                              one_thread):
    """The scanner rejects images that cannot beat the top-k it has seen; a run interrupted
    before a shard was committed, run again, must not reject what only the lost shard held."""
    from convlens.scan import engine

    root, _ = folder
    model = dead_channel_model()
    whole = scan(model, root, tmp_path / "whole", top_k=3, cam=False, shard_size=40)
    plan = engine.plan_scan(model, root, tmp_path / "again", top_k=3, cam=False, shard_size=40)
    save = engine.save_shard

    def fail_on_the_second(out, index, part):
        if index == 1:
            raise KeyboardInterrupt
        save(out, index, part)

    monkeypatch.setattr(engine, "save_shard", fail_on_the_second)
    with pytest.raises(KeyboardInterrupt):
        engine.execute(plan)
    monkeypatch.setattr(engine, "save_shard", save)
    again = engine.execute(plan)
    # this run scanned shards 1 and 2: 40 + 25 files, one of them corrupt; its rate counts them
    timings = again.manifest["timings"]  # compute_s rounded to the ms, the rate to 0.01
    seconds = timings["compute_s"]
    assert 64 / (seconds + 5e-4) - 0.01 <= timings["images_per_s"] <= 64 / (seconds - 5e-4) + 0.01
    for name in ("topk", "channels", "images"):
        pd.testing.assert_frame_equal(getattr(whole, name), getattr(again, name),
                                      check_exact=False, rtol=1e-6)


def test_shards_are_merged_in_shard_order_whatever_order_they_come_in(tmp_path, monkeypatch):
    """Shards from memory (this run's, in any order, as Ray's actors finish) and from files
    (committed by an earlier run) are merged in shard order: moments are added in one order."""
    from convlens.scan import engine
    from convlens.scan.aggregate import LayerPartial, Partial

    def part(index: int) -> Partial:
        return Partial({"conv": LayerPartial.empty(1, 1)}, image_id=np.array([index]))

    loaded = []
    monkeypatch.setattr(engine, "load_shard",
                        lambda out, index: loaded.append(index) or part(index))
    merging = engine._InOrder(tmp_path, {0, 2, 5})
    for index in (3, 1, 4):
        merging.add(index, part(index))
    np.testing.assert_array_equal(merging.result().image_id, [0, 1, 2, 3, 4, 5])
    assert loaded == [0, 2, 5] and merging.merged_shards == {0, 1, 2, 3, 4, 5}
    gap = engine._InOrder(tmp_path, {1})  # shard 0 missing: the rest still in order
    gap.add(3, part(3))
    np.testing.assert_array_equal(gap.result().image_id, [1, 3])


def test_shard_arrays_round_trip_and_the_earlier_per_layer_format_still_reads():
    from convlens.scan.aggregate import _FIELDS, LayerPartial, Partial

    rng = np.random.default_rng(0)

    def layer(channels: int) -> LayerPartial:
        return LayerPartial(4, *(rng.integers(0, 9, (3, channels) if key.startswith("top")
                                              else (2, channels) if key == "class_sum"
                                              else channels) for key in _FIELDS))

    part = Partial({"a": layer(2), "b": layer(3)}, image_id=np.arange(4),
                   classes=np.array([0, 1]), skipped=[(9, "x.jpg", "not an image")])
    arrays = part.to_arrays()
    assert len([k for k in arrays if k.startswith("layers.")]) == 3 + len(_FIELDS)
    earlier = {k: v for k, v in arrays.items() if not k.startswith("layers.")}
    for i, (name, lp) in enumerate(part.layers.items()):
        earlier |= {f"L{i}.name": np.array(name), f"L{i}.count": np.array(lp.count)}
        earlier |= {f"L{i}.{key}": getattr(lp, key) for key in _FIELDS}
    for data in (arrays, earlier):
        back = Partial.from_arrays(data)
        assert list(back.layers) == ["a", "b"] and back.skipped == part.skipped
        for name, lp in part.layers.items():
            assert back.layers[name].count == 4
            for key in _FIELDS:
                np.testing.assert_array_equal(getattr(back.layers[name], key), getattr(lp, key))


def test_a_layer_replaced_after_a_split_is_the_one_merged_and_saved():
    """A merge takes split layers back whole (no re-join) only while they are the split's own."""
    from convlens.scan.aggregate import NO_IMAGE, LayerPartial, Partial

    def part() -> Partial:
        return Partial({"a": LayerPartial.empty(2, 1), "b": LayerPartial.empty(3, 1)})

    split = part().merge(part())
    new = LayerPartial.empty(2, 1)
    new.top_value[0], new.top_id[0] = 7.0, 5
    split.layers["a"] = new
    for back in (split.merge(part()), Partial.from_arrays(split.to_arrays())):
        np.testing.assert_array_equal(back.layers["a"].top_id[0], [5, 5])
        np.testing.assert_array_equal(back.layers["b"].top_id[0], [NO_IMAGE] * 3)


def test_dataloader_source_equals_the_files(folder, tmp_path, one_thread):
    root, good = folder
    paths = sorted(str(p) for p in good)
    model = dead_channel_model()
    pixels = torch.from_numpy(cl.load_images(paths)).permute(0, 3, 1, 2)  # (N, 3, H, W) 0..255
    labels = torch.tensor([0 if "/cats/" in p else 1 for p in paths])
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(pixels, labels), batch_size=10
    )
    from_loader = scan(model, loader, tmp_path / "loader", top_k=3, shard_size=25)
    from_files = scan(model, root, tmp_path / "files", top_k=3, shard_size=25, cam=False)
    columns = ["layer", "channel", "firing_rate", "mean", "std", "max", "dead"]
    pd.testing.assert_frame_equal(
        from_loader.channels[columns], from_files.channels[columns], check_exact=False, rtol=1e-5
    )
    columns = ["layer", "channel", "rank", "value", "y", "x", "x0", "y1"]
    pd.testing.assert_frame_equal(
        from_loader.topk[columns], from_files.topk[columns], check_exact=False, rtol=1e-5
    )
    by_loader_id = [paths[i] for i in from_loader.topk["image"]]  # ids: positions in the stream
    assert by_loader_id == from_files.topk["path"].tolist()
    assert from_loader.class_names == ["cats", "dogs"]  # the model's class names
    np.testing.assert_array_equal(from_loader.images["label"], labels.numpy())


def test_receptive_fields_match_the_gradient_support():
    """With positive weights every path carries gradient, so the union of the supports over
    random images is the whole receptive field; the geometric boxes must equal it."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(4, 4, 5, stride=2, padding=2), torch.nn.ReLU(),
        torch.nn.Conv2d(4, 4, 3, dilation=2), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
    )
    with torch.no_grad():
        for p in net.parameters():
            p.abs_()
    model = cl.load_model(net, input_size=(32, 32), preprocess="unit")
    layers = model.resolve("conv")
    fields = chain_fields(model, layers)
    for info in layers:
        geometry = fields[info.name]
        assert geometry is not None
        _, h, w, _ = info.output_shape
        for y, x in {(0, 0), (h - 1, w - 1), (h // 2, w // 3), (1, w - 2)}:
            expected = gradient_box(model, info, y, x, trials=16)
            assert field_box(geometry, y, x, (32, 32)) == expected, (info.name, y, x)


def test_bad_arguments_fail_before_any_work(folder, tmp_path):
    root, _ = folder
    model = dead_channel_model()
    for kwargs, words in (
        ({"top_k": 0}, "top_k"), ({"rank": "median"}, "rank"), ({"layers": "linear"}, "spatial"),
        ({"batch_size": -1}, "batch_size"),
    ):
        with pytest.raises(ScanError, match=words):
            scan(model, root, tmp_path / "x", **kwargs)
    with pytest.raises(ScanError, match="no such folder"):
        scan(model, tmp_path / "nowhere", tmp_path / "x")
    assert not (tmp_path / "x").exists()
    done = scan(model, root, tmp_path / "done", top_k=1, cam=False)
    with pytest.raises(ScanError, match="already holds a scan"):
        scan(model, root, done.folder, top_k=1, cam=False)
    with pytest.raises(ScanError, match="top_k changed"):
        scan(model, root, done.folder, top_k=2, cam=False, resume=True)


def tiny_seed_keras():
    """The seed's convnet shape (Rescaling, Conv2D relu, MaxPooling2D, ..., Dense sigmoid), tiny."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(0)
    inputs = keras.Input(shape=(32, 32, 3))
    x = layers.RandomFlip("horizontal")(inputs)
    x = layers.Rescaling(1.0 / 255)(x)
    x = layers.Conv2D(4, 3, activation="relu")(x)
    x = layers.MaxPooling2D(2)(x)
    x = layers.Conv2D(6, 3, activation="relu")(x)
    x = layers.Flatten()(x)
    outputs = layers.Dense(1, activation="sigmoid")(x)
    return keras.Model(inputs, outputs)


@pytest.mark.filterwarnings("ignore:Grad-CAM map is all zero")
def test_seed_style_keras_model(folder, tmp_path, one_thread):
    root, good = folder
    model = cl.load_model(tiny_seed_keras())
    assert model.output == "sigmoid"
    result = scan(model, root, tmp_path / "scan", top_k=3, shard_size=50, batch_size=20)
    paths = sorted(str(p) for p in good)
    stats, top = brute_force(model, paths, result.layers, k=3)
    pd.testing.assert_frame_equal(
        result.channels[list(stats.columns)], stats, check_exact=False, rtol=1e-5, atol=1e-6
    )
    # after a ReLU, several images can share a channel's max (0): ties go to the lower image id
    pd.testing.assert_frame_equal(
        result.topk[list(top.columns)], top, check_exact=False, rtol=1e-5, atol=1e-6
    )
    probs = model.probabilities(paths).numpy()
    np.testing.assert_array_equal(result.images["prediction"], probs.argmax(axis=1))
    # "valid" 3x3 conv: rows y..y+2; pool 2: 2p..2p+3; "valid" 3x3 conv: 2y..2(y+2)+3
    topk = result.topk
    second = topk[topk["layer"] == result.layers[1]]
    assert (second["y0"] == 2 * second["y"]).all()
    assert (second["y1"] == 2 * second["y"] + 7).all()
    assert result.class_mean_cam("dogs").shape == (32, 32)


def test_receptive_fields_of_the_default_model(default_model, one_thread):
    """EfficientNet-Lite0: TF-style 'same' padding, squeeze-excitation and residual additions;
    the geometry of every conv layer is found, and equals the gradient's support."""
    layers = default_model.resolve("conv")
    fields = chain_fields(default_model, layers)
    assert all(fields[info.name] is not None for info in layers)
    # the autograd graph (its padding, convolution and addition nodes) finds the same geometry
    assert graph_fields(default_model, layers) == fields
    for info in (layers[0], layers[3], layers[10], layers[30]):
        _, h, w, _ = info.output_shape
        y, x = h // 2, w // 3
        expected = gradient_box(default_model, info, y, x, trials=2)
        assert field_box(fields[info.name], y, x, (224, 224)) == expected, info.name


class _Branching(torch.nn.Module):
    """A residual block with a strided 1x1 shortcut, as in a ResNet: the chain breaks there."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.conv1 = torch.nn.Conv2d(4, 4, 3, stride=2, padding=1)
        self.conv2 = torch.nn.Conv2d(4, 4, 3, padding=1)
        self.shortcut = torch.nn.Conv2d(4, 4, 1, stride=2)
        self.after = torch.nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem(x))
        y = self.conv2(torch.relu(self.conv1(x))) + self.shortcut(x)
        return self.after(torch.relu(y)).mean(dim=(2, 3))


def _positive(net: torch.nn.Module) -> torch.nn.Module:
    """Positive weights (and zero running means): with positive pixels and ReLUs, every path
    carries gradient, so the gradient's support over random images is the whole field."""
    with torch.no_grad():
        for p in net.parameters():
            p.abs_()
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.zero_()
    return net.eval()


def test_receptive_fields_where_the_net_branches(monkeypatch):
    from convlens.scan.receptive import boxes, receptive_fields

    torch.manual_seed(0)
    model = cl.load_model(_positive(_Branching()), input_size=(32, 32), preprocess="unit")
    after = model.layer("after")
    assert chain_fields(model, [after])["after"] is None  # the shortcut broke the chain
    # on paper: stem 3x3 → (1, -1, 3); conv1 3x3/2 → (2, -2, 5); conv2 3x3 → (2, -4, 9); the
    # shortcut 1x1/2 on the stem → (2, -1, 3); their sum: the union (2, -4, 9); after → (2, -6, 13)
    assert graph_fields(model, [after])["after"] == (Axis(2, -6, 13), Axis(2, -6, 13))
    expected = {(y, x): gradient_box(model, after, y, x, trials=4)
                for y, x in ((8, 8), (5, 9), (10, 4), (0, 15))}
    monkeypatch.setattr(receptive, "gradient_box", None)  # the graph answers: no gradient asked
    fields = receptive_fields(model, [after])
    got = boxes(fields, {"after": np.array(list(expected))}, (32, 32))["after"]
    assert [tuple(b) for b in got.tolist()] == list(expected.values())


@pytest.mark.parametrize("name", ["ResNet bottlenecks", "DenseNet blocks"])
def test_receptive_fields_of_resnet_and_densenet_from_the_graph(name):
    """Shortcuts, max and average pooling, channel concatenations: every conv layer's field is
    read from the autograd graph and equals the gradient's support."""
    torch.manual_seed(0)
    model = cl.load_model(_positive(HAND_BUILT[name][0]()), input_size=(96, 96),
                          preprocess="unit")
    layers = model.resolve("conv")
    fields, chain = graph_fields(model, layers), chain_fields(model, layers)
    assert all(fields[info.name] is not None for info in layers)
    if name == "ResNet bottlenecks":
        assert any(chain[info.name] is None for info in layers)  # the strided shortcut
        # on paper: conv1 7x7/2 → (2, -3, 7); max pool 3/2 → (4, -5, 11); the shortcut's 1x1
        # on the block's input → (4, -5, 11). The chain, which keeps no branches, reads it after
        # the block's 3x3 (the 1x1 keeps the size): too large
        shortcut = "layer1.0.downsample.0"
        assert fields[shortcut] == (Axis(4, -5, 11), Axis(4, -5, 11))
        assert chain[shortcut] == (Axis(4, -9, 19), Axis(4, -9, 19))
    for info in layers:
        # inside the image (at its border, a padded max pooling never picks the border pixels'
        # smaller sums, so the gradient misses them there)
        _, h, w, _ = info.output_shape
        for y, x in {(h // 2, w // 2), (h // 2, w // 3), (h // 3, w // 2)}:
            expected = gradient_box(model, info, y, x, trials=16)
            assert field_box(fields[info.name], y, x, (96, 96)) == expected, (info.name, y, x)


class _Squeezed(torch.nn.Module):
    """A 3x3 conv, squeeze-excitation (a global mean multiplied back), a 3x3 conv; and a branch
    off the first conv that halves its map (nearest: an operation the graph walk does not know)."""

    def __init__(self) -> None:
        super().__init__()
        self.first = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.squeeze = torch.nn.Conv2d(4, 4, 1)
        self.second = torch.nn.Conv2d(4, 4, 3, padding=1)
        self.resized = torch.nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.first(x))
        z = self.resized(torch.nn.functional.interpolate(x, scale_factor=0.5))
        x = x * torch.sigmoid(self.squeeze(x.mean(dim=(2, 3), keepdim=True)))
        y = self.second(x)
        return y.mean(dim=(2, 3)) + z.mean(dim=(2, 3))


def test_receptive_fields_past_squeeze_excitation_and_an_unknown_operation():
    from convlens.scan.receptive import boxes, receptive_fields

    torch.manual_seed(0)
    model = cl.load_model(_positive(_Squeezed()), input_size=(16, 16), preprocess="unit")
    layers = model.resolve(["squeeze", "second", "resized"])
    fields = graph_fields(model, layers)
    assert fields["squeeze"] == (Axis(0, 0, 16), Axis(0, 0, 16))  # a global vector: everything
    assert fields["second"] == (Axis(1, -2, 5), Axis(1, -2, 5))  # two 3x3: the SE adds nothing
    assert fields["resized"] is None  # the resize: not known to the graph walk
    resized = model.layer("resized")
    fields = receptive_fields(model, [resized])
    got = boxes(fields, {"resized": np.array([[3, 5]])}, (16, 16))["resized"]
    assert tuple(got[0]) == gradient_box(model, resized, 3, 5)  # the gradient's answer


@pytest.mark.parametrize("channels_last", [False, True])
def test_a_map_with_tied_maxima_is_placed_at_the_first(tmp_path, channels_last):
    """Channel 0 is constant (every position ties): its top-k position is the first, (0, 0),
    as argmax gives it, in either memory format; channel 1 peaks where the image does."""
    conv = torch.nn.Conv2d(3, 2, 1)
    with torch.no_grad():
        conv.weight.zero_()
        conv.bias.copy_(torch.tensor([0.5, 0.0]))
        conv.weight[1, 0, 0, 0] = 1.0  # channel 1: the red channel
    net = torch.nn.Sequential(conv, torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                              torch.nn.Linear(2, 2)).eval()
    model = cl.load_model(net, input_size=(8, 8), preprocess="unit",
                          channels_last=channels_last)
    images = np.zeros((3, 8, 8, 3), np.float32)
    for i, (y, x) in enumerate([(2, 5), (7, 1), (4, 4)]):
        images[i, y, x, 0] = 100.0 * (i + 1)
        images[i, 6, 6, 0] = 100.0 * (i + 1)  # a tie: the first in row-major order wins
    result = scan(model, [(torch.from_numpy(images), None)], tmp_path / "s", layers=["0"],
                  top_k=3, cam=False)
    top = result.topk.set_index(["channel", "rank"])
    assert top.loc[0, ["y", "x"]].values.tolist() == [[0, 0]] * 3
    # image 1's (7, 1) comes after (6, 6); the others' peaks come first
    assert top.loc[1, ["image", "y", "x"]].values.tolist() == [[2, 4, 4], [1, 6, 6], [0, 2, 5]]


def test_a_graph_node_without_its_saved_fields_is_an_unknown_operation():
    """(Another torch may name or save a node's fields differently: then the chain or the
    gradient answers, the scan does not fail.)"""

    class Node:
        next_functions = ()

        def name(self) -> str:
            return "ConvolutionBackward0"

    class Leaf(Node):
        variable = None

        def name(self) -> str:
            return "torch::autograd::AccumulateGrad"

    start = torch.zeros(1)
    leaf = Leaf()
    leaf.variable = start
    node = Node()
    node.next_functions = ((leaf, 0),)
    assert receptive._walk(leaf, start, {}) == (Axis(), Axis())
    assert receptive._walk(node, start, {}) == receptive._UNKNOWN
