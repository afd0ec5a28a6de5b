"""Small LLVM intrinsics for the Numba kernels: popcount, count-trailing-zeros, prefetch.

Numba has no ``popcount`` builtin.
``popcount64(x)`` emits LLVM's ``llvm.ctpop.i64`` on a ``uint64`` and returns the count as ``int64``
(so that comparisons with signed integers stay integer comparisons: mixing ``uint64`` and ``int64``
in Numba promotes to float64). LLVM lowers it to the ``popcnt`` instruction, or to a vectorised
nibble-table sequence when the surrounding loop is vectorised.
"""

from __future__ import annotations

from typing import Any

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

__all__ = ["ctz64", "popcount64", "prefetch_row"]


@intrinsic
def _popcount64(typingctx: Any, x: Any) -> Any:
    """Number of set bits of a ``uint64`` (as ``int64``). Use inside ``@njit`` code only."""
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


@intrinsic
def _prefetch_row(typingctx: Any, arr: Any, row: Any) -> Any:
    """Hint the CPU to fetch row ``row`` of a 2-D array into cache (``llvm.prefetch``; no-op on
    platforms without it). Lets a loop over scattered rows overlap its cache misses."""
    if not isinstance(arr, types.Array) or arr.ndim != 2 or not isinstance(row, types.Integer):
        return None
    sig = types.void(arr, row)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        a = context.make_array(signature.args[0])(context, builder, args[0])
        stride0 = cgutils.unpack_tuple(builder, a.strides, 2)[0]
        i64 = ir.IntType(64)
        row64 = context.cast(builder, args[1], signature.args[1], types.int64)
        addr = builder.add(builder.ptrtoint(a.data, i64), builder.mul(row64, stride0))
        ptr = builder.inttoptr(addr, ir.IntType(8).as_pointer())
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [ir.IntType(8).as_pointer(), i32, i32, i32])
        fn = builder.module.declare_intrinsic("llvm.prefetch", fnty=fnty)
        # read access, high temporal locality, data cache
        builder.call(fn, [ptr, ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return sig, codegen


#: ``prefetch_row(arr2d, row) -> None`` (Numba intrinsic).
prefetch_row: Any = _prefetch_row
