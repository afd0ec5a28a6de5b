"""The Numba kernels behind :mod:`hashplug.rerank`, one module per primitive (FAISS's layering).

    intrinsics   popcount / count-trailing-zeros (LLVM), the block size, compile settings
    tables       per-query tables, exact asymmetric distance, quantised lower bound
    heap         bounded (distance, id, row) heap, per-shard merge, duplicate-id top-k
    asymmetric   exact pruned scans: exhaustive search, distance matrix
    candidates   rerank of given candidates (``rerank``, ``rerank_rows``)
    hamming      symmetric Hamming: distance matrix, top-C selection by counting
    two_stage    Hamming top-C then exact rerank, per query in one kernel

Each module imports only those above it. Inputs are checked in :mod:`hashplug.rerank`; these
functions trust them (shapes, dtypes, ranges), as the private names say.
"""
