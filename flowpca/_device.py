"""Device and dtype selection, seeded generators, and numpy <-> torch conversion."""

import numpy as np
import torch


def resolve_device(device):
    """Turn the estimator's ``device`` parameter into a :class:`torch.device`."""
    if isinstance(device, torch.device):
        resolved = device
    elif device == "auto":
        resolved = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            resolved = torch.device(device)
        except RuntimeError as error:
            raise ValueError(f"Invalid device={device!r}: {error}") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} was requested but CUDA is not available.")
    return resolved


def resolve_dtype(dtype, device):
    """float64 on CPU and float32 on accelerators unless the user asks otherwise."""
    if dtype == "auto":
        return torch.float64 if device.type == "cpu" else torch.float32
    return {"float32": torch.float32, "float64": torch.float64}[dtype]


def make_generator(seed, device):
    """A private :class:`torch.Generator`, so that torch's global RNG is never touched."""
    generator = torch.Generator(device=device)
    generator.manual_seed(int(seed))
    return generator


def seed_from(random_state):
    """Draw a torch seed from a numpy ``RandomState`` (``check_random_state`` output)."""
    return int(random_state.randint(np.iinfo(np.int32).max))


def to_tensor(X, device, dtype):
    return torch.as_tensor(np.ascontiguousarray(X), device=device).to(dtype)


def to_numpy(tensor):
    return tensor.detach().cpu().numpy().astype(np.float64, copy=False)
