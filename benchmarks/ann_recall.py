"""Recall@10 and query time of the ANN backend of ``sfumato search`` against exact search.

    python -m benchmarks.ann_recall --rows 100000 --dim 512 --queries 1000

The rows stand in for CLIP image embeddings: unit vectors drawn around ``--clusters`` random
centres (real embedding sets are clustered, which is harder for a graph than uniform noise is
easy), the queries are rows perturbed by noise of the same scale (a caption near its images).
Exact search is the index's matrix product; the ANN is ``sfumato_clip.ann.AnnGraph`` (faiss
HNSW, M = 32, efConstruction = 200) at several ``efSearch`` beams. Prints a markdown table and,
with ``--out``, writes JSON. ``--index FILE`` measures on the embeddings of a search index of your
own images instead. Needs ``pip install 'sfumato[ann]'``; runs on the CPU.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F


def clustered(rows: int, dim: int, clusters: int, spread: float, generator: torch.Generator) -> torch.Tensor:
    centres = F.normalize(torch.randn(clusters, dim, generator=generator), dim=-1)
    members = torch.randint(0, clusters, (rows,), generator=generator)
    return F.normalize(centres[members] + spread * torch.randn(rows, dim, generator=generator) / dim**0.5, dim=-1)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--clusters", type=int, default=1000)
    parser.add_argument("--spread", type=float, default=1.0, help="noise norm around a centre, relative to 1")
    parser.add_argument("--ef-search", type=int, nargs="+", default=[16, 32, 64, 128, 256])
    parser.add_argument("--threads", type=int, default=1, help="torch and faiss threads (default 1)")
    parser.add_argument("--index", type=Path, help="use the embeddings of this search index (your own images) "
                        "instead of stand-ins; --rows and --dim are then ignored")
    parser.add_argument("--out", type=Path, help="write the figures as JSON")
    args = parser.parse_args(argv)

    import faiss

    from sfumato_clip.ann import AnnGraph

    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(0)
    if args.index:
        from sfumato_clip import SearchIndex

        data = F.normalize(SearchIndex.load(args.index).embeddings.float(), dim=-1)
        args.rows, args.dim = data.shape
        if args.rows <= 10:
            parser.error(f"--index {args.index}: {args.rows} rows; recall@10 needs more than 10")
    else:
        data = clustered(args.rows, args.dim, args.clusters, args.spread, generator)
    picks = torch.randint(0, args.rows, (args.queries,), generator=generator)
    queries = F.normalize(data[picks] + args.spread * torch.randn(args.queries, args.dim, generator=generator)
                          / args.dim**0.5, dim=-1)

    start = time.perf_counter()
    exact = torch.stack([(data @ q).topk(10).indices for q in queries])  # one query at a time, as the CLI does
    exact_ms = (time.perf_counter() - start) / args.queries * 1e3

    start = time.perf_counter()
    graph = AnnGraph.build(data)
    build_s = time.perf_counter() - start

    results = []
    for ef in args.ef_search:
        graph.ef_search = ef
        start = time.perf_counter()
        found = [graph.search(q[None], 10)[1][0] for q in queries]
        query_ms = (time.perf_counter() - start) / args.queries * 1e3
        recall = sum(len(set(e.tolist()) & set(f.tolist())) for e, f in zip(exact, found)) / (10 * args.queries)
        results.append({"ef_search": ef, "recall@10": recall, "query_ms": query_ms})

    report = {"index": str(args.index) if args.index else None, "rows": args.rows, "dim": args.dim, "queries": args.queries, "clusters": args.clusters,
              "spread": args.spread, "threads": args.threads, "exact_query_ms": exact_ms, "hnsw_build_s": build_s, "ann": results}
    print(f"{args.rows:,} rows x {args.dim}, {args.queries} queries, {args.threads} thread(s); "
          f"HNSW build {build_s:.1f} s; exact search {exact_ms:.2f} ms a query\n")
    print("| efSearch | recall@10 | ms a query | speed-up |\n|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['ef_search']} | {r['recall@10']:.3f} | {r['query_ms']:.3f} | {exact_ms / r['query_ms']:.0f}x |")
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
