/* The avx512 variant of numcnn's kernels (flags in setup.py). */
#define NUMCNN_MODULE _kernels_avx512
#include "_kernels.c"
#include "_plan.c"
