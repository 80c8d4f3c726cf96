#!/usr/bin/env python3
"""
A small PyTorch Rev-MViT for side-by-side speed comparisons (dev-only; never a dependency of revgrad).

Written from the spec of PySlowFast's reversible MViT (the same math as src/models/mvit/), for the configs the
benchmarks use: conv attention pooling with LayerNorm, decomposed rel-pos (spatial + temporal), residual
pooling, fused or separate qkv, separate or joint abs pos, 2-D or 3-D patches, stage transitions with
concat / concat_linear / avg pre-Q fusion and the conv residual path, concat final fusion, no cls token.

Times one AdamW training step (forward, backward, optimizer) in two modes:
  store:      ordinary autograd (activations kept)
  reversible: a custom autograd.Function per reversible run that keeps only the outputs and rebuilds inputs
              in backward (PySlowFast's RevBackProp)

Usage: python3 bench/torch_revmvit.py CONFIG.json --batch 8 [--device cpu|cuda] [--threads 1] [--steps 10] [--cpu-time]
       [--depth N]  (extra reversible blocks: sets DEPTH, keeps the stage transitions)
Prints one JSON object: {"store_ms": ..., "reversible_ms": ..., "params": ..., "peak_mb": {...}}.
"""
import argparse
import json
import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def round_width(width, mult, min_width=1, divisor=1):
    if not mult:
        return width
    width *= mult
    min_width = min_width or divisor
    out = max(min_width, int(width + divisor / 2) // divisor * divisor)
    if out < 0.9 * width:
        out += divisor
    return int(out)


def geometry(cfg):
    m, d = cfg["MVIT"], cfg["DATA"]
    depth = m["DEPTH"]
    stride = ([1] + m["PATCH_STRIDE"]) if m.get("PATCH_2D") else m["PATCH_STRIDE"]
    grid = [d["NUM_FRAMES"] // stride[0], d["TRAIN_CROP_SIZE"] // stride[1], d["TRAIN_CROP_SIZE"] // stride[2]]
    kern = m.get("POOL_KVQ_KERNEL")
    sq = {e[0]: e[1:] for e in m.get("POOL_Q_STRIDE", [])}
    skv = {}
    if m.get("POOL_KV_STRIDE_ADAPTIVE"):
        kv = list(m["POOL_KV_STRIDE_ADAPTIVE"])
        for i in range(depth):
            if i in sq:
                kv = [max(kv[j] // sq[i][j], 1) for j in range(3)]
            skv[i] = list(kv)
    else:
        skv = {e[0]: e[1:] for e in m.get("POOL_KV_STRIDE", [])}
    dim_mul = [1.0] * (depth + 1)
    head_mul = [1.0] * (depth + 1)
    for i, v in m.get("DIM_MUL", []):
        dim_mul[i] = v
    for i, v in m.get("HEAD_MUL", []):
        head_mul[i] = v
    buffers = m["REV"]["BUFFER_LAYERS"]
    prequ = m["REV"]["PRE_Q_FUSION"]
    layers = []
    heads, dim, thw = m["NUM_HEADS"], m["EMBED_DIM"], list(grid)
    for i in range(depth):
        heads = round_width(heads, head_mul[i])
        dim = round_width(dim, dim_mul[i - 1] if i > 0 else 1.0, divisor=heads)
        dim_out = round_width(dim, dim_mul[i], divisor=round_width(heads, head_mul[i + 1]))
        kind = "transition" if i in buffers else "reversible"
        mult = 2 if kind == "transition" and "concat" in prequ else 1

        def pool(s):
            if s is None:
                return None
            k = kern if kern else [x + 1 if x > 1 else x for x in s]
            if math.prod(k) == 1 and math.prod(s) == 1:
                return None
            return (k, s, [x // 2 for x in k])

        layers.append(dict(kind=kind, dim_in=dim * mult, dim_out=dim_out, heads=heads, thw=list(thw),
                           pool_q=pool(sq.get(i)), pool_kv=pool(skv.get(i)), sq=sq.get(i), skv=skv.get(i)))
        if i in sq:
            thw = [thw[j] // sq[i][j] for j in range(3)]
    return grid, layers, dim_out


class Fusion(nn.Module):
    def __init__(self, mode, dim):
        super().__init__()
        self.mode = mode
        if "concat_linear" in mode:
            parts = mode.split("_")
            ratio = 1.0 if len(parts) == 2 else float(parts[2])
            self.ln = nn.LayerNorm(dim) if mode.startswith("ln+") else None
            self.fc1 = nn.Linear(dim, int(dim * ratio))
            self.fc2 = nn.Linear(int(dim * ratio), dim)

    def forward(self, x):
        if self.mode == "concat":
            return x
        if "concat_linear" in self.mode:
            h = self.ln(x) if self.ln is not None else x
            return self.fc2(F.gelu(self.fc1(h))) + x
        a, b = torch.chunk(x, 2, dim=2)
        return {"add": a + b, "avg": (a + b) / 2, "max": torch.maximum(a, b), "min": torch.minimum(a, b)}[self.mode]


def rel_index(q, k):
    qr, kr = max(k / q, 1.0), max(q / k, 1.0)
    return (torch.arange(q)[:, None] * qr - torch.arange(k)[None, :] * kr + (k - 1) * kr).long()


class Attention(nn.Module):
    def __init__(self, cfg, L):
        super().__init__()
        m = cfg["MVIT"]
        self.L, self.heads, self.dim_out = L, L["heads"], L["dim_out"]
        dh = L["dim_out"] // L["heads"]
        self.scale = dh ** -0.5
        self.separate = m.get("SEPARATE_QKV", False)
        bias = m.get("QKV_BIAS", True)
        if self.separate:
            self.q, self.k, self.v = (nn.Linear(L["dim_in"], L["dim_out"], bias=bias) for _ in range(3))
        else:
            self.qkv = nn.Linear(L["dim_in"], 3 * L["dim_out"], bias=bias)
        self.proj = nn.Linear(L["dim_out"], L["dim_out"])
        self.pools = nn.ModuleDict()
        self.norms = nn.ModuleDict()
        for name, spec in (("q", L["pool_q"]), ("k", L["pool_kv"]), ("v", L["pool_kv"])):
            if spec is not None:
                k, s, p = spec
                self.pools[name] = nn.Conv3d(dh, dh, k, s, p, groups=dh, bias=False)
                self.norms[name] = nn.LayerNorm(dh, eps=1e-6)
        self.rel_s, self.rel_t = m.get("REL_POS_SPATIAL", False), m.get("REL_POS_TEMPORAL", False)
        self.residual = m.get("RESIDUAL_POOLING", False)
        size = L["thw"][1]
        qs = size // L["sq"][1] if L["sq"] else size
        ks = size // L["skv"][1] if L["skv"] else size
        if self.rel_s:
            self.rel_h = nn.Parameter(torch.randn(2 * max(qs, ks) - 1, dh) * 0.02)
            self.rel_w = nn.Parameter(torch.randn(2 * max(qs, ks) - 1, dh) * 0.02)
        if self.rel_t:
            self.rel_tt = nn.Parameter(torch.randn(2 * L["thw"][0] - 1, dh) * 0.02)

    def pool(self, t, name, thw):
        if name not in self.pools:
            return t, thw
        B, h, L, C = t.shape
        t = t.reshape(B * h, *thw, C).permute(0, 4, 1, 2, 3)
        t = self.pools[name](t)
        thw = list(t.shape[2:])
        t = t.reshape(B, h, C, -1).transpose(2, 3)
        return self.norms[name](t), thw

    def forward(self, x):
        B, N, _ = x.shape
        thw = self.L["thw"]
        if self.separate:
            q, k, v = (lin(x).reshape(B, N, self.heads, -1).transpose(1, 2) for lin in (self.q, self.k, self.v))
        else:
            q, k, v = self.qkv(x).reshape(B, N, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        q, qs = self.pool(q, "q", thw)
        k, ks = self.pool(k, "k", thw)
        v, _ = self.pool(v, "v", thw)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        (qt, qh, qw), (kt, kh, kw) = qs, ks
        dh = q.shape[-1]
        rq = q.reshape(B, self.heads, qt, qh, qw, dh)
        if self.rel_s or self.rel_t:
            a = attn.view(B, self.heads, qt, qh, qw, kt, kh, kw)
            if self.rel_s:
                Rh = self.rel_h[rel_index(qh, kh)]
                Rw = self.rel_w[rel_index(qw, kw)]
                a = a + torch.einsum("bythwc,hkc->bythwk", rq, Rh)[:, :, :, :, :, None, :, None]
                a = a + torch.einsum("bythwc,wkc->bythwk", rq, Rw)[:, :, :, :, :, None, None, :]
            if self.rel_t:
                Rt = self.rel_tt[rel_index(qt, kt)]
                a = a + torch.einsum("bythwc,tkc->bythwk", rq, Rt)[:, :, :, :, :, :, None, None]
            attn = a.reshape(B, self.heads, qt * qh * qw, kt * kh * kw)
        x = attn.softmax(dim=-1) @ v
        if self.residual:
            x = x + q
        return self.proj(x.transpose(1, 2).reshape(B, -1, self.dim_out))


class Branches(nn.Module):
    def __init__(self, cfg, L):
        super().__init__()
        d, hid = L["dim_out"], int(L["dim_out"] * cfg["MVIT"]["MLP_RATIO"])
        self.fnorm = nn.LayerNorm(L["dim_in"], eps=1e-6)
        self.attn = Attention(cfg, L)
        self.gnorm = nn.LayerNorm(d, eps=1e-6)
        self.fc1, self.fc2 = nn.Linear(d, hid), nn.Linear(hid, d)

    def F(self, x):
        return self.attn(self.fnorm(x))

    def G(self, x):
        return self.fc2(F.gelu(self.fc1(self.gnorm(x))))


class Transition(Branches):
    def __init__(self, cfg, L):
        super().__init__(cfg, L)
        self.fuse = Fusion(cfg["MVIT"]["REV"]["PRE_Q_FUSION"], L["dim_in"])
        self.res_proj = nn.Linear(L["dim_in"], L["dim_out"]) if L["dim_in"] != L["dim_out"] else None

    def forward(self, x):
        x = self.fuse(x)
        res = self.res_proj(x) if self.res_proj is not None else x
        B, N, C = res.shape
        h = self.L_heads
        res, _ = self.attn.pool(res.reshape(B, N, h, C // h).transpose(1, 2), "q", self.attn.L["thw"])
        res = res.transpose(1, 2).reshape(B, -1, C)
        x = res + self.F(x)
        return x + self.G(x)


class RevRun(torch.autograd.Function):
    """Keeps only the outputs; backward rebuilds each block's inputs (X2 = Y2 - G(Y1), X1 = Y1 - F(X2))."""

    @staticmethod
    def forward(ctx, x, blocks):
        with torch.no_grad():
            x1, x2 = torch.chunk(x, 2, dim=-1)
            for b in blocks:
                x1 = x1 + b.F(x2)
                x2 = x2 + b.G(x1)
        ctx.blocks = blocks
        ctx.save_for_backward(x1, x2)
        return torch.cat([x1, x2], dim=-1)

    @staticmethod
    def backward(ctx, dy):
        y1, y2 = ctx.saved_tensors
        dy1, dy2 = torch.chunk(dy, 2, dim=-1)
        for b in reversed(ctx.blocks):
            with torch.enable_grad():
                y1 = y1.detach().requires_grad_(True)
                g = b.G(y1)
                g.backward(dy2)
            with torch.no_grad():
                x2 = y2 - g
                dy1 = dy1 + y1.grad
            with torch.enable_grad():
                x2 = x2.detach().requires_grad_(True)
                f = b.F(x2)
                f.backward(dy1)
            with torch.no_grad():
                x1 = y1 - f
                dy2 = dy2 + x2.grad
            y1, y2 = x1.detach(), x2.detach()
        return torch.cat([dy1, dy2], dim=-1), None


class RevMViT(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        m, d = cfg["MVIT"], cfg["DATA"]
        grid, layers, final = geometry(cfg)
        self.grid = grid
        cin = d["INPUT_CHANNEL_NUM"][0]
        if m.get("PATCH_2D"):
            self.patch = nn.Conv2d(cin, m["EMBED_DIM"], m["PATCH_KERNEL"], m["PATCH_STRIDE"], m["PATCH_PADDING"])
        else:
            self.patch = nn.Conv3d(cin, m["EMBED_DIM"], m["PATCH_KERNEL"], m["PATCH_STRIDE"], m["PATCH_PADDING"])
        T, H, W = grid
        self.sep = m.get("SEP_POS_EMBED", False)
        if self.sep:
            self.pos_s = nn.Parameter(torch.randn(1, H * W, m["EMBED_DIM"]) * 0.02)
            self.pos_t = nn.Parameter(torch.randn(1, T, m["EMBED_DIM"]) * 0.02)
        else:
            self.pos = nn.Parameter(torch.randn(1, T * H * W, m["EMBED_DIM"]) * 0.02)
        self.layers = nn.ModuleList()
        for L in layers:
            mod = Transition(cfg, L) if L["kind"] == "transition" else Branches(cfg, L)
            mod.kind = L["kind"]
            mod.L_heads = L["heads"]
            self.layers.append(mod)
        self.norm = nn.LayerNorm(2 * final, eps=1e-6)
        self.head = nn.Linear(2 * final, cfg["MODEL"]["NUM_CLASSES"])
        self.mode = "store"

    def run(self, x, blocks):
        x = torch.cat([x, x], dim=-1)
        if self.mode == "reversible":
            return RevRun.apply(x, blocks)
        x1, x2 = torch.chunk(x, 2, dim=-1)
        for b in blocks:
            x1 = x1 + b.F(x2)
            x2 = x2 + b.G(x1)
        return torch.cat([x1, x2], dim=-1)

    def forward(self, x):
        x = self.patch(x).flatten(2).transpose(1, 2)
        T, H, W = self.grid
        if self.sep:
            x = x + self.pos_s.repeat(1, T, 1) + torch.repeat_interleave(self.pos_t, H * W, dim=1)
        else:
            x = x + self.pos
        run = []
        for layer in self.layers:
            if layer.kind == "reversible":
                run.append(layer)
                continue
            x = self.run(x, run)
            run = []
            x = layer(x)
        x = self.run(x, run)
        return self.head(self.norm(x).mean(1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("config")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--depth", type=int, default=0)
    ap.add_argument("--modes", default="store,reversible")
    ap.add_argument("--cpu-time", action="store_true", help="time steps by process CPU time (all threads) instead of wall time")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    cfg = json.load(open(a.config))
    if a.depth:
        cfg["MVIT"]["DEPTH"] = a.depth
    torch.manual_seed(0)
    model = RevMViT(cfg).to(a.device)
    d = cfg["DATA"]
    shape = [a.batch, d["INPUT_CHANNEL_NUM"][0]] + ([] if cfg["MVIT"].get("PATCH_2D") else [d["NUM_FRAMES"]]) + [d["TRAIN_CROP_SIZE"]] * 2
    x = torch.randn(*shape, device=a.device)
    y = torch.randint(0, cfg["MODEL"]["NUM_CLASSES"], (a.batch,), device=a.device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    out = {"params": sum(p.numel() for p in model.parameters()), "device": a.device, "batch": a.batch, "threads": a.threads}
    cuda = a.device.startswith("cuda")
    clock = time.process_time if a.cpu_time else time.perf_counter
    for mode in a.modes.split(","):
        model.mode = mode

        def step():
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            if cuda:
                torch.cuda.synchronize()

        for _ in range(3):
            step()
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        times = []
        for _ in range(a.steps):
            t0 = clock()
            step()
            times.append((clock() - t0) * 1000)
        times.sort()
        out[f"{mode}_ms"] = times[len(times) // 2]
        out[f"{mode}_min_ms"] = times[0]
        if cuda:
            out.setdefault("peak_mb", {})[mode] = torch.cuda.max_memory_allocated() / 2**20
    print(json.dumps(out))


if __name__ == "__main__":
    main()
