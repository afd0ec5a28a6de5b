"""LLVM intrinsics (popcount, count-trailing-zeros) and the compile settings of every kernel.

Numba has no ``popcount`` builtin.
``popcount64(x)`` emits LLVM's ``llvm.ctpop.i64`` on a ``uint64`` and returns the count as ``int64``
(so that comparisons with signed integers stay integer comparisons: mixing ``uint64`` and ``int64``
in Numba promotes to float64). LLVM lowers it to the ``popcnt`` instruction, or to a vectorised
nibble-table sequence when the surrounding loop is vectorised.
"""

from __future__ import annotations

import os
from typing import Any

from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

__all__ = ["ctz64", "popcount64"]

def _start_thread_pool() -> None:
    """Start Numba's thread pool with ``OMP_WAIT_POLICY=PASSIVE`` unless the user chose a policy.

    Under OpenMP's default policy an idle worker spins, so with another busy process on the
    machine a parallel call waits for a descheduled thread: one query over 1M codes took 13.9 ms
    instead of 2.1 ms on 2 cores with the other one busy. The variable is read once, when the
    OpenMP runtime loads, so it is set only around the pool's start (other OpenMP users, such as
    torch's own runtime, keep their default). No effect if the pool had already started.
    """
    if "OMP_WAIT_POLICY" in os.environ:
        return
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    try:
        from numba.np.ufunc import parallel

        parallel._launch_threads()
    except Exception:  # noqa: BLE001 - a Numba without this hook: the pool starts on first use
        pass
    finally:
        del os.environ["OMP_WAIT_POLICY"]


_start_thread_pool()

_BL = 64  # codes per vectorised block: one uint64 bitmask holds a block's verdicts

#: Decorator of the small helpers called per scored code: they never allocate, so they are
#: compiled without Numba's reference counting. With it, every call would increment and
#: decrement each array argument atomically, which costs ~30 ns: more than the work itself.
_NO_REFCOUNT: dict[str, Any] = {"_nrt": False}
_leaf = njit(cache=True, nogil=True, **_NO_REFCOUNT)


@_leaf
def _split(u, n_parts, n):
    """(query, r0, r1) of work item u of a parallel loop over queries x n_parts parts of n rows."""
    per = (n + n_parts - 1) // n_parts
    r0 = min(n, (u % n_parts) * per)
    return u // n_parts, r0, min(n, r0 + per)


@intrinsic
def _popcount64(typingctx: Any, x: Any) -> Any:
    """Return the number of set bits of a ``uint64`` (as ``int64``).

    Use inside ``@njit`` code only.
    """
    if x != types.uint64:
        return None
    sig = types.int64(types.uint64)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        fn = builder.module.declare_intrinsic("llvm.ctpop", [ir.IntType(64)])
        return builder.call(fn, [args[0]])

    return sig, codegen


#: ``popcount64(x: uint64) -> int64`` (typed ``Any`` for static checkers: it is a Numba intrinsic).
popcount64: Any = _popcount64


@intrinsic
def _ctz64(typingctx: Any, x: Any) -> Any:
    """Index of the lowest set bit of a non-zero ``uint64`` (as ``int64``); undefined for 0."""
    if x != types.uint64:
        return None
    sig = types.int64(types.uint64)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        fn = builder.module.declare_intrinsic("llvm.cttz", [ir.IntType(64), ir.IntType(1)])
        return builder.call(fn, [args[0], ir.Constant(ir.IntType(1), 1)])

    return sig, codegen


#: ``ctz64(x: uint64) -> int64``: trailing zero count of a non-zero word (Numba intrinsic).
ctz64: Any = _ctz64
