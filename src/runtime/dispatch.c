/*
 * dispatch.c — kernel selection. The kernel lists (src/kernels/<family>/<family>.inc) expand
 * into one table per kernel type; a selector picks, for (op, dtype, isa), the entry of that ISA,
 * or steps down the chain avx512 -> avx2 -> scalar when a path lacks it. The choice depends on
 * the ISA and the sizes only (never on the thread count).
 */
#include <stddef.h>

#include "dispatch.h"

typedef nk_rownorm_fwd_entry fwd_entry;
typedef nk_rownorm_bwd_entry bwd_entry;

static const fwd_entry fwd_table[] = {
#define NK_UKERNEL_FWD(isa, op, dtype, fn) {isa, op, dtype, fn, #fn},
#define NK_UKERNEL_BWD(isa, op, dtype, fn)
#include "kernels/rownorm/rownorm.inc"
#undef NK_UKERNEL_FWD
#undef NK_UKERNEL_BWD
};

static const bwd_entry bwd_table[] = {
#define NK_UKERNEL_FWD(isa, op, dtype, fn)
#define NK_UKERNEL_BWD(isa, op, dtype, fn) {isa, op, dtype, fn, #fn},
#include "kernels/rownorm/rownorm.inc"
#undef NK_UKERNEL_FWD
#undef NK_UKERNEL_BWD
};

/* The path below `isa` in the priority chain, NK_ISA_AUTO past scalar. */
static nk_isa step_down(nk_isa isa) {
  switch (isa) {
    case NK_ISA_AVX512: return NK_ISA_AVX2;
    case NK_ISA_AVX2: return NK_ISA_SCALAR;
    default: return NK_ISA_AUTO;
  }
}

static const fwd_entry *find_fwd(nk_isa isa, nk_op op, nk_dtype dtype) {
  for (; isa != NK_ISA_AUTO; isa = step_down(isa))
    for (size_t i = 0; i < sizeof fwd_table / sizeof fwd_table[0]; i++)
      if (fwd_table[i].isa == isa && fwd_table[i].op == op && fwd_table[i].dtype == dtype)
        return &fwd_table[i];
  return NULL;
}

static const bwd_entry *find_bwd(nk_isa isa, nk_op op, nk_dtype dtype) {
  for (; isa != NK_ISA_AUTO; isa = step_down(isa))
    for (size_t i = 0; i < sizeof bwd_table / sizeof bwd_table[0]; i++)
      if (bwd_table[i].isa == isa && bwd_table[i].op == op && bwd_table[i].dtype == dtype)
        return &bwd_table[i];
  return NULL;
}

nk_rownorm_fwd_ukernel_fn nk__select_rownorm_fwd(nk_isa isa, nk_op op, nk_dtype dtype) {
  const fwd_entry *e = find_fwd(isa, op, dtype);
  return e ? e->fn : NULL;
}

nk_rownorm_bwd_ukernel_fn nk__select_rownorm_bwd(nk_isa isa, nk_op op, nk_dtype dtype) {
  const bwd_entry *e = find_bwd(isa, op, dtype);
  return e ? e->fn : NULL;
}

