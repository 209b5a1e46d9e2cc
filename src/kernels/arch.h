/* arch.h — the build target's architecture, for the kernel lists (<family>.inc): NK_ARCH_X86 is
 * 1 on x86-64, where the AVX2 and AVX-512 kernels exist, else 0. */
#ifndef NK_KERNELS_ARCH_H
#define NK_KERNELS_ARCH_H

#if !defined(NK_ARCH_X86)
#if defined(__x86_64__)
#define NK_ARCH_X86 1
#else
#define NK_ARCH_X86 0
#endif
#endif

#endif /* NK_KERNELS_ARCH_H */
