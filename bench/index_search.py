"""Search latency and recall@10 of the IVF and HNSW indexes against exact search (vlfuse.index).

    nice -n 5 python bench/index_search.py                      # 100k and 1M vectors, dim 256
    python bench/index_search.py --sizes 20000 --queries 100    # a quick look

The vectors are synthetic unit vectors around `--clusters` centres (embeddings have such
structure; uniform noise has none and is the worst case for every ANN method). Queries are fresh
draws from the same mixture. Ground truth is exact inner-product search (IndexFlatIP). Every index
is made by vlfuse.index.vectors.create with the library's defaults, then IVF's nprobe and HNSW's
efSearch are swept. Latency is one query at a time (p50 / p99 over the queries) on one thread (indexes
are built on `--threads`); recall@10 = |ANN top 10 ∩ exact top 10| / 10, averaged over the queries.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

from vlfuse.index import vectors as fv
from vlfuse.index.vectors import IndexSettings

SEARCH_THREADS = 1
TRAIN_POINTS_PER_CELL = 64  # FAISS warns below 39; more only slows k-means here


def clustered(n: int, dim: int, clusters: int, spread: float, rng: np.random.Generator,
              centres: np.ndarray | None = None, chunk: int = 100_000) -> tuple[np.ndarray, np.ndarray]:
    centres = rng.standard_normal((clusters, dim)).astype(np.float32) if centres is None else centres
    out = np.empty((n, dim), np.float32)
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        x = centres[rng.integers(0, clusters, m)] + spread * rng.standard_normal((m, dim)).astype(np.float32)
        out[start: start + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out, centres


def one_at_a_time(index, queries: np.ndarray, k: int) -> tuple[np.ndarray, list[float]]:
    faiss = fv.import_faiss()
    building = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(SEARCH_THREADS)  # one query at a time: more threads only add synchronisation
    found, seconds = [], []
    for q in queries:
        clock = time.perf_counter()
        _, ids = index.search(q[None], k)
        seconds.append(time.perf_counter() - clock)
        found.append(ids[0])
    faiss.omp_set_num_threads(building)
    return np.stack(found), seconds


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f.tolist()) & set(t.tolist())) / len(t) for f, t in zip(found, truth)]))


def row(name: str, setting: str, build_s: float, found, seconds, truth) -> dict:
    ms = np.array(seconds) * 1000
    return {"index": name, "setting": setting, "build_s": round(build_s, 1), "recall@10": round(recall(found, truth), 4),
            "p50_ms": round(float(np.percentile(ms, 50)), 3), "p99_ms": round(float(np.percentile(ms, 99)), 3),
            "qps": round(len(ms) / (ms.sum() / 1000), 1)}


def bench_size(n: int, args, rng) -> list[dict]:
    data, centres = clustered(n, args.dim, args.clusters, args.spread, rng)
    queries, _ = clustered(args.queries, args.dim, args.clusters, args.spread, rng, centres)
    rows = []
    clock = time.perf_counter()
    exact = fv.create(IndexSettings("flat"), args.dim, data)
    exact.add(data)
    build = time.perf_counter() - clock
    truth, seconds = one_at_a_time(exact, queries, args.k)
    rows.append(row("flat (exact)", "-", build, truth, seconds, truth))
    del exact

    settings = IndexSettings("ivf")
    clock = time.perf_counter()
    # k-means on a sample (FAISS itself would sample 256 points a cell), then add everything
    sample = data[rng.choice(n, min(n, TRAIN_POINTS_PER_CELL * fv.default_nlist(n)), replace=False)]
    settings.nlist = fv.default_nlist(n)
    ivf = fv.create(settings, args.dim, sample)
    ivf.add(data)
    build = time.perf_counter() - clock
    for nprobe in sorted({settings.nprobe, *args.nprobe}):
        ivf.nprobe = nprobe
        found, seconds = one_at_a_time(ivf, queries, args.k)
        rows.append(row("ivf", f"nlist {settings.nlist}, nprobe {nprobe}" + (" (default)" if nprobe ==
                                                                               settings.nprobe else ""),
                        build, found, seconds, truth))
    del ivf

    settings = IndexSettings("hnsw")
    clock = time.perf_counter()
    hnsw = fv.create(settings, args.dim, data[:0])
    hnsw.add(data)
    build = time.perf_counter() - clock
    for ef in sorted({settings.ef_search, *args.ef_search}):
        hnsw.hnsw.efSearch = ef
        found, seconds = one_at_a_time(hnsw, queries, args.k)
        rows.append(row("hnsw", f"M {settings.m}, efSearch {ef}" + (" (default)" if ef == settings.ef_search else ""),
                        build, found, seconds, truth))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--clusters", type=int, default=1000)
    parser.add_argument("--spread", type=float, default=1.0, help="noise per dimension around a centre "
                        "(1.0: as far from its centre as the centre is from the origin)")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--nprobe", type=int, nargs="*", default=[1, 4, 16])
    parser.add_argument("--ef-search", type=int, nargs="*", default=[8, 16, 128])
    parser.add_argument("--threads", type=int, default=2, help="FAISS threads when building (search: 1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/bench_index_search.json"))
    args = parser.parse_args()
    faiss = fv.import_faiss()
    faiss.omp_set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    results = {"machine": platform.processor() or platform.machine(), "faiss": faiss.__version__,
               "build_threads": args.threads, "search_threads": SEARCH_THREADS, "dim": args.dim, "clusters": args.clusters, "spread": args.spread,
               "queries": args.queries, "sizes": {}}
    print("| vectors | index | setting | build s | recall@10 | p50 ms | p99 ms | queries/s |")
    print("|---|---|---|---|---|---|---|---|")
    for n in args.sizes:
        rows = bench_size(n, args, rng)
        results["sizes"][n] = rows
        for r in rows:
            print(f"| {n:,} | {r['index']} | {r['setting']} | {r['build_s']} | {r['recall@10']:.3f} | {r['p50_ms']} | "
                  f"{r['p99_ms']} | {r['qps']} |", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"Wrote {args.out}")


if __name__ == "__main__":
    main()
