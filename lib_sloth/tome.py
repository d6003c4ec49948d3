"""ToMe bipartite soft matching on a 2D token grid: plan once, then merge and unmerge with closures.

The plan (`match`) splits the h x w grid into sx x sy cells, makes one token of every whole cell
a destination (dst) and every other token a source (src), and finds, for each src, its most
similar dst by cosine similarity. `Matching.merging(r)` turns that plan into a pair of closures:
`merge` averages the r most similar src tokens into their dst, `unmerge` gives each merged src
its dst's value back. Several merge strengths can share one plan (AgentSD's agent tokens are a
second, stronger merge of the same matching), which is why the plan and the strength are separate.

Semantics follow tomesd 0.1.3 (`bipartite_soft_matching_random2d`): same dst choice for the same
generator state, same similarity, same "top-r by best score" rule, same mean, and the same order
of src and dst tokens (see `_partition`), so the merged sequence is tomesd's row for row.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Tuple

import torch

Merge = Callable[[torch.Tensor], torch.Tensor]

# Above this many similarity entries (B * src * dst) the best-dst search runs in chunks of src
# rows, so the full score matrix (up to ~400 MB at 1024² with 2x2 cells) is never materialised.
_SCORE_CHUNK = 1 << 24


@dataclass(frozen=True)
class Matching:
    """One layer's bipartite plan. Index tensors live on the metric's device.

    src_pos [S], dst_pos [D]: grid positions (row-major) of src and dst tokens, N = S + D.
    order [B, S]: src indices (into src_pos) from most to least similar to their best dst.
    best [B, S]: index (into dst_pos) of each src token's most similar dst.
    """

    n: int
    src_pos: torch.Tensor
    dst_pos: torch.Tensor
    order: torch.Tensor
    best: torch.Tensor

    @property
    def max_merge(self) -> int:
        """At most every src token can be merged (S), and none when the grid has no whole cell."""
        return self.src_pos.shape[0] if self.dst_pos.shape[0] else 0

    def merging(self, r: int) -> Tuple[Merge, Merge]:
        """(merge, unmerge) removing min(r, S) tokens.

        merge:   x [B, N, C] -> [B, N - r, C]  (unmerged src tokens, then the D dst tokens)
        unmerge: y [B, N - r, C] -> [B, N, C]  (each token gets the row it was merged into)
        """
        r = max(0, min(int(r), self.max_merge))
        b = self.order.shape[0]
        merged = self.order[:, :r]
        merged_pos = self.src_pos[merged]  # [B, r]
        kept_pos = self.src_pos[self.order[:, r:]]  # [B, S - r]
        target = self.best.gather(1, merged)  # [B, r] index into dst
        kept = kept_pos.shape[1]
        # tokens averaged into each dst: itself plus its merged src, [B, D, 1]
        counts = torch.ones(b, self.dst_pos.shape[0], device=target.device).scatter_add_(
            1, target, torch.ones(b, r, device=target.device))[..., None]

        def merge(x: torch.Tensor) -> torch.Tensor:
            c = x.shape[-1]
            dst = x.index_select(1, self.dst_pos)
            if r:
                src = _rows(x, merged_pos)
                # the mean over the dst and every src merged into it (tomesd's "mean" mode); a sum
                # then one division is the same arithmetic and ~3x faster than scatter_reduce on CPU
                dst = dst.scatter_add(1, target[..., None].expand(b, r, c), src) / counts.to(dst.dtype)
            return torch.cat([_rows(x, kept_pos), dst], dim=1)

        where: list = []  # built on first use: an agent merge never needs it

        def unmerge(y: torch.Tensor) -> torch.Tensor:
            if not where:
                where.append(_unmerge_index(self.n, self.dst_pos, kept_pos, merged_pos, target, kept))
            return _rows(y, where[0])

        return merge, unmerge


def match(metric: torch.Tensor, h: int, w: int, sx: int, sy: int,
          generator: Optional[torch.Generator] = None) -> Matching:
    """Plan the bipartite matching of a token grid.

    metric [B, N, C] with N = h*w in row-major grid order: the features compared (cosine).
    sx, sy: cell width and height in tokens; rows/columns past the last whole cell are all src
        (the grid need not divide by the cell), and a grid without a whole cell has no dst.
    generator: picks the dst position inside each cell uniformly (one draw per cell, shared by
        the batch); None = the cell's first (top-left) position.
    """
    b, n, _ = metric.shape
    if n != h * w:
        raise ValueError(f"metric has {n} tokens, the grid {h}x{w} has {h * w}")
    device = metric.device
    with torch.no_grad():
        dst_pos, src_pos = _partition(h, w, sx, sy, device, generator)
        unit = metric / metric.norm(dim=-1, keepdim=True)
        best_score, best = _best_dst(unit.index_select(1, src_pos), unit.index_select(1, dst_pos))
        order = best_score.argsort(dim=-1, descending=True)
    return Matching(n, src_pos, dst_pos, order, best)


def bipartite_soft_matching(metric: torch.Tensor, h: int, w: int, sx: int, sy: int, r: int,
                            generator: Optional[torch.Generator] = None) -> Tuple[Merge, Merge]:
    """match(...).merging(r): tomesd's entry point, for callers that need one strength."""
    return match(metric, h, w, sx, sy, generator).merging(r)


