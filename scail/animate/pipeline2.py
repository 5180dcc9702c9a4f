"""The SCAIL-2 pipeline: reference + identity masks + driving video + prompt -> video, any length.

It reuses SCAIL-Preview's networks and machinery (`AnimatePipeline`: VAE, umT5, CLIP, encoders'
offload, the samplers, CFG with guidance reuse, the step cache) and adds what SCAIL-2 changes
(research/scail2-model.md §6-7, official wan-branch `SCAIL2Pipeline.generate`):

    ref (3, H, W) ──► VAE ──► (1, 1, 16, h, w);  CLIP of the primary reference only
    ref mask ──► 28 channels (1, 1, 28, h, w);   extra refs: VAE one at a time, their masks likewise
    per segment of the driving video (81 frames):
        driving (3, 81, H/2, W/2) ──► VAE ──► pose latent (1, 21, 16, h/2, w/2)
        driving mask ──► 28 channels (1, 21, 28, h/2, w/2)
        noise (16, 21, h, w) ──► sampler (CFG on the text only) ──► VAE decode
        segment k > 0: the 5 decoded frames where it starts ──► VAE ──► a clean 2-latent anchor,
        held in latent frames 0-1 (history mask 1 there) at every DiT call; its 5 frames are dropped

Long video (`plan_segments`): 81-frame segments overlapping by the 5 anchor frames (stride 76, as
official). official: trailing frames that do not fill a whole segment are dropped; here the last
segment is moved back to end on the last frame instead (its anchor lies inside the previous
segment's output), so every frame is generated and every segment has the trained length.

Differences from the official code, on purpose: the noise of every segment comes from one CPU
generator seeded with `seed` (official: a CUDA generator), and the anchor region is imposed on the
DiT's input rather than written into the solver's state after each step: every solver update is
elementwise, so the generated frames are the same, and the anchor is put back in the final latent.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch

from scail.animate.pipeline import AnimatePipeline, SamplingModels, tensors_to, to_uint8
from scail.animate.sampler import GuidanceReuse, Solver, make_schedule, sample

if TYPE_CHECKING:
    from scail.animate.dit2 import SCAIL2DiT
    from scail.animate.inputs2 import Scail2Inputs
    from scail.stage import ProgressFn

log = logging.getLogger(__name__)

SEGMENT_FRAMES = 81
"""Pixel frames per segment: 21 latent frames, the trained length."""
ANCHOR_FRAMES = 5
"""Decoded frames re-encoded as the next segment's clean anchor (2 latent frames)."""
ANCHOR_LATENTS = 2