static const nk_softmax_entry softmax_table[] = {
#define NK_SOFTMAX_FWD(isa, algo, dtype, fn) {isa, NK_SMK_FWD, algo, dtype, (void (*)(void))fn, #fn},
#define NK_SOFTMAX_BWD(isa, dtype, fn) {isa, NK_SMK_BWD, NK_SOFTMAX_AUTO, dtype, (void (*)(void))fn, #fn},
#define NK_XENT(isa, dtype, fn) {isa, NK_SMK_XENT, NK_SOFTMAX_AUTO, dtype, (void (*)(void))fn, #fn},
#define NK_SIGMOID_FWD(isa, dtype, fn)                                                           \
  {isa, NK_SMK_SIGMOID_FWD, NK_SOFTMAX_AUTO, dtype, (void (*)(void))fn, #fn},
#define NK_SIGMOID_BWD(isa, dtype, fn)                                                           \
  {isa, NK_SMK_SIGMOID_BWD, NK_SOFTMAX_AUTO, dtype, (void (*)(void))fn, #fn},
#define NK_EXP(isa, fn) {isa, NK_SMK_EXP, NK_SOFTMAX_AUTO, NK_DTYPE_F32, (void (*)(void))fn, #fn},
#include "kernels/softmax/softmax.inc"
#undef NK_SOFTMAX_FWD
#undef NK_SOFTMAX_BWD
#undef NK_XENT
#undef NK_SIGMOID_FWD
#undef NK_SIGMOID_BWD
#undef NK_EXP
};

const nk_softmax_entry *nk__select_softmax(nk_isa isa, nk_softmax_kind kind,
                                           nk_softmax_algo algo, nk_dtype dtype) {
  for (; isa != NK_ISA_AUTO; isa = step_down(isa))
    for (size_t i = 0; i < sizeof softmax_table / sizeof softmax_table[0]; i++) {
      const nk_softmax_entry *e = &softmax_table[i];
      if (e->isa == isa && e->kind == kind && e->algo == algo && e->dtype == dtype) return e;
    }
  return NULL;
}

const char *nk_op_name(nk_op op) {
  switch (op) {
    case NK_OP_LAYERNORM_FWD: return "layernorm_fwd";
    case NK_OP_LAYERNORM_BWD: return "layernorm_bwd";
    case NK_OP_RMSNORM_FWD: return "rmsnorm_fwd";
    case NK_OP_RMSNORM_BWD: return "rmsnorm_bwd";
    case NK_OP_SOFTMAX_FWD: return "softmax_fwd";
    case NK_OP_SOFTMAX_BWD: return "softmax_bwd";
    case NK_OP_CROSS_ENTROPY: return "cross_entropy";
    case NK_OP_SIGMOID_ATTN_FWD: return "sigmoid_attn_fwd";
    case NK_OP_SIGMOID_ATTN_BWD: return "sigmoid_attn_bwd";
    case NK_OP_BATCHNORM_FWD: return "batchnorm_fwd";
    case NK_OP_BATCHNORM_BWD: return "batchnorm_bwd";
    case NK_OP_GROUPNORM_FWD: return "groupnorm_fwd";
    case NK_OP_GROUPNORM_BWD: return "groupnorm_bwd";
    case NK_OP_INSTANCENORM_FWD: return "instancenorm_fwd";
    case NK_OP_INSTANCENORM_BWD: return "instancenorm_bwd";
    case NK_OP_CRMSNORM_FWD: return "crmsnorm_fwd";
    case NK_OP_CRMSNORM_BWD: return "crmsnorm_bwd";
    case NK_OP_L1NORM_FWD: return "l1norm_fwd";
    case NK_OP_L1NORM_BWD: return "l1norm_bwd";
    case NK_OP_COUNT: break;
  }
  return "?";
}

const char *nk_kernel_name_ex(const nk_context *ctx, nk_op op, nk_dtype dtype) {
  const nk_isa isa = nk__context_isa(ctx);
  const nk_softmax_entry *se = NULL;
  switch (op) {
    case NK_OP_SOFTMAX_FWD:
      se = nk__select_softmax(isa, NK_SMK_FWD, nk__softmax_auto_algo((size_t)1 << 14, (size_t)1 << 14, dtype, 0),
                              dtype);
      return se ? se->name : NULL;
    case NK_OP_SOFTMAX_BWD: se = nk__select_softmax(isa, NK_SMK_BWD, NK_SOFTMAX_AUTO, dtype); break;
    case NK_OP_CROSS_ENTROPY: se = nk__select_softmax(isa, NK_SMK_XENT, NK_SOFTMAX_AUTO, dtype); break;
    case NK_OP_SIGMOID_ATTN_FWD:
      se = nk__select_softmax(isa, NK_SMK_SIGMOID_FWD, NK_SOFTMAX_AUTO, dtype);
      break;
    case NK_OP_SIGMOID_ATTN_BWD:
      se = nk__select_softmax(isa, NK_SMK_SIGMOID_BWD, NK_SOFTMAX_AUTO, dtype);
      break;
    case NK_OP_BATCHNORM_FWD:
    case NK_OP_BATCHNORM_BWD:
    case NK_OP_GROUPNORM_FWD:
    case NK_OP_GROUPNORM_BWD:
    case NK_OP_INSTANCENORM_FWD:
    case NK_OP_INSTANCENORM_BWD:
      return (unsigned)dtype <= NK_DTYPE_F16 ? nk__chnorm_kernels(ctx)->name : NULL;
    case NK_OP_CRMSNORM_FWD:
    case NK_OP_CRMSNORM_BWD:
    case NK_OP_L1NORM_FWD:
    case NK_OP_L1NORM_BWD: {
      if ((unsigned)dtype > NK_DTYPE_F16) return NULL;
      const nk_rowvar_kernels *k = nk__rowvar_kernels(isa);
      return op == NK_OP_CRMSNORM_FWD   ? k->crms_fwd_name[dtype]
             : op == NK_OP_CRMSNORM_BWD ? k->crms_bwd_name[dtype]
             : op == NK_OP_L1NORM_FWD   ? k->l1_fwd_name[dtype]
                                        : k->l1_bwd_name[dtype];
    }
    default: break;
  }
  if (op >= NK_OP_SOFTMAX_FWD) return se ? se->name : NULL;
  if (op == NK_OP_LAYERNORM_FWD || op == NK_OP_RMSNORM_FWD) {
    const fwd_entry *e = find_fwd(isa, op, dtype);
    return e ? e->name : NULL;
  }
  const bwd_entry *e = find_bwd(isa, op, dtype);
  return e ? e->name : NULL;
}

const char *nk_kernel_name(nk_op op, nk_dtype dtype) { return nk_kernel_name_ex(NULL, op, dtype); }

const nk_chnorm_kernels *nk__chnorm_kernels(const nk_context *ctx) {
  switch (nk__context_isa(ctx)) {
#if NK_ARCH_X86
    case NK_ISA_AVX512: return &nk_chnorm_kernels_avx512;
    case NK_ISA_AVX2: return &nk_chnorm_kernels_avx2;
#endif
    default: return &nk_chnorm_kernels_scalar;
  }
}

const nk_resnorm_kernels *nk__resnorm_kernels(const nk_context *ctx) {
  switch (nk__context_isa(ctx)) {
#if NK_ARCH_X86
    case NK_ISA_AVX512: return &nk_resnorm_kernels_avx512;
    case NK_ISA_AVX2: return &nk_resnorm_kernels_avx2;
#endif
    default: return &nk_resnorm_kernels_scalar;
  }
}
const nk_optim_kernels *nk__optim_kernels(const nk_context *ctx) {
  switch (nk__context_isa(ctx)) {
#if NK_ARCH_X86
    case NK_ISA_AVX512: return &nk_optim_kernels_avx512;
    case NK_ISA_AVX2: return &nk_optim_kernels_avx2;
#endif
    default: return &nk_optim_kernels_scalar;
  }
}

const char *nk_optim_kernel_name(nk_context *ctx) { return nk__optim_kernels(ctx)->name; }
