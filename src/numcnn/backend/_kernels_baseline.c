/* The baseline variant of numcnn's kernels (flags in setup.py). */
#define NUMCNN_MODULE _kernels_baseline
#include "_kernels.c"
#include "_plan.c"
