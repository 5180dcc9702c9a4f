"""Analytic ray-capsule renderer that reproduces the official taichi sphere tracer, in torch.

The official renderer (SCAIL-Pose `render_3d/taichi_cylinder.py::render_whole`) sphere-traces every
pixel of every frame in float32: up to 300 steps from t = 0.1 mm, a hit when the scene SDF drops
below 1e-3, a normal from central differences of the SDF (e = 1e-3) and Lambert + Blinn-Phong
shading with a depth factor whose constants come from the whole clip (research/scail-pose.md §4.1).

We intersect rays with capsules analytically instead, and reproduce what shapes its pixels:

* coverage: the tracer hits wherever a ray passes within radius + 1e-3 of a capsule axis, so we
  intersect capsules of radius `radius_mm + 1e-3`;
* colour: the capsule hit first; exact ties (a joint ball shared by two bones) go to the earlier
  bone in the official list order, as the tracer's strict `<` does;
* normal: the official central difference is the exact SDF gradient seen through float32 steps:
  `p + e` and `p - e` are rounded to float32, so each axis is scaled by its true step
  `fl(p_i + e) - fl(p_i - e)` (1.953e-3 instead of 2e-3 beyond 512 mm). We apply that scaling to the
  analytic normal. The rest of the tracer's normal is rounding noise we cannot (and need not) copy;
  the noise-free normal is its best predictor;
* shading: the official float32 formula, with the same order of operations.

Work per frame is limited to each capsule's screen-space tiles: a 4x4 tile is kept when its centre
ray passes close enough to the capsule axis that one of its pixels could hit, and only kept tiles'
pixels are intersected.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from scail.render.skeleton import Capsules

if TYPE_CHECKING:
    import torch

HIT_EPS_MM = 1e-3
"""official: a ray hits where the scene SDF < 1e-3, i.e. within radius + 1e-3 of an axis."""
NORMAL_EPS_MM = 1e-3
"""official: central-difference step of the normal."""
T_START_MM = 0.1
"""official znear: rays start at t = 0.1 mm."""
TILE = 4
"""Tile edge in pixels for capsule culling."""


@dataclass(frozen=True)
class Camera:
    """Pinhole intrinsics in pixels; the ray of pixel (row y, column x) goes through the integer (x, y)."""

    fx: float
    fy: float
    cx: float
    cy: float
    height: int
    width: int

    @classmethod
    def from_K(cls, K: np.ndarray, size_hw: tuple[int, int]) -> Camera:
        return cls(float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2]), int(size_hw[0]), int(size_hw[1]))


@dataclass(frozen=True)
class DepthShading:
    """The clip-global constants of the official tracer, from the clip's (z_min, z_max) in mm."""

    z_min: float
    z_max: float

    @classmethod
    def from_range(cls, depth_range: tuple[float, float] | None) -> DepthShading:
        z_min, z_max = depth_range if depth_range is not None else (T_START_MM, T_START_MM)
        return cls(float(np.float32(z_min)), float(np.float32(z_max)))

    @property
    def zfar(self) -> float:
        """official: max(min(z_max, 25000), 10000); rays stop when t exceeds it."""
        return max(min(self.z_max, 25000.0), 10000.0)

    @property
    def depth_near(self) -> float:
        """official (float32 in the kernel): max(z_min, 0.1)."""
        return float(np.maximum(np.float32(self.z_min), np.float32(0.1)))

    @property
    def depth_far(self) -> float:
        """official (float32 in the kernel): min(z_max + 6000, 20000)."""
        return float(np.minimum(np.float32(self.z_max) + np.float32(6000), np.float32(20000)))


# ----------------------------------------------------------------------------------------------
# Geometry (float64)
# ----------------------------------------------------------------------------------------------


Vec = tuple["torch.Tensor", "torch.Tensor", "torch.Tensor"]
"""A batch of 3-vectors as three (n,) tensors: elementwise ops on contiguous arrays are much faster
on CPU than reductions over a trailing axis of size 3."""


