"""Output files of a command: written into a staging folder, put in place at the end.

A run's files go to a hidden folder beside ``--out`` (``.NAME.convlens-XXXX``, on the same file
system) and are moved into ``--out`` when the run ends, so an error leaves nothing behind and
``--out`` is created only then. Each folder run gets a manifest, ``.convlens-outputs.json``,
listing the files it wrote; the next run into the same folder first removes those files (and only
those), so the outputs of one run never mix with stale files of an earlier run. Files convlens
did not write are left alone. On Ctrl-C the files finished so far are put in place and the
command says what is missing.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from types import TracebackType

from ..errors import ConvlensError

MANIFEST = ".convlens-outputs.json"
_KINDS = {".png": "PNG", ".npy": "NPY", ".json": "JSON", ".csv": "CSV", ".html": "HTML"}


class UsageError(ConvlensError):
    """A command-line argument that cannot work (checked before any work starts)."""


def _existing_ancestor(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path(".")


def check_output_path(path: str | os.PathLike, option: str, *, folder: bool,
                      suffix: str | None = None) -> Path:
    """``path`` as a ``--out`` folder (``folder``) or file that can be written, else UsageError."""
    out = Path(path)
    if folder and out.exists() and not out.is_dir():
        raise UsageError(f"{option} {out} is a file; pass a folder (this command writes several "
                         "files)")
    if not folder:
        if out.is_dir():
            raise UsageError(f"{option} {out} is a folder; pass a file name such as "
                             f"{out / ('grid' + (suffix or ''))}")
        if suffix and out.suffix.lower() != suffix:
            raise UsageError(
                f"{option} {out} must end in {suffix} (e.g. {out.with_suffix(suffix)})"
            )
    ancestor = _existing_ancestor(out if folder else out.parent)
    if not ancestor.is_dir():
        raise UsageError(f"{option} {out}: {ancestor} is a file, so nothing can be written "
                         "under it; choose another path")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise UsageError(f"{option} {out}: no permission to write in {ancestor}; choose another "
                         "path")
    return out


class Staged:
    """Files of one run, staged beside ``target`` and moved into place when the run ends.

    ``target`` is the ``--out`` folder, or with ``single_folder=False`` the folder that holds the
    output file(s) (then no manifest is kept: the files named are replaced). ``expected`` maps a
    suffix (``".png"``) or a file name (``"summary.json"``) to the count the run should write; it
    is only used to say what is missing after Ctrl-C.
    """

    def __init__(self, target: Path, expected: dict[str, int] | None = None, *,
                 manifest: bool = True):
        self.target = target
        self.expected = dict(expected or {})
        self.manifest = manifest
        self.folder = Path(".")

    def __enter__(self) -> Staged:
        base = _existing_ancestor(self.target.parent if self.target.name else self.target)
        self.folder = Path(tempfile.mkdtemp(prefix=f".{self.target.name}.convlens-", dir=base))
        return self

    def path(self, relative: str | os.PathLike) -> Path:
        """Where to write the output file ``relative`` (to ``target``) during the run."""
        if Path(relative).is_absolute() or ".." in Path(relative).parts:
            raise ValueError(f"an output path must be relative to the output folder: {relative}")
        path = self.folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def _files(self) -> list[str]:
        return sorted(
            str(p.relative_to(self.folder)) for p in self.folder.rglob("*") if p.is_file()
        )

    def _publish(self, complete: bool) -> list[str]:
        files = self._files()
        self.target.mkdir(parents=True, exist_ok=True)
        if self.manifest:
            _remove_previous(self.target)
        for name in files:
            destination = self.target / name
            destination.parent.mkdir(parents=True, exist_ok=True)
            os.replace(self.folder / name, destination)
        if self.manifest:
            (self.target / MANIFEST).write_text(
                json.dumps({"complete": complete, "files": files}, indent=1) + "\n"
            )
        return files

    def summary(self, files: list[str]) -> str:
        """What was written, against ``expected``: "wrote 159 of 196 PNGs to DIR; no CSV"."""
        parts, missing = [], []
        for key, count in self.expected.items():
            if key.startswith("."):
                done = sum(f.lower().endswith(key) for f in files)
                kind = _KINDS.get(key, key.lstrip(".").upper())
                parts.append(f"{done} of {count} {kind}s")
            elif not any(Path(f).name == key for f in files):
                missing.append(f"no {key}")
        where = f" to {self.target}/" if files else ""
        text = f"wrote {', '.join(parts) or f'{len(files)} files'}{where}"
        return "; ".join([text, *missing])

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        try:
            if kind is None:
                self._publish(complete=True)
            elif issubclass(kind, KeyboardInterrupt):
                files = self._files()
                if not files:
                    raise KeyboardInterrupt(
                        f"nothing written; {self.target} is unchanged"
                    ) from None
                raise KeyboardInterrupt(self.summary(self._publish(complete=False))) from None
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)


def _remove_previous(folder: Path) -> None:
    """Remove the files the previous run listed in ``folder``'s manifest (and emptied folders)."""
    manifest = folder / MANIFEST
    try:
        listed = json.loads(manifest.read_text()).get("files", [])
    except (OSError, ValueError, AttributeError):
        return
    root = folder.resolve()
    for name in listed:
        path = (folder / str(name)).resolve()
        if root not in path.parents:  # only inside the folder, whatever the manifest says
            continue
        if path.is_file():
            path.unlink()
        for parent in path.parents:
            if parent == root:
                break
            try:
                parent.rmdir()  # only if now empty
            except OSError:
                break
    manifest.unlink(missing_ok=True)
