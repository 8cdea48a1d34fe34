"""Gradient-alignment scoring: vectorised (torch.func vmap of grad) vs a per-candidate loop.

Same model, same candidates, same updates, measured side by side in one run:
  (a) one hospital's update;
  (b) one honest round: every hospital received the same model, so the vectorised path
      computes the candidates' gradients once and scores all updates with one matrix
      product, while the loop runs one backward pass per candidate and hospital;
  (c) the vectorised round at several chunk sizes (candidates whose gradients are held at once;
      the default is ``MAX_GRADIENT_CHUNK``, fewer for large models).

    python bench/grad_alignment.py [--candidates 128] [--hospitals 4] [--size 64] [--chunks 32,128]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from fl_mia.config import ModelConfig
from fl_mia.models import build_model, get_weights
from fl_mia.attacker.updates.signals import gradient_alignment, gradient_alignment_loop, update_vector


def timed(fn):
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", type=int, default=128)
    parser.add_argument("--hospitals", type=int, default=4)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--chunks", default="32,128", help="chunk sizes to time the vectorised round with")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build_model(ModelConfig(norm="groupnorm"), in_channels=1, classes=1)
    sent = get_weights(model)
    rng = np.random.default_rng(0)
    updates = [
        update_vector(model, sent, [w - 1e-3 * rng.standard_normal(w.shape).astype(w.dtype) for w in sent])
        for _ in range(args.hospitals)
    ]
    images = rng.standard_normal((args.candidates, 1, args.size, args.size)).astype(np.float32)
    masks = (rng.random((args.candidates, args.size, args.size)) > 0.9).astype(np.int64)
    kw = {"dice_weight": 1.0, "ce_weight": 1.0}

    gradient_alignment(model, updates[:1], images[:4], masks[:4], **kw)  # warm-up
    t_vec1, one = timed(lambda: gradient_alignment(model, updates[:1], images, masks, **kw))
    t_loop1, loop_one = timed(lambda: gradient_alignment_loop(model, updates[0], images, masks, **kw))
    t_vecK, many = timed(lambda: gradient_alignment(model, updates, images, masks, **kw))
    t_loopK, loop_many = timed(
        lambda: np.stack([gradient_alignment_loop(model, u, images, masks, **kw) for u in updates], axis=1)
    )
    assert np.allclose(one[:, 0], loop_one, atol=1e-4) and np.allclose(many, loop_many, atol=1e-4)
    n, k = args.candidates, args.hospitals
    print(f"{n} candidates of {args.size}×{args.size}, {sum(p.numel() for p in model.parameters()):,} parameters, "
          f"{args.threads} threads (results equal to 1e-4)")
    print(f"{'':34s}{'vectorised':>12s}{'loop':>10s}{'speed-up':>10s}")
    print(f"{'one update (s)':34s}{t_vec1:12.2f}{t_loop1:10.2f}{t_loop1 / t_vec1:9.2f}×")
    print(f"{f'one honest round, {k} hospitals (s)':34s}{t_vecK:12.2f}{t_loopK:10.2f}{t_loopK / t_vecK:9.2f}×")
    chunks = [int(c) for c in args.chunks.split(",")]
    seconds = {c: timed(lambda c=c: gradient_alignment(model, updates, images, masks, chunk_size=c, **kw))[0] for c in chunks}
    for c in chunks:
        print(f"{f'one honest round, chunk {c} (s)':34s}{seconds[c]:12.2f}{'':10s}{seconds[chunks[0]] / seconds[c]:9.2f}× chunk {chunks[0]}")


if __name__ == "__main__":
    main()