def plan_segments(total: int, length: int = SEGMENT_FRAMES, anchor: int = ANCHOR_FRAMES) -> list[tuple[int, int]]:
    """[start, end) pixel-frame ranges covering `total` frames (see the module docstring).

    A video of at most `length` frames is one segment of its 4k+1 leading frames. Longer ones are
    segments of exactly `length` frames starting every `length - anchor` frames; the last one ends
    on the last frame. Segment k > 0 is conditioned on the frames [start, start + anchor) already
    generated.
    """
    if total < 1:
        raise ValueError(f"need at least one frame, got {total}")
    if total <= length:
        return [(0, 1 + 4 * ((total - 1) // 4))]
    if (length - 1) % 4 or (anchor - 1) % 4 or not 0 < anchor < length:
        raise ValueError(f"segment length {length} and anchor {anchor} must be 4k+1 with anchor < length")
    segments, start = [], 0
    while start + length < total:
        segments.append((start, start + length))
        start += length - anchor
    segments.append((total - length, total))
    return segments


class SegmentStore:
    """The finished segments of one sample, kept in `folder` under `key` (the animate fingerprint):
    a rerun after Ctrl-C or a kill starts at the first segment not saved (each segment is a pure
    function of the inputs, the seed and the previous segment's anchor, which is saved with it).

    Per segment k, `segment_<k>.npz` holds the frames it contributes (uint8) and the decoded anchor
    frames the next segment starts from (float32), written atomically. `discard()` once the sample
    is written.
    """

    def __init__(self, folder: Path, key: str) -> None:
        self.folder, self.key = folder, key

    def _path(self, k: int) -> Path:
        return self.folder / f"segment_{k:03d}.npz"

    def load(self, k: int) -> tuple[np.ndarray, torch.Tensor | None] | None:
        """(frames, anchor) of segment k, or None when absent, unreadable or of another key."""
        path = self._path(k)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                if str(data["key"]) != self.key:
                    return None
                anchor = data["anchor"]
                return data["frames"], (torch.from_numpy(anchor) if anchor.size else None)
        except (OSError, KeyError, ValueError) as exc:
            log.info("%s: not reused (%s)", path, exc)
            return None

    def save(self, k: int, frames: np.ndarray, anchor: torch.Tensor | None) -> None:
        from scail.atomic import atomic_path

        if k == 0 and self.folder.is_dir():  # a new run: drop another key's segments
            for stale in self.folder.glob("segment_*.npz"):
                stale.unlink(missing_ok=True)
        a = anchor.float().cpu().numpy() if anchor is not None else np.zeros(0, np.float32)
        with atomic_path(self._path(k)) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, key=np.array(self.key), frames=frames, anchor=a)

    def discard(self) -> None:
        import shutil

        shutil.rmtree(self.folder, ignore_errors=True)


@dataclass
class Scail2Result:
    """The result of `SCAIL2Pipeline.generate`.

    Attributes:
        frames: (N, H, W, 3) uint8 RGB, one per driving frame used.
        segments: the [start, end) frame ranges that were generated.
        used_cfg: whether the unconditional branch ran.
    """

    frames: np.ndarray
    segments: list[tuple[int, int]]
    used_cfg: bool
    timings_s: dict[str, float] = field(default_factory=dict)


class SCAIL2Pipeline:
    """SCAIL-2 generation around an `AnimatePipeline` whose DiT is a `SCAIL2DiT`.

    Args:
        base: the networks (`base.dit` must be a SCAIL2DiT), device, offload, fast-mode state.
    """

    def __init__(self, base: AnimatePipeline) -> None:
        from scail.animate.dit2 import SCAIL2DiT

        if not isinstance(base.dit, SCAIL2DiT):
            raise TypeError(f"SCAIL2Pipeline needs a SCAIL2DiT, got {type(base.dit).__name__}")
        self.base = base

    @property
    def dit(self) -> SCAIL2DiT:
        return self.base.dit  # type: ignore[return-value]

    @property
    def device(self) -> torch.device:
        return self.base.device

    @property
    def label(self) -> str:
        return self.base.label

    def close(self) -> None:
        self.base.close()

    def _encode_frames(self, video: torch.Tensor) -> torch.Tensor:
        """(3, T, H, W) in [-1, 1] -> (1, F, 16, H/8, W/8) latent in the DiT layout."""
        return self.base.vae.encode(video[None].to(self.device)).permute(0, 2, 1, 3, 4)

    @torch.no_grad()
    def generate(
        self,
        inputs: Scail2Inputs,
        prompt: str = "",
        negative_prompt: str = "",
        solver: Solver = "euler",
        steps: int = 50,
        shift: float = 5.0,
        guide_scale: float = 4.0,
        seed: int = 42,
        on_progress: ProgressFn | None = None,
        segment_frames: int = SEGMENT_FRAMES,
        store: SegmentStore | None = None,
    ) -> Scail2Result:
        """Generate the video for `inputs` (`inputs2.load_inputs2`), segment by segment.

        Args:
            prompt, negative_prompt: text; CFG changes only the text (everything else is shared).
            solver, steps, shift, guide_scale: the sampler and CFG (see `AnimatePipeline.generate`).
            seed: seeds the CPU generator drawing every segment's noise.
            on_progress: (done, total) after each denoising step of every segment.
            segment_frames: pixel frames per segment (81: the trained length; 4k+1).
            store: keep finished segments there and reuse those a previous (interrupted) run kept.
        """
        from scail.animate.dit import pad_context
        from scail.animate.preprocess2 import compress_mask

        t0 = time.perf_counter()
        timings: dict[str, float] = {}
        base, dev = self.base, self.device
        total = inputs.num_frames
        segments = plan_segments(total, segment_frames)

        ref_latent = self._encode_frames(inputs.ref_image[:, None])  # (1, 1, 16, h, w)
        dit_kwargs: dict[str, Any] = {
            "ref_mask": inputs.ref_mask.permute(1, 0, 2, 3)[None].to(dev),  # (1, 1, 28, h, w)
            "replace": inputs.replace,
        }
        if inputs.extra_refs:  # official: each extra reference VAE-encoded on its own
            extra = [self._encode_frames(img[:, None]) for img in inputs.extra_refs]
            dit_kwargs["extra_refs"] = torch.cat(extra, dim=1)  # (1, N, 16, h, w)
            masks = [m.permute(1, 0, 2, 3)[None] for m in inputs.extra_ref_masks]
            dit_kwargs["extra_ref_masks"] = torch.cat(masks, dim=1).to(dev)  # (1, N, 28, h, w)
        use_cfg = prompt != negative_prompt and guide_scale != 1.0
        texts = [negative_prompt, prompt] if use_cfg else [prompt]
        text_len = self.dit.config.text_len
        context = torch.cat([pad_context(c[None], text_len) for c in base.encode_text(texts)])
        clip_features = base.encode_image(inputs.ref_image)  # (1, Li, clip_dim): primary reference only
        timings["encoders_s"] = time.perf_counter() - t0

        gen = torch.Generator(device="cpu").manual_seed(seed)
        out = np.empty((segments[-1][1], *inputs.size_hw, 3), dtype=np.uint8)
        anchor: torch.Tensor | None = None  # (3, 5, H, W) decoded frames where the next segment starts
        done, all_steps = 0, steps * len(segments)
        for k, (start, end) in enumerate(segments):
            t1 = time.perf_counter()
            keep = 0 if k == 0 else ANCHOR_FRAMES
            f, (h, w) = 1 + (end - start - 1) // 4, ref_latent.shape[-2:]
            # drawn even for a reused segment, so later segments get the same noise as in one run
            noise = torch.randn(base.vae.cfg.z_dim, f, h, w, dtype=torch.float32, generator=gen)
            saved = store.load(k) if store is not None else None
            if saved is not None:
                out[start + keep : end], anchor = saved
                done += steps
                if on_progress is not None:
                    on_progress(done, all_steps)
                log.info("segment %d/%d (frames %d-%d) reused from %s", k + 1, len(segments), start, end - 1,
                         store.folder if store is not None else "")  # fmt: skip
                continue
            pose_latent = self._encode_frames(inputs.driving[:, start:end])  # (1, F, 16, h/2, w/2)
            mask = compress_mask(inputs.driving_mask[:, start:end])  # (28, F, h/2, w/2)
            seg_kwargs = {**dit_kwargs, "driving_mask": mask.permute(1, 0, 2, 3)[None].to(dev)}
            history: torch.Tensor | None = None
            if anchor is not None:
                history = base.vae.encode(anchor[None].to(dev))[0]  # (16, 2, h, w) clean anchor
                seg_kwargs["history_frames"] = ANCHOR_LATENTS

            def progress(i: int, _total: int | None, offset: int = done) -> None:
                if on_progress is not None:
                    on_progress(offset + i, all_steps)

            job = SegmentJob(context, ref_latent, pose_latent, clip_features, seg_kwargs, history,
                             guide_scale if use_cfg else None, solver, steps, shift, noise)  # fmt: skip
            step_progress: ProgressFn = progress
            if base.parallel is not None:  # rank 0 of a parallel group: the other ranks sample this segment too
                base.parallel.start(job)
                step_progress = base.parallel.progress_fn(progress)
            latent = run_segment(base, job, step_progress)
            done += steps
            video = base.vae.decode(latent[None], tile=base.decode_tile(latent))[0]  # (3, 81, H, W) in [-1, 1]
            frames = to_uint8(video).cpu().numpy()
            out[start + keep : end] = frames[keep:]
            if k + 1 < len(segments):
                nxt = segments[k + 1][0] - start
                anchor = video[:, nxt : nxt + ANCHOR_FRAMES]
                if store is not None:  # the last segment is not kept: the sample is written next
                    store.save(k, frames[keep:], anchor)
            timings[f"segment{k}_s"] = time.perf_counter() - t1
            log.info("segment %d/%d (frames %d-%d) done", k + 1, len(segments), start, end - 1)
        return Scail2Result(frames=out, segments=segments, used_cfg=use_cfg, timings_s=timings)


@dataclass
class SegmentJob:
    """One segment's sampling inputs (`SCAIL2Pipeline.generate`): what rank 0 of a parallel group
    sends to the other ranks, which run `run_segment` on it too (`launch.py`).

    Attributes:
        context: (1 or 2, 512, text_dim) umT5 features, [uncond, cond] when CFG runs.
        ref_latent, pose_latent, clip_features: as `SCAIL2DiT.forward`.
        dit_kwargs: the SCAIL-2 inputs of `SCAIL2DiT.forward` (masks, extra references, mode, history).
        history: (16, 2, h, w) clean anchor imposed on the leading latent frames, or None.
        guide_scale: CFG scale, None when only the conditional branch runs.
        noise: (16, F, h, w) the segment's initial noise.
    """

    context: torch.Tensor
    ref_latent: torch.Tensor
    pose_latent: torch.Tensor
    clip_features: torch.Tensor
    dit_kwargs: dict[str, Any]
    history: torch.Tensor | None
    guide_scale: float | None
    solver: Solver
    steps: int
    shift: float
    noise: torch.Tensor

    def to(self, device: torch.device | str) -> SegmentJob:
        """A copy with every tensor on `device`."""
        return cast(SegmentJob, tensors_to(self, torch.device(device)))


def run_segment(models: SamplingModels, job: SegmentJob, on_progress: ProgressFn | None = None) -> torch.Tensor:
    """Denoise one segment on `models` (rank 0's pipeline or a parallel worker's DiT): (16, F, h, w)
    float32 latent with the clean anchor in its leading frames. Every rank of a parallel group runs
    this on the same job."""
    denoise = _velocity(models, job)
    latent = sample(denoise, job.noise.to(models.device), make_schedule(job.solver, job.steps, job.shift), on_progress)
    if job.history is not None:
        latent[:, : job.history.shape[1]] = job.history
    return latent


def _velocity(models: SamplingModels, job: SegmentJob) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The sampler's denoise(x, t): the anchor imposed on x, then the (guided) velocity."""
    net: Callable[..., torch.Tensor] = models.dit
    if models.step_cache is not None:
        models.step_cache.reset(job.steps)
        net = models.step_cache
    guidance = GuidanceReuse(job.guide_scale, models.uncond_every) if job.guide_scale is not None else None
    context, history = job.context, job.history

    def run(x: torch.Tensor, t: torch.Tensor, pair: bool) -> torch.Tensor:  # -> (B, 16, F, h, w)
        xin = x.permute(1, 0, 2, 3)[None]  # (1, F, 16, h, w)
        xin = xin.expand(2, -1, -1, -1, -1) if pair else xin
        ctx = context if pair else context[-1:]
        v = net(xin, t, ctx, job.ref_latent, job.pose_latent, job.clip_features, **job.dit_kwargs)
        return v.permute(0, 2, 1, 3, 4)

    def denoise(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if history is not None:  # official apply_clean_history before every DiT call
            x = x.clone()
            x[:, : history.shape[1]] = history
        if guidance is None:
            return run(x, t, False)[0]
        return guidance.velocity(lambda pair: run(x, t, pair))

    return denoise
