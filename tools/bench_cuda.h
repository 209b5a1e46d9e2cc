/*
 * bench_cuda.h — `normkit bench --cuda` (tools/bench_cuda.c), built into the CLI when CMake is
 * configured with -DNK_CUDA=ON (which defines NK_HAVE_CUDA for tools/normkit.c).
 */
#ifndef NORMKIT_TOOLS_BENCH_CUDA_H
#define NORMKIT_TOOLS_BENCH_CUDA_H

/* Runs the CUDA benchmark. argv holds the options that follow `bench` (argv[0] is the first
 * option, not a program name); "--cuda" among them is accepted and ignored. Returns the exit
 * status: 0 success, 1 a CUDA or nk_status error (or no device), 2 a usage error. */
int nk_bench_cuda_main(int argc, char **argv);

#endif /* NORMKIT_TOOLS_BENCH_CUDA_H */
