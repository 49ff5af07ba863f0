#!/usr/bin/env python3
"""PyTorch eager fp32 peer of `sam2-lora bench`'s end-to-end rows.

Times the same model and training step as the WebGPU engine, on the same GPU, so the two
images/s figures can be compared: SAM2.1 Hiera-tiny image encoder (trunk + FPN neck, written
here in plain PyTorch following SAM2's structure, random weights: timing does not depend on
them), the stride-16 segmentation head (conv3x3 256->128, ReLU, conv1x1 128->1, bilinear x16),
LoRA r=4 (alpha 32, dropout 0.05) on every trunk Linear in `lora` mode, sigmoid Dice loss
(MONAI DiceLoss(sigmoid=True) defaults), AdamW. Default 512 px, batch 4, modes head and lora.

Prints one JSON object: per mode, forward images/s and training-step images/s (median step
time) and peak CUDA memory (torch.cuda.max_memory_allocated).

TF32 is off (true fp32 matmuls and convolutions, like the WGSL kernels) unless --tf32.

    python3 bench/peer/pytorch_step.py --size 512 --batch 4
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

# ---- Hiera-tiny configuration (sam2.1_hiera_t.yaml + Hiera defaults) ------------------------

TINY = dict(
    embed_dim=96, num_heads=1, stages=(1, 2, 7, 2), global_att_blocks=(5, 7, 9),
    window_pos_embed_bkg_spatial_size=(7, 7), window_spec=(8, 4, 14, 7), q_pool=3,
    q_stride=(2, 2), dim_mul=2.0, head_mul=2.0, mlp_ratio=4.0,
)
NECK_CHANNELS = [768, 384, 192, 96]  # coarsest first
D_MODEL = 256
FPN_TOP_DOWN_LEVELS = (2, 3)


class LoRALinear(nn.Module):
    """nn.Linear plus an optional PEFT-style LoRA branch: y = W x + b + s * B(A(drop(x)))."""

    def __init__(self, in_f: int, out_f: int):
        super().__init__()
        self.base = nn.Linear(in_f, out_f)
        self.lora_a: nn.Linear | None = None
        self.lora_b: nn.Linear | None = None
        self.drop = nn.Identity()
        self.scale = 0.0

    def add_lora(self, r: int, alpha: float, dropout: float) -> None:
        self.lora_a = nn.Linear(self.base.in_features, r, bias=False)
        self.lora_b = nn.Linear(r, self.base.out_features, bias=False)
        nn.init.kaiming_uniform_(self.lora_a.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_b.weight)
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.scale = alpha / r

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        if self.lora_a is not None and self.lora_b is not None:
            y = y + self.lora_b(self.lora_a(self.drop(x))) * self.scale
        return y


def sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v; torch < 2.0 (Debian's 1.13) has no fused
    F.scaled_dot_product_attention, so it runs as the three eager ops it would be there."""
    fused = getattr(F, "scaled_dot_product_attention", None)
    if fused is not None:
        return fused(q, k, v)
    scores = torch.matmul(q, k.transpose(-2, -1)) * (q.shape[-1] ** -0.5)
    return torch.matmul(scores.softmax(-1), v)