def _vec(x: torch.Tensor) -> Vec:
    return x[..., 0].contiguous(), x[..., 1].contiguous(), x[..., 2].contiguous()


def _take(a: Vec, idx: torch.Tensor) -> Vec:
    return a[0][idx], a[1][idx], a[2][idx]


def _dot(a: Vec, b: Vec) -> torch.Tensor:
    return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]


def _axpy(s: torch.Tensor, x: Vec, y: Vec) -> Vec:
    """s * x + y."""
    return s * x[0] + y[0], s * x[1] + y[1], s * x[2] + y[2]


def _sub(a: Vec, b: Vec) -> Vec:
    return a[0] - b[0], a[1] - b[1], a[2] - b[2]


def _scale(s: torch.Tensor, a: Vec) -> Vec:
    return s * a[0], s * a[1], s * a[2]


def _ray_dirs64(xs: torch.Tensor, ys: torch.Tensor, cam: Camera) -> Vec:
    """Unit rays (float64) through integer pixels (x, y)."""
    import torch

    u = (xs.double() - cam.cx) / cam.fx
    v = (ys.double() - cam.cy) / cam.fy
    inv = torch.rsqrt(u * u + v * v + 1.0)
    return u * inv, v * inv, inv


def _clamp01(s: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """clamp(s, 0, hi) elementwise with a tensor upper bound."""
    import torch

    return torch.minimum(s.clamp_min(0.0), hi)


def _line_segment_dist(d: Vec, a: Vec, u: Vec, length: torch.Tensor) -> torch.Tensor:
    """Distance (n,) between the lines through the origin along unit d and the segments a + s u, s in [0, L]."""
    pa = _axpy(-_dot(d, a), d, a)                                                 # parts orthogonal to d
    pu = _axpy(-_dot(d, u), d, u)
    s = _clamp01(-_dot(pa, pu) / _dot(pu, pu).clamp_min(1e-30), length)
    w = _axpy(s, pu, pa)
    return _dot(w, w).sqrt()


def _sphere_hit(d: Vec, c: Vec, r: float) -> torch.Tensor:
    """First t (n,) where rays along unit d meet spheres (c, r); inf on a miss."""
    import torch

    dc = _dot(d, c)
    w = _axpy(-dc, d, c)
    m2 = _dot(w, w)
    t = dc - (r * r - m2).clamp_min(0.0).sqrt()
    return torch.where(m2 <= r * r, t, math.inf)


def _capsule_hit(d: Vec, a: Vec, b: Vec, r: float) -> torch.Tensor:
    """First t (n,) where unit rays d (float64) meet capsules [a, b] of radius r; inf on a miss."""
    import torch

    ba = _sub(b, a)
    length = _dot(ba, ba).sqrt()
    u = _scale(1.0 / length.clamp_min(1e-12), ba)
    du, au = _dot(d, u), _dot(a, u)
    dp = _axpy(-du, u, d)                                                         # ray dir orthogonal to the axis
    ap = _axpy(-au, u, a)                                                         # axis offset orthogonal to itself
    qa = _dot(dp, dp)
    t0 = _dot(dp, ap) / qa.clamp_min(1e-30)
    w = _axpy(t0, dp, _scale(torch.full_like(t0, -1.0), ap))                     # closest approach to the axis
    m2 = _dot(w, w)
    tc = t0 - ((r * r - m2).clamp_min(0.0) / qa.clamp_min(1e-30)).sqrt()
    s = tc * du - au
    body = (m2 <= r * r) & (qa > 1e-12) & (s >= 0) & (s <= length) & (length > 1e-8)
    t = torch.where(body, tc, math.inf)
    return torch.minimum(t, torch.minimum(_sphere_hit(d, a, r), _sphere_hit(d, b, r)))


def _capsule_normal(p: Vec, a: Vec, b: Vec) -> Vec:
    """Unit outward normals (float64) of capsules [a, b] at points p near their surface."""
    ba = _sub(b, a)
    ll = _dot(ba, ba)
    pa = _sub(p, a)
    s = _clamp01(_dot(pa, ba) / ll.clamp_min(1e-30), (ll > 1e-16).to(ll.dtype))
    q = _axpy(-s, ba, pa)
    return _scale(_dot(q, q).clamp_min(1e-30).rsqrt(), q)


# ----------------------------------------------------------------------------------------------
# Culling: (capsule, pixel) pairs worth intersecting
# ----------------------------------------------------------------------------------------------


def _sphere_bbox(c: np.ndarray, r: float, cam: Camera) -> np.ndarray:
    """Conservative screen bbox (x0, y0, x1, y1) of spheres c: (M, 3); whole screen when near the camera."""
    xs = np.stack([(c[:, 0] + sx * r) / (c[:, 2] + sz * r) for sx in (-1, 1) for sz in (-1, 1)], axis=1)
    ys = np.stack([(c[:, 1] + sy * r) / (c[:, 2] + sz * r) for sy in (-1, 1) for sz in (-1, 1)], axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        box = np.stack([cam.fx * xs.min(1) + cam.cx, cam.fy * ys.min(1) + cam.cy,
                        cam.fx * xs.max(1) + cam.cx, cam.fy * ys.max(1) + cam.cy], axis=1)
    box[c[:, 2] - r <= 1.0] = [-np.inf, -np.inf, np.inf, np.inf]
    return box


def _expand(counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For counts (M,): the owner (S,) and the local offset (S,) of every one of sum(counts) items."""
    import torch

    owner = torch.repeat_interleave(torch.arange(counts.numel(), device=counts.device), counts)
    first = torch.cumsum(counts, 0) - counts
    return owner, torch.arange(owner.numel(), device=counts.device) - first[owner]


def _pairs(a: np.ndarray, b: np.ndarray, cam: Camera, r: float,
           device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(capsule, x, y) index triples (S,) of pixels whose ray may pass within r of capsule [a, b]: (M, 3)."""
    import torch

    ba_, bb_ = _sphere_bbox(a, r, cam), _sphere_bbox(b, r, cam)
    with np.errstate(invalid="ignore"):
        x0 = np.clip(np.floor(np.minimum(ba_[:, 0], bb_[:, 0])) - 1, 0, cam.width)
        y0 = np.clip(np.floor(np.minimum(ba_[:, 1], bb_[:, 1])) - 1, 0, cam.height)
        x1 = np.clip(np.ceil(np.maximum(ba_[:, 2], bb_[:, 2])) + 1, -1, cam.width - 1)
        y1 = np.clip(np.ceil(np.maximum(ba_[:, 3], bb_[:, 3])) + 1, -1, cam.height - 1)
    tx0, ty0 = (x0 // TILE).astype(np.int64), (y0 // TILE).astype(np.int64)
    ntx = np.maximum((x1 // TILE).astype(np.int64) - tx0 + 1, 0) * (x1 >= x0)
    nty = np.maximum((y1 // TILE).astype(np.int64) - ty0 + 1, 0) * (y1 >= y0)

    # tiles: keep those whose centre ray passes within r + (spread of the tile's rays) of the axis
    cap, off = _expand(torch.from_numpy(ntx * nty).to(device))
    ntx_t = torch.from_numpy(ntx).to(device)
    tx = torch.from_numpy(tx0).to(device)[cap] + off % ntx_t[cap]
    ty = torch.from_numpy(ty0).to(device)[cap] + off // ntx_t[cap]
    half = (TILE - 1) / 2
    d = _ray_dirs64(tx * TILE + half, ty * TILE + half, cam)
    a_t, b_t = torch.from_numpy(a).to(device), torch.from_numpy(b).to(device)
    ab = _vec(b_t - a_t)
    length = _dot(ab, ab).sqrt()
    u = _scale(1.0 / length.clamp_min(1e-12), ab)
    z_far = torch.maximum(a_t[:, 2], b_t[:, 2]) + 2 * r
    slack = z_far * (half + 0.5) * math.hypot(1 / cam.fx, 1 / cam.fy) * 1.01 + 0.01
    dist = _line_segment_dist(d, _vec(a_t[cap]), tuple(c[cap] for c in u), length[cap])  # type: ignore[arg-type]
    keep = dist <= r + slack[cap]
    cap, tx, ty = cap[keep], tx[keep], ty[keep]

    # pixels of kept tiles, clipped to the image
    pcap, poff = _expand(torch.full_like(cap, TILE * TILE))
    xs = tx[pcap] * TILE + poff % TILE
    ys = ty[pcap] * TILE + poff // TILE
    inside = (xs < cam.width) & (ys < cam.height)
    return cap[pcap][inside], xs[inside], ys[inside]


# ----------------------------------------------------------------------------------------------
# Shading (float32, the official formula and order of operations)
# ----------------------------------------------------------------------------------------------


def _normalize32(v: torch.Tensor) -> torch.Tensor:
    """taichi `normalized()`: v * (1 / sqrt(x*x + y*y + z*z)), float32."""
    x, y, z = v.unbind(-1)
    return v * (1.0 / (x * x + y * y + z * z).sqrt())[..., None]


def _ray_dirs32(xs: torch.Tensor, ys: torch.Tensor, cam: Camera) -> torch.Tensor:
    """official pixel_to_ray in float32: normalize(((x - cx)/fx, (y - cy)/fy, 1)). (n, 3)."""
    import torch

    f32, dev = torch.float32, xs.device
    u = (xs.to(f32) - torch.tensor(cam.cx, dtype=f32, device=dev)) / torch.tensor(cam.fx, dtype=f32, device=dev)
    v = (ys.to(f32) - torch.tensor(cam.cy, dtype=f32, device=dev)) / torch.tensor(cam.fy, dtype=f32, device=dev)
    return _normalize32(torch.stack([u, v, torch.ones_like(u)], 1))


def _official_normal(n64: Vec, p32: torch.Tensor) -> torch.Tensor:
    """The official central-difference normal without its rounding noise. (n, 3) float32.

    official get_normal divides SDF differences over float32 steps fl(p + e) - fl(p - e), which are
    not 2e (e.g. 1.953e-3 beyond 512 mm), so each axis of the true gradient is scaled by its step.
    """
    import torch

    e = torch.tensor(NORMAL_EPS_MM, dtype=torch.float32, device=p32.device)
    step = _vec(((p32 + e) - (p32 - e)).double())
    g = (n64[0] * step[0], n64[1] * step[1], n64[2] * step[2])
    inv = _dot(g, g).clamp_min(1e-60).rsqrt()
    return torch.stack([g[0] * inv, g[1] * inv, g[2] * inv], 1).float()


def _shade(rd: torch.Tensor, p32: torch.Tensor, n: torch.Tensor, col: torch.Tensor,
           depth: DepthShading) -> torch.Tensor:
    """official shading to uint8 (n, 3): col*(0.3+0.7*diff)*df + 0.5*spec^32*df, floor(clip(v)*255)."""
    import torch

    f32, dev = torch.float32, rd.device
    diff = torch.clamp_min(-n[:, 2], 0.0)
    view = -_normalize32(rd)
    half = _normalize32(view + torch.tensor([0.0, 0.0, -1.0], dtype=f32, device=dev))
    spec = torch.clamp_min(n[:, 0] * half[:, 0] + n[:, 1] * half[:, 1] + n[:, 2] * half[:, 2], 0.0)
    for _ in range(5):                                                            # spec ** 32
        spec = spec * spec
    near = torch.tensor(depth.depth_near, dtype=f32, device=dev)
    span = torch.tensor(depth.depth_far, dtype=f32, device=dev) - torch.tensor(T_START_MM, dtype=f32, device=dev)
    df = (1.0 - (p32[:, 2] - near) / span).clamp(0.0, 1.0)
    lit = 0.3 + 0.7 * diff
    rgb = col * lit[:, None] * df[:, None] + ((0.5 * spec) * df)[:, None]
    return (rgb.clamp(0.0, 1.0) * 255.0).to(torch.uint8)


# ----------------------------------------------------------------------------------------------
# Frames
# ----------------------------------------------------------------------------------------------


def render_capsules(caps: Capsules, cam: Camera, depth: DepthShading, radius_mm: float = 21.5,
                    device: str | torch.device = "cpu") -> torch.Tensor:
    """Render a chunk of frames to (T, H, W, 3) uint8 RGB on `device` (black background).

    `depth` must come from the whole clip (`DepthShading.from_range(clip_caps.depth_range())`)
    for the frames to match the official renderer, which derives it from all frames of a call.
    """
    import torch

    dev = torch.device(device)
    t_frames, k = caps.valid.shape
    h, w = cam.height, cam.width
    out = torch.zeros((t_frames * h * w, 3), dtype=torch.uint8, device=dev)
    fr, kk = np.nonzero(caps.valid)
    if fr.size == 0:
        return out.view(t_frames, h, w, 3)
    r = float(radius_mm) + HIT_EPS_MM
    a_np = caps.starts[fr, kk].astype(np.float64)                                # (M, 3)
    b_np = caps.ends[fr, kk].astype(np.float64)
    cap, xs, ys = _pairs(a_np, b_np, cam, r, dev)                                 # (S,)
    if cap.numel() == 0:
        return out.view(t_frames, h, w, 3)

    a_all = _vec(torch.from_numpy(a_np).to(dev))
    b_all = _vec(torch.from_numpy(b_np).to(dev))
    d = _ray_dirs64(xs, ys, cam)
    t = _capsule_hit(d, _take(a_all, cap), _take(b_all, cap), r)
    hit = torch.isfinite(t) & (t <= depth.zfar)
    cap, xs, ys, t = cap[hit], xs[hit], ys[hit], t[hit].clamp_min(T_START_MM)

    # z-buffer: nearest hit per pixel; exact ties go to the earlier capsule in list order
    frame_t = torch.from_numpy(fr).to(dev)
    order_t = torch.from_numpy(kk).to(dev)
    pix = (frame_t[cap] * h + ys) * w + xs
    t32 = t.float()                                         # float32 depth order is plenty (2e-4 mm)
    t_best = torch.full((t_frames * h * w,), math.inf, dtype=torch.float32, device=dev)
    t_best.scatter_reduce_(0, pix, t32, reduce="amin")
    tied = t32 <= t_best[pix]
    pix, cap, t, xs, ys = pix[tied], cap[tied], t[tied], xs[tied], ys[tied]
    first = torch.full((t_frames * h * w,), k, dtype=torch.int32, device=dev)
    order = order_t[cap].to(torch.int32)
    first.scatter_reduce_(0, pix, order, reduce="amin")
    win = order == first[pix]
    pix, cap, t, xs, ys = pix[win], cap[win], t[win], xs[win], ys[win]

    p64 = _scale(t, _ray_dirs64(xs, ys, cam))
    p32 = torch.stack(p64, 1).float()
    n = _official_normal(_capsule_normal(p64, _take(a_all, cap), _take(b_all, cap)), p32)
    colors = torch.from_numpy(caps.colors[fr, kk]).to(dev)[cap]                   # (n, 3) float32
    out[pix] = _shade(_ray_dirs32(xs, ys, cam), p32, n, colors, depth)
    return out.view(t_frames, h, w, 3)


def default_chunk_frames(cam: Camera, on_gpu: bool = False) -> int:
    """Frames rendered per call: ~16 (CPU) or ~128 (GPU) at 896x512, fewer for larger frames."""
    per = 128 if on_gpu else 16
    return max(1, min(per, per * 896 * 512 // (cam.height * cam.width)))
