"""Model files never run code unless trusted; load_model options, outputs and inputs are checked."""

from __future__ import annotations

import json
import os
import zipfile

import numpy as np
import pytest
import torch
from torch import nn

import convlens as cl
from convlens.errors import ModelError

from .conftest import tiny_convnet

MARK = "pwned.txt"


class EvilModule(nn.Module):
    """Unpickling it writes a file (what a malicious checkpoint does)."""

    def __reduce_ex__(self, protocol):
        return (open, (MARK, "w"))


class EvilObject:
    def __reduce__(self):
        return (open, (MARK, "w"))


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("payload", [EvilModule(), {"state": EvilObject()}], ids=["module", "dict"])
def test_a_malicious_pickle_runs_no_code(in_tmp, payload):
    torch.save(payload, "evil.pt")
    with pytest.raises(ModelError, match=r"trust=True.*--trust-model-file") as err:
        cl.load_model("evil.pt")
    assert "\n" not in str(err.value)
    assert not (in_tmp / MARK).exists()
    from convlens.cli import main

    assert main(["layers", "--model", "evil.pt"]) == 2
    assert not (in_tmp / MARK).exists()


def test_a_pickled_module_loads_only_when_trusted(in_tmp):
    net = tiny_convnet()
    torch.save(net, "full.pt")
    with pytest.raises(ModelError, match="trust=True"):
        cl.load_model("full.pt")
    model = cl.load_model("full.pt", trust=True, input_size=(16, 16))
    x = np.random.default_rng(0).uniform(0, 255, (16, 16, 3)).astype(np.float32)
    expected = cl.load_model(net, input_size=(16, 16)).activations(x)
    np.testing.assert_allclose(model.activations(x)["0"], expected["0"], atol=1e-6)
    assert model.name == "full"