def window_partition(x: torch.Tensor, ws: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """[B, H, W, C] -> [B * nWin, ws, ws, C], zero-padding H and W up to multiples of ws."""
    b, h, w, c = x.shape
    ph, pw = (ws - h % ws) % ws, (ws - w % ws) % ws
    if ph or pw:
        x = F.pad(x, (0, 0, 0, pw, 0, ph))
    hp, wp = h + ph, w + pw
    x = x.view(b, hp // ws, ws, wp // ws, ws, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, ws, ws, c), (hp, wp)


def window_unpartition(win: torch.Tensor, ws: int, pad_hw: tuple[int, int],
                       hw: tuple[int, int]) -> torch.Tensor:
    hp, wp = pad_hw
    h, w = hw
    b = win.shape[0] // (hp * wp // ws // ws)
    x = win.view(b, hp // ws, wp // ws, ws, ws, -1).permute(0, 1, 3, 2, 4, 5)
    x = x.reshape(b, hp, wp, -1)
    return x[:, :h, :w, :].contiguous()


def pool_nhwc(x: torch.Tensor, k: int) -> torch.Tensor:
    return F.max_pool2d(x.permute(0, 3, 1, 2), k, k).permute(0, 2, 3, 1)


class MultiScaleAttention(nn.Module):
    def __init__(self, dim: int, dim_out: int, heads: int, q_stride: int | None):
        super().__init__()
        self.dim_out, self.heads, self.q_stride = dim_out, heads, q_stride
        self.qkv = LoRALinear(dim, dim_out * 3)
        self.proj = LoRALinear(dim_out, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, _ = x.shape
        qkv = self.qkv(x).reshape(b, h * w, 3, self.heads, -1)
        q, k, v = torch.unbind(qkv, 2)
        if self.q_stride:
            q = pool_nhwc(q.reshape(b, h, w, -1), self.q_stride)
            h, w = q.shape[1:3]
            q = q.reshape(b, h * w, self.heads, -1)
        out = sdpa(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        out = out.transpose(1, 2).reshape(b, h, w, -1)
        return self.proj(out)


class MLP(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.layers = nn.ModuleList([LoRALinear(dim, hidden), LoRALinear(hidden, dim)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers[1](F.gelu(self.layers[0](x)))


class MultiScaleBlock(nn.Module):
    def __init__(self, dim: int, dim_out: int, heads: int, window: int, q_stride: int | None,
                 mlp_ratio: float):
        super().__init__()
        self.window, self.q_stride = window, q_stride
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = MultiScaleAttention(dim, dim_out, heads, q_stride)
        self.norm2 = nn.LayerNorm(dim_out, eps=1e-6)
        self.mlp = MLP(dim_out, int(dim_out * mlp_ratio))
        self.proj = LoRALinear(dim, dim_out) if dim != dim_out else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.norm1(x)
        if self.proj is not None:
            shortcut = self.proj(x)
            if self.q_stride:
                shortcut = pool_nhwc(shortcut, self.q_stride)
        ws = self.window
        if ws > 0:
            h, w = x.shape[1:3]
            x, pad_hw = window_partition(x, ws)
        x = self.attn(x)
        if ws > 0:
            if self.q_stride:
                ws //= self.q_stride
                h, w = shortcut.shape[1:3]
                pad_hw = (h + (ws - h % ws) % ws, w + (ws - w % ws) % ws)
            x = window_unpartition(x, ws, pad_hw, (h, w))
        x = shortcut + x
        return x + self.mlp(self.norm2(x))


class Hiera(nn.Module):
    def __init__(self, cfg: dict):
        super().__init__()
        c = cfg["embed_dim"]
        self.patch_embed = nn.Conv2d(3, c, 7, stride=4, padding=3)
        bh, bw = cfg["window_pos_embed_bkg_spatial_size"]
        ws0 = cfg["window_spec"][0]
        self.pos_embed = nn.Parameter(torch.randn(1, c, bh, bw) * 0.02)
        self.pos_embed_window = nn.Parameter(torch.randn(1, c, ws0, ws0) * 0.02)
        stages = cfg["stages"]
        ends = [sum(stages[: i + 1]) - 1 for i in range(len(stages))]
        q_pool_blocks = [e + 1 for e in ends[:-1]][: cfg["q_pool"]]
        self.stage_ends = ends
        dim, heads, cur_stage = c, cfg["num_heads"], 1
        blocks = []
        for i in range(sum(stages)):
            dim_out = dim
            # The window lags one block behind the stage (as in SAM2's Hiera.__init__).
            window = cfg["window_spec"][cur_stage - 1]
            if i in cfg["global_att_blocks"]:
                window = 0
            if i - 1 in ends:
                dim_out = int(dim * cfg["dim_mul"])
                heads = int(heads * cfg["head_mul"])
                cur_stage += 1
            q_stride = cfg["q_stride"][0] if i in q_pool_blocks else None
            blocks.append(MultiScaleBlock(dim, dim_out, heads, window, q_stride,
                                          cfg["mlp_ratio"]))
            dim = dim_out
        self.blocks = nn.ModuleList(blocks)

    def pos(self, h: int, w: int) -> torch.Tensor:
        bg = F.interpolate(self.pos_embed, size=(h, w), mode="bicubic")
        win = self.pos_embed_window
        bg = bg + win.tile([a // b for a, b in zip(bg.shape, win.shape)])
        return bg.permute(0, 2, 3, 1)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.patch_embed(x).permute(0, 2, 3, 1)
        x = x + self.pos(*x.shape[1:3])
        outs = []
        for i, blk in enumerate(self.blocks):
            x = blk(x)
            if i in self.stage_ends:
                outs.append(x.permute(0, 3, 1, 2))
        return outs


class FpnNeck(nn.Module):
    """Lateral 1x1 convs to d_model; nearest x2 top-down sums at the listed levels."""

    def __init__(self):
        super().__init__()
        self.convs = nn.ModuleList([nn.Conv2d(c, D_MODEL, 1) for c in NECK_CHANNELS])

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        n = len(self.convs) - 1
        out: list[torch.Tensor | None] = [None] * len(xs)
        prev = None
        for i in range(n, -1, -1):
            lateral = self.convs[n - i](xs[i])
            if i in FPN_TOP_DOWN_LEVELS and prev is not None:
                prev = lateral + F.interpolate(prev.float(), scale_factor=2.0, mode="nearest")
            else:
                prev = lateral
            out[i] = prev
        return out[:-1]  # scalp = 1


class Segmenter(nn.Module):
    def __init__(self):
        super().__init__()
        self.trunk = Hiera(TINY)
        self.neck = FpnNeck()
        self.conv1 = nn.Conv2d(D_MODEL, 128, 3, padding=1)
        self.conv2 = nn.Conv2d(128, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        feat = self.neck(self.trunk(x))[2]  # stride 16
        logits = self.conv2(F.relu(self.conv1(feat)))
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


def dice_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1e-5) -> torch.Tensor:
    p = torch.sigmoid(logits)
    dims = tuple(range(2, p.ndim))
    inter = (p * target).sum(dims)
    denom = p.sum(dims) + target.sum(dims)
    return (1.0 - (2.0 * inter + smooth) / (denom + smooth)).mean()


def build(mode: str, device: torch.device) -> tuple[Segmenter, list[nn.Parameter]]:
    model = Segmenter().to(device)
    for p in model.trunk.parameters():
        p.requires_grad_(False)
    for p in model.neck.parameters():
        p.requires_grad_(False)
    if mode == "lora":
        for m in model.trunk.modules():
            if isinstance(m, LoRALinear):
                m.add_lora(4, 32.0, 0.05)
        model.to(device)
    trainable = [p for p in model.parameters() if p.requires_grad]
    return model, trainable


def timed(fn, steps: int, warmup: int, device: torch.device) -> list[float]:
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return times


def profile_step(fn, device: torch.device) -> list[dict]:
    """torch.profiler op totals of one training step (after the timed ones): self time per
    aten op, ms, and call count, largest first. CPU time on CPU, CUDA time on a GPU."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=acts) as prof:
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
    rows = []
    for e in prof.key_averages():
        us = e.self_cuda_time_total if device.type == "cuda" else e.self_cpu_time_total
        if us > 0:
            rows.append({"name": e.key, "ms": us / 1000, "calls": e.count})
    return sorted(rows, key=lambda r: -r["ms"])


def run_mode(mode: str, args: argparse.Namespace, device: torch.device) -> dict:
    torch.manual_seed(0)
    model, trainable = build(mode, device)
    x = torch.randn(args.batch, 3, args.size, args.size, device=device)
    y = (torch.rand(args.batch, 1, args.size, args.size, device=device) > 0.5).float()
    opt = torch.optim.AdamW(trainable, lr=1e-4, weight_decay=0.01)
    cuda = device.type == "cuda"

    def forward() -> None:
        model.eval()
        with torch.no_grad():
            model(x)

    def train_step() -> None:
        model.train()
        loss = dice_loss(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=False)

    result = {"mode": mode, "trainable_params": sum(p.numel() for p in trainable)}
    for phase, fn in (("forward", forward), ("train_step", train_step)):
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
        t = timed(fn, args.steps, args.warmup, device)
        med = statistics.median(t)
        result[phase] = {
            "median_ms": med * 1000,
            "min_ms": min(t) * 1000,
            "samples": len(t),
            "images_per_sec": args.batch / med,
            "peak_bytes": torch.cuda.max_memory_allocated(device) if cuda else None,
        }
    if args.profile and mode == "lora":
        result["profile"] = profile_step(train_step, device)
    del model, opt
    if cuda:
        torch.cuda.empty_cache()
    return result


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--modes", default="head,lora")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--tf32", action="store_true", help="allow TF32 (default: strict fp32)")
    ap.add_argument("--profile", action="store_true",
                    help="add torch.profiler op totals of one LoRA training step")
    ap.add_argument("--threads", type=int, default=0,
                    help="torch.set_num_threads (default: torch's own choice)")
    args = ap.parse_args(argv)
    if args.size % 32:
        ap.error("--size must be a multiple of 32")
    torch.backends.cuda.matmul.allow_tf32 = args.tf32
    torch.backends.cudnn.allow_tf32 = args.tf32
    device = torch.device(args.device)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    report = {
        "peer": "pytorch-eager-fp32",
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "size": args.size,
        "batch": args.batch,
        "tf32": args.tf32,
        "threads": torch.get_num_threads(),
        "results": [run_mode(m, args, device) for m in args.modes.split(",") if m],
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
