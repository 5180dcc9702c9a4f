"""Checkpoint I/O shared by every loader (DiT, VAE, umT5, CLIP): read tensors, check them, assign them.

* `read_tensors` / `read_state_dict`: the tensors of a safetensors or PyTorch file, memory-mapped
  where the format allows, `torch.load(weights_only=True)` only;
* `check_state_dict`: the one strict key/shape check (missing, unexpected and misshapen keys in
  one `CheckpointError` naming the file);
* `assign_weights`: a model built on the meta device filled with the tensors (assigned, not
  copied, so the weights exist once), after that check.

The model-specific key maps live beside each model (`dit_loader.py` for the DiT's SAT names).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

from scail.errors import CheckpointError

if TYPE_CHECKING:
    import torch

ModuleT = TypeVar("ModuleT", bound="torch.nn.Module")


def read_tensors(file: Path) -> dict[str, torch.Tensor]:
    """All tensors of a safetensors or PyTorch file, memory-mapped where the format allows.

    A PyTorch file's `module` (DeepSpeed/SAT) or `state_dict` entry is unwrapped; other entries are
    ignored. Unreadable, truncated or non-checkpoint files raise CheckpointError naming the file.
    """
    import torch

    obj = _load_file(file)
    if isinstance(obj, Mapping):
        for wrapper in ("module", "state_dict", "model"):
            inner = obj.get(wrapper)
            if isinstance(inner, Mapping):
                obj = inner
                break
    tensors = (
        {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)} if isinstance(obj, Mapping) else {}
    )
    if not tensors:
        raise CheckpointError(f"{file}: holds no tensors; is this a SCAIL DiT checkpoint?")
    return tensors


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A plain state dict (every value a tensor) from a `.safetensors` or `.pth`/`.pt` file, memory-mapped.

    A `.pth` holding only a `state_dict`, `module` or `model` entry is unwrapped. The VAE, umT5 and
    CLIP loaders use this; a missing, unreadable or non-state-dict file is a one-line CheckpointError.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"{path}: checkpoint not found (no such file); check the weights folder (scail weights verify)"
        )
    obj = _load_file(path)
    for wrapper in ("state_dict", "module", "model"):
        if isinstance(obj, dict) and set(obj) == {wrapper} and isinstance(obj[wrapper], dict):
            obj = obj[wrapper]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: not a state dict of tensors; is this a weight file?")
    return obj



def assign_weights(
    model: ModuleT,
    state: Mapping[str, torch.Tensor],
    dtype: torch.dtype | Callable[[str], torch.dtype],
    device: torch.device | str,
    source: str | Path = "state dict",
    what: str = "a checkpoint of this model",
) -> ModuleT:
    """Fill `model`, built on the meta device, with `state` cast to `dtype` on `device`, strictly.

    `dtype` is one dtype, or a function of the key (the DiT keeps some parameters float32). The
    keys and shapes are checked first (`check_state_dict`; `source` and `what` word its error).
    The tensors are assigned, not copied, so the weights exist once. Returns the model in eval
    mode with gradients off.
    """
    check_state_dict(model, state, source, what)
    dtype_of = dtype if callable(dtype) else (lambda _key: dtype)
    model.load_state_dict(
        {k: v.to(device=device, dtype=dtype_of(k)) for k, v in state.items()}, strict=True, assign=True
    )
    return model.eval().requires_grad_(False)


def check_state_dict(model: torch.nn.Module, tensors: Mapping[str, torch.Tensor], source: str | Path,
                     what: str = "a checkpoint of this model") -> None:
    """Raise one CheckpointError listing missing keys, unexpected keys and shape mismatches.

    The one strict key/shape check of every loader (DiT, VAE, umT5, CLIP); `what` completes the
    closing question ("is this <what>?").
    """
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = [k for k in expected if k not in tensors]
    unexpected = [k for k in tensors if k not in expected]
    mismatched = [k for k in expected if k in tensors and tuple(tensors[k].shape) != expected[k]]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys (e.g. {few(missing)})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys (e.g. {few(unexpected)})")
    if mismatched:
        k = mismatched[0]
        problems.append(f"{len(mismatched)} shape mismatches (e.g. {k!r}: file {list(tensors[k].shape)}, "
                        f"model {list(expected[k])})")
    if problems:
        raise CheckpointError(f"{source}: {'; '.join(problems)}; is this {what}?")


def _load_file(file: Path) -> object:
    """What a safetensors or PyTorch (weights-only) file holds; a file that cannot be read is a CheckpointError."""
    if file.suffix == ".safetensors":
        return _read_safetensors(file)
    try:
        return _torch_load(file)
    except CheckpointError:
        raise
    except Exception as exc:  # torch raises many types for a bad file
        raise CheckpointError(_unreadable(file, exc)) from exc


def _unreadable(file: Path, exc: BaseException) -> str:
    return (f"{file}: cannot read the checkpoint ({_first_line(exc)}); "
            "the file is truncated, corrupt or not a checkpoint; download it again")


def _torch_load(file: Path) -> object:
    """`torch.load` with `weights_only=True`, memory-mapped when the file is in the zip format.

    DeepSpeed/SAT checkpoints may carry a numpy RNG state beside the weights (SAT saves
    `np.random.get_state()`); numpy arrays, scalars and dtypes are plain data, so exactly those
    globals are allowed on a second try. Anything else the file needs is refused with its name.
    """
    import pickle

    import torch

    def load() -> object:
        try:
            return torch.load(file, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc):
                raise
            return torch.load(file, map_location="cpu", weights_only=True)  # legacy (non-zip) format

    try:
        return load()
    except pickle.UnpicklingError:
        try:
            needed = torch.serialization.get_unsafe_globals_in_checkpoint(file)
        except Exception:  # the legacy (non-zip) format cannot be scanned: refuse it as it is
            needed = []
        allowed = _numpy_data_globals()
        blocked = [name for name in needed if name not in allowed]
        if not needed or blocked:
            raise CheckpointError(
                f"{file}: holds objects other than tensors that are not loaded for safety "
                f"({', '.join(blocked[:3]) or 'unknown'}); "
                "re-save its 'module' dict with torch.save, or use a .safetensors conversion"
            ) from None
        with torch.serialization.safe_globals([(obj, name) for name, obj in allowed.items()]):
            return load()


def _numpy_data_globals() -> dict[str, Callable[..., Any]]:
    """Pickle globals that rebuild numpy arrays, scalars and dtypes (numpy 1.x and 2.x names)."""
    import numpy as np

    reconstruct = cast("Callable[..., Any]", np.zeros(0).__reduce__()[0])  # numpy's array rebuild function
    scalar = cast("Callable[..., Any]", np.float64(0).__reduce__()[0])  # numpy's scalar rebuild function
    names: dict[str, Callable[..., Any]] = {"numpy.ndarray": np.ndarray, "numpy.dtype": np.dtype}
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        names[f"{module}._reconstruct"] = reconstruct
        names[f"{module}.scalar"] = scalar
    for name in dir(np.dtypes):
        cls = getattr(np.dtypes, name)
        if isinstance(cls, type) and issubclass(cls, np.dtype):
            names[f"numpy.dtypes.{name}"] = cls
    return names


def _read_safetensors(file: Path) -> dict[str, torch.Tensor]:
    from safetensors import safe_open

    try:
        with safe_open(str(file), framework="pt", device="cpu") as f:
            return {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
    except Exception as exc:
        raise CheckpointError(_unreadable(file, exc)) from exc


def _first_line(exc: BaseException) -> str:
    """`Type: first sentence` of an exception, kept short for a one-line message."""
    text = str(exc).strip().splitlines()
    if not text:
        return type(exc).__name__
    sentence = text[0].split(". ")[0].rstrip(".")
    return f"{type(exc).__name__}: {sentence[:160]}"


def few(names: list[str], n: int = 3) -> str:
    """The first `n` names, quoted, for an error message ("'a', 'b', 'c', ...")."""
    shown = ", ".join(repr(k) for k in names[:n])
    return shown + (", ..." if len(names) > n else "")

