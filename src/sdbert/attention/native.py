"""The optional native CPU kernel: fused block-sparse attention in C++ (`csrc/block_sparse_cpu.cpp`).

Why it exists: on a CPU, the pure PyTorch kernels pay for every gathered key block and every
partial result with a round trip through main memory; this kernel keeps each query block's keys,
scores and probabilities in a per-thread, cache-resident buffer (two GEMMs and an in-place
softmax per block), which is what makes block-sparse attention several times faster than dense
SDPA on a laptop-class CPU (see `benchmarks/BENCHMARKS.md`).

It is compiled on first use with `torch.utils.cpp_extension` (a C++ compiler and `ninja`, a
declared dependency, are needed; about ten seconds, cached under torch's extension folder, keyed by
this machine's CPU). The first use logs one line naming the kernel that runs: the native one, or
the pure PyTorch paths and why (no compiler, an unusual torch build without the BLAS symbols,
`SDBERT_NATIVE=0`). `SDBERT_REQUIRE_NATIVE=1` (CI) turns a kernel that cannot be used into an error
instead of that fallback. It handles fp32 and fp64 and any layout; the pure paths remain the
reference and cover the other dtypes and devices.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import platform
import shutil
import threading
import time
import weakref
from pathlib import Path

import torch

from sdbert.attention.layout import SparsePlan
from sdbert.errors import SDBertError

log = logging.getLogger(__name__)

_SOURCE = Path(__file__).with_name("csrc") / "block_sparse_cpu.cpp"
_DTYPES = (torch.float32, torch.float64)
_LOW = (torch.bfloat16, torch.float16)  # under autocast: computed in fp32 (attention is a small share of the FLOPs)
_lock = threading.Lock()
_state: dict[str, object] = {}  # "ok": bool once a load was attempted; "error": why not; "detail": how it loaded
_enabled = [True]


class NativeKernelError(SDBertError, RuntimeError):
    """`SDBERT_REQUIRE_NATIVE=1` is set and the native kernel cannot be used."""


@contextlib.contextmanager
def use(enabled: bool):
    """`with native.use(False): ...` runs the pure PyTorch kernels (benchmarks, comparisons)."""
    previous, _enabled[0] = _enabled[0], enabled
    try:
        yield
    finally:
        _enabled[0] = previous


def enabled() -> bool:
    """Whether `use` currently lets calls take the native kernel (it is on unless switched off)."""
    return _enabled[0]


def required() -> bool:
    """`SDBERT_REQUIRE_NATIVE=1`: CI must fail where the kernel does not build, not quietly run the
    several times slower pure paths and skip the kernel's tests."""
    return _env_flag("SDBERT_REQUIRE_NATIVE", "0")


def unavailable_reason() -> str | None:
    """Why the native kernel is not used (None while it is, or before the first attempt)."""
    return _state.get("error")


def available() -> bool:
    """Whether the native kernel can be used (compiles and loads it on the first call).

    Raises `NativeKernelError` instead of returning False when `SDBERT_REQUIRE_NATIVE=1`.
    """
    if "ok" not in _state:
        with _lock:
            if "ok" not in _state:
                _state["ok"] = _load()
                _announce()
    if not _state["ok"] and required():
        raise NativeKernelError("SDBERT_REQUIRE_NATIVE=1 but the native CPU attention kernel is unavailable: "
                                f"{_state.get('error')}")
    return bool(_state["ok"])


def _env_flag(name: str, default: str) -> bool:
    return os.environ.get(name, default).lower() not in ("0", "false", "no", "off", "")


def _announce() -> None:
    """The one line per process that says which CPU kernel block-sparse attention runs: a silent
    fallback once hid a several-fold slowdown (issue 12). Warning only when a build failed; switching
    the kernel off on purpose is not a problem."""
    if _state["ok"]:
        log.info("sdbert: block-sparse attention on the CPU runs the native C++ kernel (%s)", _state["detail"])
    elif _state.get("disabled"):
        log.info("sdbert: block-sparse attention on the CPU runs the PyTorch kernels (%s)", _state["error"])
    else:
        log.warning("sdbert: block-sparse attention on the CPU runs the PyTorch kernels: the native kernel "
                    "is unavailable (%s)", _state["error"])