def _partition(h: int, w: int, sx: int, sy: int, device, generator) -> Tuple[torch.Tensor, torch.Tensor]:
    """(dst_pos [D], src_pos [S]) grid positions; D = (h // sy) * (w // sx) whole cells."""
    ch, cw = h // sy, w // sx
    if generator is None:
        pick = torch.zeros(ch, cw, dtype=torch.long)
    else:
        # drawn on the generator's device, like tomesd, so one seed gives one choice everywhere
        pick = torch.randint(sy * sx, (ch, cw), generator=generator, device=generator.device)
    pick = pick.to(device)
    rows = torch.arange(ch, device=device)[:, None] * sy + pick // sx
    cols = torch.arange(cw, device=device)[None, :] * sx + pick % sx
    # dst flagged -1, src 0, in an int64 [1, N, 1] tensor sorted along dim 1: dst then src, in the
    # order tomesd 0.1.3 gets from the same (unstable) argsort. Not grid order, but with the same
    # order every GEMM of the matching and of attention sees the same rows as tomesd's, so results
    # are bit-identical to it, not only equal up to the summation order. No host sync.
    flags = torch.zeros(h * w, dtype=torch.int64, device=device)
    flags[(rows * w + cols).flatten()] = -1
    split = flags.view(1, -1, 1).argsort(dim=1).view(-1)
    d = ch * cw
    return split[:d], split[d:]


def _best_dst(src: torch.Tensor, dst: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """src [B, S, C], dst [B, D, C] (unit vectors) -> (best score [B, S], best dst index [B, S])."""
    b, s, _ = src.shape
    d = dst.shape[1]
    dst_t = dst.transpose(-1, -2)
    if d == 0:
        empty = src.new_empty(b, s)
        return empty, empty.long()
    if b * s * d <= _SCORE_CHUNK:
        return (src @ dst_t).max(dim=-1)
    step = max(1, _SCORE_CHUNK // (b * d))
    parts = [(src[:, i:i + step] @ dst_t).max(dim=-1) for i in range(0, s, step)]
    return torch.cat([p.values for p in parts], 1), torch.cat([p.indices for p in parts], 1)


def _rows(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x [B, N, C], index [B, K] (or [K]) -> x[b, index[b]] as [B, K, C].

    Row copies through one flat index_select: faster than an element-wise gather on [B, K, C].
    """
    b, n, c = x.shape
    if index.dim() == 1:
        return x.index_select(1, index)
    offsets = torch.arange(b, device=x.device)[:, None] * n
    return x.reshape(b * n, c).index_select(0, (index + offsets).flatten()).view(b, -1, c)


def _unmerge_index(n: int, dst_pos, kept_pos, merged_pos, target, kept: int) -> torch.Tensor:
    """[B, N]: for every grid position, its row in the merged sequence (kept src | dst)."""
    b = kept_pos.shape[0]
    where = torch.empty(b, n, dtype=torch.long, device=dst_pos.device)
    where[:, dst_pos] = kept + torch.arange(dst_pos.shape[0], device=dst_pos.device)
    where.scatter_(1, kept_pos, torch.arange(kept, device=dst_pos.device).expand(b, kept))
    where.scatter_(1, merged_pos, kept + target)
    return where


def merged_by_tomesd(block: torch.nn.Module) -> bool:
    """Whether tomesd (or the original AgentSD) has swapped this transformer block's class: the
    WebUI's own token merging is on for it.

    Their `ToMeBlock` merges norm1(x) before attn1 is called; `_tome_info` alone is not proof,
    because tomesd's remove_patch leaves that attribute behind.
    """
    return type(block).__name__ == "ToMeBlock"
