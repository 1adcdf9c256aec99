"""Model files: loaded so that they cannot run code unless the user trusts them.

Torch files are read in order of safety, whatever their suffix:

- TorchScript archives (``torch.jit.save``): ``torch.jit.load``, no Python code runs.
- ``torch.export`` programs (``.pt2``, ``torch.export.save``): ``torch.export.load`` with every
  inner ``torch.load`` forced to ``weights_only=True``; archives holding pickled Python objects
  are refused. The program is unflattened back into its module tree, so hooks work on each layer.
- Anything else saved with ``torch.save`` is read with ``torch.load(weights_only=True)``: tensors
  and containers of them (a state dict) load; a pickled whole module is refused, because
  unpickling it can run any code the file holds. ``trust=True`` (``--trust-model-file``) loads it.

Keras files are loaded with Keras's ``safe_mode`` on (no ``Lambda`` bytecode) unless trusted.
"""

from __future__ import annotations

import json
import os
import pickle
import sys
import warnings
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from ..errors import ModelError

TORCH_SUFFIXES = (".pt", ".pth", ".ts", ".pt2", ".bin", ".ckpt")
KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")
#: What the refusal and the help text tell the user to pass.
TRUST_HINT = "load_model(path, trust=True) or --trust-model-file on the command line"


def read_model_file(path: Path, *, trust: bool = False) -> tuple[str, Any]:
    """``("torch", nn.Module)`` or ``("keras", keras.Model)`` read from ``path``.

    Raises :class:`ModelError` for a missing, corrupt or unsupported file, for a state dict
    (which needs its architecture) and, unless ``trust``, for files whose loading can run code.
    """
    if not path.exists():
        raise ModelError(f"model file not found: {path}")
    if path.is_dir():
        raise ModelError(f"{path} is a folder; pass a model file (.keras, .h5, .pt, .pt2)")
    suffix = path.suffix.lower()
    if suffix in KERAS_SUFFIXES:
        return "keras", _read_keras(path, trust)
    if suffix in TORCH_SUFFIXES:
        return "torch", _read_torch(path, trust)
    raise ModelError(
        f"unknown model file type {suffix!r} ({path}); use .keras, .h5, .pt, .pth or .pt2"
    )


# -- torch -------------------------------------------------------------------------------------
def _zip_names(path: Path) -> list[str]:
    if not zipfile.is_zipfile(path):
        return []
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return []


def _read_torch(path: Path, trust: bool) -> torch.nn.Module:
    names = _zip_names(path)
    if any(n.endswith("/archive_format") for n in names) or path.suffix.lower() == ".pt2":
        return _read_exported(path, names, trust)
    if any("/code/" in n for n in names) and any(n.endswith("/constants.pkl") for n in names):
        return _read_torchscript(path)
    return _read_pickle(path, trust)


def _read_torchscript(path: Path) -> torch.nn.Module:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return torch.jit.load(str(path), map_location="cpu")
    except Exception as err:
        raise ModelError(
            f"{path} is a corrupt TorchScript archive ({type(err).__name__}: {_first_line(err)}); "
            "save it again with torch.jit.save"
        ) from None


def _read_pickle(path: Path, trust: bool) -> torch.nn.Module:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "GLOBAL" not in str(err):  # not a pickled object refused, but bad bytes
            raise ModelError(
                f"{path} is not a torch file, or it is corrupt ({_first_line(err)})"
            ) from None
        if not trust:
            raise ModelError(
                f"{path} is a pickled Python object (a whole model?), and unpickling it can run "
                f"any code the file holds; if you trust the file, pass {TRUST_HINT}. Safer: "
                "save a TorchScript (torch.jit.save), a torch.export .pt2 or a state_dict"
            ) from None
        obj = _load_trusted(path)
    except Exception as err:
        raise ModelError(
            f"{path} is not a torch file, or it is corrupt ({type(err).__name__}: "
            f"{_first_line(err)})"
        ) from None
    if isinstance(obj, dict) or (isinstance(obj, (list, tuple)) and not trust):
        raise ModelError(
            f"{path} holds weights only (a state_dict), not a model: build the network in Python, "
            "call network.load_state_dict(torch.load(path, weights_only=True)), and pass the "
            "module to load_model"
        )
    if not isinstance(obj, torch.nn.Module):
        raise ModelError(f"{path} holds a {type(obj).__name__}, not a torch module")
    return obj