def _load() -> bool:
    if not _env_flag("SDBERT_NATIVE", "1"):
        _state["error"], _state["disabled"] = "disabled by SDBERT_NATIVE", True
        return False
    try:
        # compiled on first use: the C++ toolchain is loaded only when the native kernel is built
        from torch.utils import cpp_extension

        # -march=native binaries must not be shared between different CPUs: key the build by CPU.
        name = "sdbert_native_" + hashlib.sha1(_cpu_signature().encode()).hexdigest()[:10]
        cached, start = _is_built(cpp_extension, name), time.perf_counter()
        log.debug("sdbert: loading the native CPU attention kernel %s (cached build: %s)", name, cached)
        with _ninja_on_path():
            cpp_extension.load(name=name, sources=[str(_SOURCE)], is_python_module=False,
                               extra_cflags=["-O3", "-march=native", "-fopenmp"], extra_ldflags=["-fopenmp"])
        torch.ops.sdbert_native.block_sparse_fwd  # noqa: B018 - raises if the library did not register
    except Exception as exc:  # no compiler, no ninja, no BLAS symbols, ...: the pure paths take over
        _state["error"] = f"{type(exc).__name__}: {exc}".splitlines()[0]
        return False
    _state["detail"] = "cached build" if cached else f"compiled in {time.perf_counter() - start:.0f} s, cached"
    return True


@contextlib.contextmanager
def _ninja_on_path():
    """torch runs `ninja` from PATH; the `ninja` package we depend on installs it next to the
    interpreter, which is not on PATH when a virtual environment is used without being activated
    (`.venv/bin/sdbert ...`). Lend the build that folder, for the build only."""
    if shutil.which("ninja") is not None:
        yield
        return
    try:
        # compiled on first use: the C++ toolchain is loaded only when the native kernel is built
        import ninja

        folder = ninja.BIN_DIR
    except (ImportError, AttributeError):  # not installed: torch will say that ninja is missing
        folder = None
    previous = os.environ.get("PATH")
    if folder:
        os.environ["PATH"] = os.pathsep.join(filter(None, [previous, folder]))
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("PATH", None)
        else:
            os.environ["PATH"] = previous


def _is_built(cpp_extension, name: str) -> bool:
    try:  # a private helper of torch's: only decides whether to say that we compile
        return (Path(cpp_extension._get_build_directory(name, verbose=False)) / f"{name}.so").exists()
    except Exception:
        return False


def _cpu_signature() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            lines = [ln for ln in f.read().splitlines() if ln.startswith(("model name", "flags"))][:2]
    except OSError:
        lines = [platform.processor()]
    return "|".join([platform.machine(), torch.__version__, *lines])


def supported(q: torch.Tensor, dropout_p: float) -> bool:
    """Whether these inputs can take the native kernel (fp32/fp64, or bf16/fp16 computed in fp32, on the
    CPU, no dropout)."""
    return (_enabled[0] and q.device.type == "cpu" and q.dtype in (*_DTYPES, *_LOW) and dropout_p == 0.0
            and available())


# --- plans as runs of key blocks ------------------------------------------------------------------

_runs_cache: dict[int, tuple[weakref.ref, tuple[torch.Tensor, ...]]] = {}
MAX_GROUP = 4  # query blocks computed together when they share a key list (the global rows)


def plan_runs(plan: SparsePlan) -> tuple[torch.Tensor, ...]:
    """The plan in the kernel's form (cached per plan):

    runs `(H, nb, R, 2)`, nruns `(H, nb)`: each query block's key blocks as runs of consecutive
    blocks `(first, count)`, in block order;
    order `(H, nb)`, glen `(H, nb)`: the query blocks reordered so that blocks with the same key
    list sit together (groups of at most `MAX_GROUP`, first appearance first); `glen` is the size
    of the group starting at each position, 0 inside a group.
    """
    hit = _runs_cache.get(id(plan))
    if hit is not None and hit[0]() is plan:
        return hit[1]
    with torch.inference_mode(False):  # cached tensors must stay usable by autograd later
        layout = _plan_layout(plan)
        runs = _runs_from_layout(layout) + _groups(layout)
    _runs_cache[id(plan)] = (weakref.ref(plan), runs)
    weakref.finalize(plan, _runs_cache.pop, id(plan), None)
    return runs


def _plan_layout(plan: SparsePlan) -> torch.Tensor:
    """The boolean layout `(H, nb, nb)` a plan computes."""
    heads, nb = plan.key_blocks.shape[0], plan.num_blocks
    layout = torch.zeros(heads, nb, nb, dtype=torch.bool)
    layout[:, plan.global_rows.cpu()] = True
    if plan.sparse_rows.numel():
        layout[:, plan.sparse_rows.cpu()] = _rows_from_blocks(plan, nb)
    return layout