def test_a_state_dict_says_how_to_use_it(in_tmp):
    torch.save(tiny_convnet().state_dict(), "weights.pth")
    with pytest.raises(ModelError, match=r"load_state_dict.*pass the module"):
        cl.load_model("weights.pth")
    (in_tmp / "junk.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(ModelError, match="corrupt"):
        cl.load_model("junk.pt")


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit: still a safe format
def test_torchscript_loads_by_default(in_tmp):
    net = tiny_convnet()
    torch.jit.save(torch.jit.script(net), "scripted.pt")
    model = cl.load_model("scripted.pt", input_size=(16, 16))
    x = torch.rand(2, 16, 16, 3) * 255
    np.testing.assert_allclose(
        model.logits(x).numpy(), cl.load_model(net, input_size=(16, 16)).logits(x).numpy(),
        atol=1e-6,
    )


def _export(net: nn.Module, path: str, batch: int = 1) -> None:
    program = torch.export.export(net, (torch.zeros(batch, 3, 16, 16),))
    torch.export.save(program, path)


def test_an_exported_program_works_as_a_module_with_hooks(in_tmp):
    net = tiny_convnet()
    _export(net, "net.pt2")
    model = cl.load_model("net.pt2", preprocess="unit")
    plain = cl.load_model(net, input_size=(16, 16), preprocess="unit")
    assert model.input_size == (16, 16)  # from the exported example
    assert [(i.name, i.kind) for i in model.layers()] == [(i.name, i.kind) for i in plain.layers()]
    x = np.random.default_rng(1).uniform(0, 255, (16, 16, 3)).astype(np.float32)
    names = ["0", "1", "2", "3", "4", "5"]
    acts, expected = model.activations(x, names), plain.activations(x, names)
    assert list(acts) == list(expected) == names
    for name in acts:
        np.testing.assert_allclose(acts[name], expected[name], atol=1e-5)
    np.testing.assert_allclose(
        model.cam(x).heatmap, plain.cam(x).heatmap, atol=1e-4
    )
    with pytest.raises(ModelError, match="dynamic_shapes"):
        model.logits(np.stack([x, x]))


def test_an_exported_program_with_pickled_objects_is_refused(in_tmp):
    _export(tiny_convnet(), "net.pt2")
    with zipfile.ZipFile("net.pt2") as src, zipfile.ZipFile("evil.pt2", "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename.endswith("_constants_config.json"):
                config = json.loads(data)
                config["config"]["obj"] = {"path_name": "opaque_obj_0"}
                data = json.dumps(config).encode()
            dst.writestr(item, data)
    with pytest.raises(ModelError, match=r"pickled Python objects.*trust=True"):
        cl.load_model("evil.pt2")


def test_keras_lambda_layers_need_trust_and_corrupt_files_say_so(in_tmp):
    import keras

    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Lambda(lambda t: t * 2.0)(inputs)
    x = keras.layers.Conv2D(2, 3)(x)
    outputs = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(x))
    keras.Model(inputs, outputs).save("lambda.keras")
    with pytest.raises(ModelError, match=r"Lambda.*trust=True.*--trust-model-file"):
        cl.load_model("lambda.keras")
    assert cl.load_model("lambda.keras", trust=True).input_size == (8, 8)

    (in_tmp / "cut.keras").write_bytes((in_tmp / "lambda.keras").read_bytes()[:300])
    with pytest.raises(ModelError, match="corrupt") as err:
        cl.load_model("cut.keras")
    assert "not found" not in str(err.value)


def test_options_given_with_a_model_are_applied_or_refused(tiny_model):
    renamed = cl.load_model(tiny_model, class_names=["a", "b", "c"], input_size=(16, 16))
    assert renamed is not tiny_model and renamed.network is tiny_model.network
    assert renamed.input_size == (16, 16) and tiny_model.input_size == (32, 32)
    assert renamed.class_names == ["a", "b", "c"] and renamed.preprocess is tiny_model.preprocess
    assert renamed.predict(np.zeros((16, 16, 3), np.float32))[0][0].name in "abc"
    assert cl.load_model(tiny_model) is tiny_model
    with pytest.raises(ModelError, match=r"unknown option.*'colour'"):
        cl.load_model(tiny_model, colour="red")
    with pytest.raises(ModelError, match="unknown option"):
        cl.load_model(tiny_convnet(), input_shape=(8, 8))
    default = cl.load_model(None, name="lite")
    assert default.name == "lite" and default.network is cl.load_model().network


class DictNet(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        features = self.pool(torch.relu(self.conv(x))).flatten(1)
        return {"scores": self.head(features), "features": features}


def test_a_dict_output_needs_output_and_then_works():
    x = np.random.default_rng(2).uniform(0, 255, (8, 8, 3)).astype(np.float32)
    model = cl.load_model(DictNet(), input_size=(8, 8))
    assert list(model.activations(x)) == ["conv"]  # activations need no output
    with pytest.raises(ModelError, match=r"dict with keys 'scores', 'features'.*output="):
        model.predict(x)
    with pytest.raises(ModelError, match="output="):
        model.cam(x)
    by_key = cl.load_model(DictNet(), input_size=(8, 8), output="scores")
    by_function = cl.load_model(DictNet(), input_size=(8, 8), output=lambda out: out["scores"])
    with torch.no_grad():
        expected = DictNet()(by_key.inputs(x))["scores"].numpy()
    for picked in (by_key, by_function):
        np.testing.assert_allclose(picked.logits(x).numpy(), expected, atol=1e-6)
        assert picked.cam(x).heatmap.shape == (1, 8, 8)
    with pytest.raises(ModelError, match="does not pick anything"):
        cl.load_model(DictNet(), input_size=(8, 8), output="nope").predict(x)
    np.testing.assert_allclose(by_key.copy().logits(x).numpy(), expected, atol=1e-6)
    relabelled = cl.load_model(by_key, class_names=["a", "b", "c"])
    assert relabelled.predict(x, top=1)[0][0].name in "abc"


class TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, image, mask):
        return self.conv(image) * mask


def test_a_two_input_model_is_named_with_its_inputs():
    with pytest.raises(ModelError, match=r"2 inputs \(image, mask\).*none applies") as err:
        cl.load_model(TwoInputs())
    assert "input_size" not in str(err.value)


def test_a_two_input_keras_model_is_named_with_its_inputs():
    import keras

    image, extra = keras.Input((8, 8, 3), name="image"), keras.Input((3,), name="extra")
    joined = keras.layers.Dense(2)(keras.layers.Concatenate()(
        [keras.layers.GlobalAveragePooling2D()(image), extra]
    ))
    named = r"2 inputs \(image \(None, 8, 8, 3\), extra \(None, 3\)\)"
    with pytest.raises(ModelError, match=named):
        cl.load_model(keras.Model([image, extra], joined))


def test_the_trust_switch_is_on_every_model_command():
    from convlens.cli import COMMANDS, build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name in COMMANDS:
        if name in sub.choices and any(
            "--model" in a.option_strings for a in sub.choices[name]._actions
        ):
            assert any(
                "--trust-model-file" in a.option_strings for a in sub.choices[name]._actions
            ), name


def test_the_trust_flag_loads_a_trusted_file(in_tmp, capsys):
    from convlens.cli import main

    torch.save(tiny_convnet(), "full.pt")
    assert main(["layers", "--model", "full.pt", "--input-size", "16"]) == 2
    assert "--trust-model-file" in capsys.readouterr().err
    assert main(["layers", "--model", "full.pt", "--input-size", "16", "--trust-model-file"]) == 0
    assert os.path.exists("full.pt")
