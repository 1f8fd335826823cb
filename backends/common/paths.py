"""The data directory layout, shared by the UI, the job engine and the backends.

<data-dir>/
  models/smollm2-135m-instruct/   the bundled LLM, converted once from GGUF to safetensors
  models/tiny-sd/                 the bundled tiny Stable Diffusion pipeline
  models/tiny-sd-shapes/          the same pipeline taught to draw coloured shapes (optional, prepared on request)
  vendor/                         packages installed for the bundled models (pip --target)
  datasets/                       studio datasets
  runs/<job-id>/                  config.yaml, command.sh, log.txt, metrics.jsonl, checkpoints/, output/
  jobs.sqlite                     the job store
  settings.json                   UI settings (language, ...)
  tmp/                            Gradio's temporary files
"""
from __future__ import annotations

import os
from pathlib import Path

from .errors import FieldError

ROOT = Path(__file__).resolve().parents[2]
SMOLLM2_NAME = "smollm2-135m-instruct"
TINY_SD_NAME = "tiny-sd"
TINY_SD_SHAPES_NAME = "tiny-sd-shapes"


def data_dir(path: str | os.PathLike | None = None) -> Path:
    """The data dir: the argument, else $STUDIO_DATA_DIR, else ./data under the project root."""
    p = Path(path or os.environ.get("STUDIO_DATA_DIR") or ROOT / "data")
    return p.expanduser().resolve()


def models_dir(dd: str | os.PathLike | None = None) -> Path:
    return data_dir(dd) / "models"


def smollm2_dir(dd: str | os.PathLike | None = None) -> Path:
    return models_dir(dd) / SMOLLM2_NAME


def tiny_sd_dir(dd: str | os.PathLike | None = None) -> Path:
    return models_dir(dd) / TINY_SD_NAME


def tiny_sd_shapes_dir(dd: str | os.PathLike | None = None) -> Path:
    return models_dir(dd) / TINY_SD_SHAPES_NAME


def vendor_dir(dd: str | os.PathLike | None = None) -> Path:
    return data_dir(dd) / "vendor"


def runs_dir(dd: str | os.PathLike | None = None) -> Path:
    return data_dir(dd) / "runs"


def datasets_dir(dd: str | os.PathLike | None = None) -> Path:
    return data_dir(dd) / "datasets"


def inside(child: str | os.PathLike, parent: str | os.PathLike) -> bool:
    """Whether `child` is `parent` or below it (symlinks resolved)."""
    try:
        Path(child).resolve().relative_to(Path(parent).resolve())
        return True
    except ValueError:
        return False


def confine(value: str | os.PathLike, dd: str | os.PathLike | None, *, field: str = "path",
            must_exist: bool = True) -> Path:
    """`value` (relative to the data dir, or absolute) as a real path inside the data dir, symlinks resolved,
    or a FieldError: the one rule for every path typed into the page (datasets, prompt sets, uploads)."""
    root = data_dir(dd)
    v = str(value or "").strip()
    if not v:
        raise FieldError(field, "is empty: pick a file under the data dir or upload one")
    p = Path(v).expanduser()
    if not p.is_absolute():
        p = root / p
    real = p.resolve()
    if not inside(real, root):
        raise outside_data_dir(v, root, p, field=field)
    if must_exist and not real.exists():
        raise FieldError(field, f"not found: {v} (looked in {root})")
    return real


def outside_data_dir(value: str, dd: Path, p: Path, *, field: str) -> FieldError:
    """The message for a path that leaves the data dir (naming where a symlink points)."""
    real = p.resolve()
    link = f" (it links to {real})" if Path(os.path.normpath(p.absolute())) != real else ""
    return FieldError(field, f"{value} is outside the data dir {dd}{link}; put the file under "
                             f"{dd / 'datasets'} or upload it")


def join_inside(folder: str | os.PathLike, name: str, *, field: str, what: str) -> Path:
    """`folder / name` resolved (symlinks included), or a FieldError when a user-given `name` (`../x`, an absolute
    path, a link) leads out of `folder`: the rule for every place that joins a name onto a folder."""
    base = Path(folder).resolve()
    n = str(name or "")
    target = (base / n).resolve()
    if not n.strip() or Path(n).is_absolute() or target == base or not inside(target, base):
        raise FieldError(field, f"{n!r} points outside {what} ({base}); give a name inside it")
    return target


def replace_dir(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Put the finished folder `src` at `dst` in one rename; an existing `dst` is moved aside first (to a hidden
    sibling) and removed after, so `dst` is always either the old folder or the new one, never half of each."""
    import shutil
    import uuid

    src, dst = Path(src), Path(dst)
    if dst.exists():
        old = dst.with_name(f".old-{dst.name}-{uuid.uuid4().hex[:8]}")
        os.replace(dst, old)
        os.replace(src, dst)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(src, dst)


def run_dir_of(run_dir: str, data_dir: str, default: str = "runs/manual") -> Path:
    """A backend's run folder: relative to the data dir when one is set, else to the working dir."""
    p = Path(run_dir or default).expanduser()
    if not p.is_absolute():
        p = (Path(data_dir).expanduser() / p) if data_dir else (Path.cwd() / p)
    return p.resolve()