def _load_trusted(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:
        raise ModelError(
            f"could not unpickle {path} ({type(err).__name__}: {_first_line(err)}); the classes "
            "it refers to must be importable here"
        ) from None


@contextmanager
def _weights_only_everywhere() -> Iterator[None]:
    """Every ``torch.load`` inside the block is ``weights_only=True``, whatever its caller says."""
    key = "TORCH_FORCE_WEIGHTS_ONLY_LOAD"
    saved = os.environ.get(key)
    os.environ[key] = "1"
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = saved


def _pickled_payloads(path: Path, names: list[str]) -> list[str]:
    """Entries of a .pt2 archive that only ``pickle.loads`` (arbitrary code) could read."""
    found = []
    with zipfile.ZipFile(path) as archive:
        for name in names:
            if not name.endswith(("_weights_config.json", "_constants_config.json")):
                continue
            try:
                config = json.loads(archive.read(name)).get("config", {})
            except (ValueError, AttributeError):
                continue
            for key, meta in config.items():
                if not isinstance(meta, dict):
                    continue
                if meta.get("use_pickle") or str(meta.get("path_name", "")).startswith(
                    "opaque_obj_"
                ):
                    found.append(key)
    return found


def _read_exported(path: Path, names: list[str], trust: bool) -> torch.nn.Module:
    if not names:
        raise ModelError(f"{path} is not a torch.export archive (not a zip file), or it is corrupt")
    pickled = _pickled_payloads(path, names)
    if pickled and not trust:
        raise ModelError(
            f"{path} holds pickled Python objects ({', '.join(pickled[:3])}), and unpickling "
            f"them can run any code the file holds; if you trust the file, pass {TRUST_HINT}"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if trust:
                program = torch.export.load(str(path))
            else:
                with _weights_only_everywhere():
                    program = torch.export.load(str(path))
            return ExportedModule(program)
    except ModelError:
        raise
    except pickle.UnpicklingError:
        raise ModelError(
            f"{path} holds pickled Python objects, and unpickling them can run any code the "
            f"file holds; if you trust the file, pass {TRUST_HINT}"
        ) from None
    except Exception as err:
        raise ModelError(
            f"could not load the torch.export program {path} ({type(err).__name__}: "
            f"{_first_line(err)}); save it again with torch.export.save"
        ) from None


class ExportedModule(torch.nn.Module):
    """A ``torch.export`` program as an ``nn.Module`` whose layers can be hooked.

    The program is unflattened into its original module tree (each layer its own submodule,
    named as in the exported network). Its input shape is fixed by the export:
    :attr:`input_shape` is (N, C, H, W) of the example the program was exported with.
    """

    def __init__(self, program: Any):
        super().__init__()
        unflat = torch.export.unflatten(program)
        for name, child in unflat.named_children():
            self.add_module(name, child)
        object.__setattr__(self, "_program", unflat)  # not a submodule: no name prefix
        placeholders = [
            node for node in program.graph.nodes
            if node.op == "placeholder" and node.name in program.graph_signature.user_inputs
        ]
        shapes = [
            tuple(d if isinstance(d, int) else None for d in node.meta["val"].shape)
            for node in placeholders if "val" in node.meta
        ]
        #: the exported input's shape, None for a dynamic dimension
        self.input_shape: tuple[int | None, ...] | None = shapes[0] if len(shapes) == 1 else None
        self.input_count = len(placeholders)
        self.layer_types = _layer_types(program, dict(self.named_modules()))

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        shape = self.input_shape
        if shape and len(args) == 1 and isinstance(args[0], torch.Tensor):
            given = tuple(args[0].shape)
            if len(given) != len(shape) or any(s not in (None, g) for s, g in zip(shape, given)):
                wanted = "x".join("?" if s is None else str(s) for s in shape)
                raise ModelError(
                    f"this torch.export program takes inputs of shape {wanted}, not "
                    f"{'x'.join(map(str, given))}; re-export it with dynamic_shapes (e.g. "
                    "{0: torch.export.Dim.DYNAMIC} for the batch) or pass one image at a time"
                )
        return self._program(*args, **kwargs)

    def train(self, mode: bool = True) -> ExportedModule:
        # an exported program is traced in one mode; train()/eval() cannot change it
        self.training = mode
        return self


def _layer_types(program: Any, modules: dict[str, torch.nn.Module]) -> dict[int, type]:
    """``id(submodule)`` → the ``torch.nn`` class it was exported from (for its layer kind)."""
    found: dict[int, type] = {}
    for node in program.graph.nodes:
        for path, type_name in (node.meta.get("nn_module_stack") or {}).values():
            module_name, _, class_name = str(type_name).rpartition(".")
            if path not in modules or not module_name.startswith("torch.nn."):
                continue
            cls = getattr(sys.modules.get(module_name), class_name, None)  # never imports
            if isinstance(cls, type):
                found[id(modules[path])] = cls
    return found


# -- Keras -------------------------------------------------------------------------------------
def _read_keras(path: Path, trust: bool) -> Any:
    from .keras import import_keras

    keras = import_keras()
    suffix = path.suffix.lower()
    if suffix == ".keras" and not zipfile.is_zipfile(path):
        raise ModelError(
            f"{path} is corrupt: a .keras file is a zip archive and this one is not "
            "(truncated download?); save the model again with model.save()"
        )
    if suffix in (".h5", ".hdf5") and not _is_hdf5(path):
        raise ModelError(
            f"{path} is corrupt: not an HDF5 file (truncated download?); save the model again"
        )
    try:
        return keras.saving.load_model(path, compile=False, safe_mode=not trust)
    except Exception as err:
        text = str(err)
        if "safe_mode" in text or ("Lambda" in text and "lambda" in text):
            raise ModelError(
                f"{path} holds a Lambda layer, whose Python code runs when the model is loaded; "
                f"if you trust the file, pass {TRUST_HINT}"
            ) from None
        if isinstance(err, (zipfile.BadZipFile, EOFError, OSError, KeyError)):
            raise ModelError(
                f"{path} is corrupt ({type(err).__name__}: {_first_line(err)}); save the model "
                "again with model.save()"
            ) from None
        raise ModelError(
            f"could not load the Keras model {path}: {type(err).__name__}: {_first_line(err)}"
        ) from None


def _is_hdf5(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(8) == b"\x89HDF\r\n\x1a\n"


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