def _rows_from_blocks(plan: SparsePlan, nb: int) -> torch.Tensor:
    blocks, valid = plan.key_blocks.cpu(), plan.key_valid.cpu()  # (H, m, W)
    rows = torch.zeros(*blocks.shape[:2], nb + 1, dtype=torch.bool)
    rows.scatter_(-1, blocks.masked_fill(~valid, nb), True)  # padding slots land in the spare column
    return rows[..., :nb]


def _runs_from_layout(layout: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    heads, nb, _ = layout.shape
    before = torch.zeros_like(layout)
    before[..., 1:] = layout[..., :-1]
    after = torch.zeros_like(layout)
    after[..., :-1] = layout[..., 1:]
    starts, ends = layout & ~before, layout & ~after  # (H, nb, nb)
    nruns = starts.sum(-1)
    width = max(int(nruns.max()), 1)
    # A stable sort brings each row's run starts (ends) to the front, in block order.
    first = torch.sort((~starts).to(torch.uint8), dim=-1, stable=True).indices[..., :width]
    last = torch.sort((~ends).to(torch.uint8), dim=-1, stable=True).indices[..., :width]
    used = torch.arange(width) < nruns[..., None]
    runs = torch.stack([first, last - first + 1], dim=-1) * used[..., None]
    return runs.long().contiguous(), nruns.long().contiguous()


def _groups(layout: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    heads, nb, _ = layout.shape
    order = torch.empty(heads, nb, dtype=torch.long)
    glen = torch.zeros(heads, nb, dtype=torch.long)
    rows = torch.arange(nb)
    for h in range(heads):
        _, group = torch.unique(layout[h], dim=0, return_inverse=True)  # (nb,) group of each row
        first = torch.full((int(group.max()) + 1,), nb).scatter_reduce_(0, group, rows, "amin")
        order[h] = torch.sort(first[group], stable=True).indices  # groups in order of first appearance
        grouped = group[order[h]]
        start = torch.ones(nb, dtype=torch.bool)
        start[1:] = grouped[1:] != grouped[:-1]
        group_start = torch.cummax(torch.where(start, rows, 0), 0).values
        rank = rows - group_start  # position inside the group
        size = torch.bincount(grouped, minlength=int(group.max()) + 1)[grouped]
        head_of_part = rank % MAX_GROUP == 0
        glen[h] = torch.where(head_of_part, (size - rank).clamp(max=MAX_GROUP), 0)
    return order.contiguous(), glen.contiguous()


# --- the autograd function -----------------------------------------------------------------------

def native_attention(q, k, v, block_size: int, plan: SparsePlan, key_padding_mask: torch.Tensor | None):
    """Block-sparse attention through the native kernel. `q, k, v`: `(B, H, nb * bs, D)`, unit
    stride in `D`. Returns `(B, H, S, D)` laid out as `(B, S, H, D)`; padding query rows are not
    zeroed here; a row that sees no key gives zeros. bf16/fp16 inputs are computed in fp32 (the upcast
    keeps the strides) and the result is cast back."""
    runs = plan_runs(plan)
    dtype = q.dtype
    if dtype in _LOW:
        q, k, v = (t.float() for t in (q, k, v))
    kmask = None
    if key_padding_mask is not None:
        kmask = torch.zeros(key_padding_mask.shape, dtype=q.dtype).masked_fill_(~key_padding_mask, float("-inf"))
    return _NativeAttention.apply(q, k, v, kmask, runs, block_size).to(dtype)


class _NativeAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, kmask, plan, block_size):
        scale = q.shape[-1] ** -0.5
        out, lse = torch.ops.sdbert_native.block_sparse_fwd(q, k, v, kmask, *plan, block_size, scale)
        ctx.save_for_backward(q, k, v, out, lse, kmask)
        ctx.plan, ctx.block_size, ctx.scale = plan, block_size, scale
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        q, k, v, out, lse, kmask = ctx.saved_tensors
        if grad_out.stride(-1) != 1:
            grad_out = grad_out.contiguous()
        dq, dk, dv = torch.ops.sdbert_native.block_sparse_bwd(grad_out, q, k, v, out, lse, kmask, *ctx.plan,
                                                             ctx.block_size, ctx.scale)
        return dq, dk, dv, None, None, None
