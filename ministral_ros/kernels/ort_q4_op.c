/*
 * onnxruntime custom operator ai.ministral_ros.Q4MatMul, registered by RegisterCustomOps (what
 * SessionOptions.register_custom_ops_library calls) on the CPU execution provider.
 *
 *   Y = Q4MatMul(A float [..., K], quants uint8 [N, KS, 8, 32], scales float16 [N, KS * 16]); attributes K, N
 *   Y float [..., N]: A @ W^T with W in the layout q4_matmul.c describes
 *
 * Built against onnxruntime's C API version 21 (1.21) headers; it runs in any onnxruntime from 1.21 on (the
 * C API is versioned and backward compatible). Column ranges go to the session's intra-op thread pool
 * (KernelContext_ParallelFor), so the operator adds no threads of its own and follows intra_op_num_threads.
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>

#include "onnxruntime_c_api.h"
#include "q4_matmul.h"

#define Q4_DOMAIN "ai.ministral_ros"
#define Q4_OP "Q4MatMul"

typedef struct Q4Kernel {
  const OrtApi *api;
  int64_t k;
  int64_t n;
} Q4Kernel;

typedef struct Q4Job {
  const Q4Problem *problem;
  int64_t chunk;
} Q4Job;

static OrtStatus *fail(const OrtApi *api, const char *format, long long a, long long b) {
  char message[256];
  snprintf(message, sizeof message, format, a, b);
  return api->CreateStatus(ORT_INVALID_ARGUMENT, message);
}

#define Q4_TRY(expr)                 \
  do {                               \
    OrtStatus *status_ = (expr);     \
    if (status_ != NULL) {           \
      return status_;                \
    }                                \
  } while (0)

static OrtStatus *tensor_dims(const OrtApi *api, const OrtValue *value, int64_t *dims, size_t *count,
                              ONNXTensorElementDataType *type) {
  OrtTensorTypeAndShapeInfo *info = NULL;
  Q4_TRY(api->GetTensorTypeAndShape(value, &info));
  OrtStatus *status = api->GetDimensionsCount(info, count);
  if (status == NULL && *count > 8) {
    status = fail(api, "Q4MatMul: a tensor of rank %lld; at most %lld is supported", (long long)*count, 8);
  }
  if (status == NULL) {
    status = api->GetDimensions(info, dims, *count);
  }
  if (status == NULL) {
    status = api->GetTensorElementType(info, type);
  }
  api->ReleaseTensorTypeAndShapeInfo(info);
  return status;
}

static void run_chunk(void *data, size_t index) {
  const Q4Job *job = (const Q4Job *)data;
  int64_t begin = (int64_t)index * job->chunk;
  int64_t end = begin + job->chunk < job->problem->n ? begin + job->chunk : job->problem->n;
  q4_gemm_columns(job->problem, begin, end);
}

static OrtStatusPtr ORT_API_CALL compute(void *state, OrtKernelContext *context) {
  const Q4Kernel *kernel = (const Q4Kernel *)state;
  const OrtApi *api = kernel->api;
  const OrtValue *a = NULL, *quants = NULL, *scales = NULL;
  Q4_TRY(api->KernelContext_GetInput(context, 0, &a));
  Q4_TRY(api->KernelContext_GetInput(context, 1, &quants));
  Q4_TRY(api->KernelContext_GetInput(context, 2, &scales));
  int64_t dims[8], q_dims[8], s_dims[8];
  size_t rank = 0, q_rank = 0, s_rank = 0;
  ONNXTensorElementDataType type, q_type, s_type;
  Q4_TRY(tensor_dims(api, a, dims, &rank, &type));
  Q4_TRY(tensor_dims(api, quants, q_dims, &q_rank, &q_type));
  Q4_TRY(tensor_dims(api, scales, s_dims, &s_rank, &s_type));
  int64_t supers = q4_super_blocks(kernel->k);
  if (rank < 1 || dims[rank - 1] != kernel->k) {
    return fail(api, "Q4MatMul: the input's last dimension is %lld, the weights expect K = %lld",
                rank < 1 ? -1LL : (long long)dims[rank - 1], (long long)kernel->k);
  }
  if (q_type != ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8 || q_rank != 4 || q_dims[0] != kernel->n ||
      q_dims[1] != supers || q_dims[2] != 8 || q_dims[3] != 32) {
    return fail(api, "Q4MatMul: quants must be uint8 [N=%lld, %lld, 8, 32]", (long long)kernel->n, (long long)supers);
  }
  if (s_type != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16 || s_rank != 2 || s_dims[0] != kernel->n ||
      s_dims[1] != supers * 16) {
    return fail(api, "Q4MatMul: scales must be float16 [N=%lld, %lld]", (long long)kernel->n,
                (long long)(supers * 16));
  }
  int64_t rows = 1;
  for (size_t i = 0; i + 1 < rank; ++i) {
    rows *= dims[i];
  }
  dims[rank - 1] = kernel->n;
  OrtValue *y = NULL;
  Q4_TRY(api->KernelContext_GetOutput(context, 0, dims, rank, &y));
  if (rows == 0) {
    return NULL;
  }
  float *y_data = NULL;
  void *a_data = NULL, *q_data = NULL, *s_data = NULL;
  Q4_TRY(api->GetTensorMutableData(y, (void **)&y_data));
  Q4_TRY(api->GetTensorMutableData((OrtValue *)a, &a_data));
  Q4_TRY(api->GetTensorMutableData((OrtValue *)quants, &q_data));
  Q4_TRY(api->GetTensorMutableData((OrtValue *)scales, &s_data));
  void *workspace = malloc(q4_activation_bytes(rows, kernel->k));
  if (workspace == NULL) {
    return api->CreateStatus(ORT_FAIL, "Q4MatMul: out of memory for the quantized activations");
  }
  Q4Problem problem;
  q4_prepare(&problem, (const float *)a_data, rows, kernel->k, kernel->n, (const uint8_t *)q_data,
             (const uint16_t *)s_data, y_data, kernel->n, workspace);
  /* Tasks of whole column ranges (even, for the two-column decode loop); decode timings on the 8B shape did
   * not move between 16 and 512 columns per task. */
  Q4Job job = {&problem, rows == 1 ? 128 : 16};
  size_t tasks = (size_t)((kernel->n + job.chunk - 1) / job.chunk);
  OrtStatus *status = api->KernelContext_ParallelFor(context, run_chunk, tasks, 0, &job);
  free(workspace);
  return status;
}

