/* The avx2 variant of numcnn's kernels (flags in setup.py). */
#define NUMCNN_MODULE _kernels_avx2
#include "_kernels.c"
#include "_plan.c"
