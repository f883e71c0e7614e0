"""Compile every kernel variant the wrappers can launch for sm_90 with the real Triton compiler.

No GPU needed: ``triton.compile`` lowers to PTX and runs the bundled ptxas. Catches kernels that
run in the interpreter but fail to compile (unsupported ops, dtype mixes, dot shapes). Run by
test_kernels_compile.py in a fresh process without TRITON_INTERPRET; prints one line per kernel.
"""

import importlib
import os
import sys

assert not os.environ.get("TRITON_INTERPRET"), "run without TRITON_INTERPRET"

import triton  # noqa: E402
import triton.language as tl  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

ce, proj, sj, red, st = (importlib.import_module(f"influence_kernels.{m}")
                          for m in ("ce_head", "projection", "softmax_jacobian", "_reduce", "score_topk"))
F32, F64 = tl.float32, tl.float64


def build(fn, pointers, constants, num_warps=8, ones=()):
    """ones: int arguments equal to 1, which Triton specializes into constexprs at launch."""
    constants = constants | {name: 1 for name in ones}
    signature = {name: "constexpr" if name in constants else pointers.get(name, "i32") for name in fn.arg_names}
    triton.compile(ASTSource(fn, signature, constants), target=GPUTarget("cuda", 90, 32),
                   options={"num_warps": num_warps})
    print("compiled", fn.__name__, {k: str(v) for k, v in constants.items()}, flush=True)


def ce_variant(acc, one, atomic, bias, precision="ieee", ptr="fp32", ones=()):
    ptrs = {name: f"*{ptr}" for name in ("phi_ptr", "p_ptr", "v_ptr")}
    ptrs |= {"out_ptr": "*" + ("fp64" if acc == F64 else "fp32"), "inv_n": "*" + ("fp64" if acc == F64 else "fp32")}
    build(ce._ce_head_hvp_kernel, ptrs, dict(BLOCK_N=32 if acc == F64 else 64, BLOCK_C=16 if one else 64, BLOCK_D=32,
                                             ONE_C_BLOCK=one, BIAS=bias, ATOMIC=atomic, ACC=acc, PRECISION=precision),
          ones=ones)


def main():
    for one in (True, False):
        for atomic in (True, False):
            ce_variant(F32, one, atomic, bias=not one)
    ce_variant(F32, True, True, False, precision="tf32")
    ce_variant(F32, True, True, True, precision="tf32x3", ptr="bf16")
    ce_variant(F64, True, True, False, ptr="fp64")
    ce_variant(F64, False, False, True, ptr="fp64")
    ce_variant(F32, True, True, True, ones=("n", "C", "d", "s_fd", "s_pc", "s_vk", "s_vd", "s_od"))
    ce_variant(F32, False, False, False, ones=("D", "s_fn", "s_pn", "s_vc", "s_oc"))
    for t in ("fp32", "fp64"):
        build(red._sum_partials_kernel, {"part_ptr": "*" + t, "out_ptr": "*" + t}, dict(BLOCK=1024))
    build(red._sum_partials_kernel, {"part_ptr": "*fp32", "out_ptr": "*fp32"}, dict(BLOCK=1024), ones=("T", "M"))
    for acc, one in ((F32, True), (F32, False), (F64, True)):
        out = "*fp64" if acc == F64 else "*fp32"
        build(sj._softmax_jacobian_vp_kernel, {"p_ptr": "*fp16", "z_ptr": out, "out_ptr": out},
              dict(BLOCK_R=16, BLOCK_C=256, ONE_C_BLOCK=one, ACC=acc),
              ones=("R", "C", "n_p", "s_pc", "s_zc", "s_oc") if one else ("s_pr", "s_zr", "s_or"))
    for g, acc, gauss, precision in (("fp32", F32, False, "ieee"), ("fp32", F32, True, "ieee"),
                                     ("bf16", F32, False, "tf32"), ("fp64", F64, True, "ieee")):
        out = "*fp64" if acc == F64 else "*fp32"
        build(proj._project_kernel, {"g_ptr": "*" + g, "out_ptr": out},
              dict(BLOCK_N=32, BLOCK_P=32, BLOCK_K=64, GAUSSIAN=gauss, ACC=acc, PRECISION=precision),
              ones=("n", "p", "k", "s_gp", "s_ok", "blocks_per_split") if gauss else ("s_gn", "s_on", "s_os"))
    for t, kp, bd, ones in (("fp32", 16, 64, ()), ("bf16", 128, 16, ("m", "s_qd", "s_fd", "tiles_per_split")),
                            ("fp16", 16, 16, ("n", "d", "offset", "s_tm"))):
        build(st._score_topk_kernel, {"q_ptr": "*" + t, "f_ptr": "*" + t, "top_ptr": "*i64", "bot_ptr": "*i64"},
              dict(BLOCK_M=16, BLOCK_N=max(64, kp), BLOCK_D=bd, KP=kp), num_warps=4, ones=ones)
    print(f"ALL COMPILED (triton {triton.__version__})")


if __name__ == "__main__":
    sys.exit(main())