static OrtStatusPtr ORT_API_CALL create_kernel(const OrtCustomOp *op, const OrtApi *api, const OrtKernelInfo *info,
                                               void **kernel_out) {
  (void)op;
  Q4Kernel *kernel = (Q4Kernel *)calloc(1, sizeof *kernel);
  if (kernel == NULL) {
    return api->CreateStatus(ORT_FAIL, "Q4MatMul: out of memory");
  }
  kernel->api = api;
  OrtStatus *status = api->KernelInfoGetAttribute_int64(info, "K", &kernel->k);
  if (status == NULL) {
    status = api->KernelInfoGetAttribute_int64(info, "N", &kernel->n);
  }
  if (status == NULL && (kernel->k <= 0 || kernel->n <= 0)) {
    status = fail(api, "Q4MatMul: K and N must be positive, got %lld and %lld", (long long)kernel->k,
                  (long long)kernel->n);
  }
  if (status != NULL) {
    free(kernel);
    return status;
  }
  *kernel_out = kernel;
  return NULL;
}

static void ORT_API_CALL destroy_kernel(void *kernel) { free(kernel); }
static const char *ORT_API_CALL op_name(const OrtCustomOp *op) {
  (void)op;
  return Q4_OP;
}
static size_t ORT_API_CALL input_count(const OrtCustomOp *op) {
  (void)op;
  return 3;
}
static size_t ORT_API_CALL output_count(const OrtCustomOp *op) {
  (void)op;
  return 1;
}
static ONNXTensorElementDataType ORT_API_CALL input_type(const OrtCustomOp *op, size_t index) {
  (void)op;
  return index == 0 ? ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT
                    : (index == 1 ? ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8 : ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16);
}
static ONNXTensorElementDataType ORT_API_CALL output_type(const OrtCustomOp *op, size_t index) {
  (void)op;
  (void)index;
  return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
}
static OrtCustomOpInputOutputCharacteristic ORT_API_CALL required(const OrtCustomOp *op, size_t index) {
  (void)op;
  (void)index;
  return INPUT_OUTPUT_REQUIRED;
}
static OrtMemType ORT_API_CALL memory_type(const OrtCustomOp *op, size_t index) {
  (void)op;
  (void)index;
  return OrtMemTypeDefault;
}
static int ORT_API_CALL one(const OrtCustomOp *op) {
  (void)op;
  return 1;
}
static int ORT_API_CALL last_version(const OrtCustomOp *op) {
  (void)op;
  return INT_MAX;
}

static size_t ORT_API_CALL no_pairs(int **input_index, int **output_index) {
  *input_index = NULL;
  *output_index = NULL;
  return 0;
}
static void ORT_API_CALL release_pairs(int *input_index, int *output_index) {
  (void)input_index;
  (void)output_index;
}

static const char *ORT_API_CALL cpu_provider(const OrtCustomOp *op) {
  (void)op;
  return NULL; /* NULL: the CPU execution provider */
}

static OrtCustomOp g_op;

Q4_API OrtStatus *ORT_API_CALL RegisterCustomOps(OrtSessionOptions *options, const OrtApiBase *api_base) {
  const OrtApi *api = api_base->GetApi(ORT_API_VERSION);
  if (api == NULL) {
    const OrtApi *oldest = api_base->GetApi(1);
    return oldest->CreateStatus(ORT_FAIL, "ministral_ros Q4MatMul needs onnxruntime 1.21 or newer (C API 21)");
  }
  g_op.version = ORT_API_VERSION;
  g_op.GetName = op_name;
  g_op.GetExecutionProviderType = cpu_provider;
  g_op.GetInputTypeCount = input_count;
  g_op.GetOutputTypeCount = output_count;
  g_op.GetInputType = input_type;
  g_op.GetOutputType = output_type;
  g_op.GetInputCharacteristic = required;
  g_op.GetOutputCharacteristic = required;
  g_op.GetInputMemoryType = memory_type;
  g_op.GetVariadicInputMinArity = one;
  g_op.GetVariadicInputHomogeneity = one;
  g_op.GetVariadicOutputMinArity = one;
  g_op.GetVariadicOutputHomogeneity = one;
  g_op.CreateKernelV2 = create_kernel;
  g_op.KernelComputeV2 = compute;
  g_op.KernelDestroy = destroy_kernel;
  g_op.GetMayInplace = no_pairs;
  g_op.ReleaseMayInplace = release_pairs;
  g_op.GetAliasMap = no_pairs;
  g_op.ReleaseAliasMap = release_pairs;
  g_op.GetStartVersion = one;
  g_op.GetEndVersion = last_version;
  /* Each registration gets its own domain object: onnxruntime needs it for as long as the session lives, so
   * it is never released (a few bytes per session). */
  OrtCustomOpDomain *domain = NULL;
  Q4_TRY(api->CreateCustomOpDomain(Q4_DOMAIN, &domain));
  Q4_TRY(api->CustomOpDomain_Add(domain, &g_op));
  return api->AddCustomOpDomain(options, domain);
}
