// The smallest complete CUDA program: one allocation, one kernel, one copy back, every value checked.
// gpu_verify.sh runs it plainly and then under compute-sanitizer before the sanitizer steps. Where it
// passes plainly but not under the sanitizer, the host refuses the sanitizer (on gVisor hosts
// compute-sanitizer prints "Device not supported", then the first allocation fails with error 999),
// and the sanitizer steps are reported as unavailable there, not as kernel failures.
#include <cuda_runtime.h>

#include <cstdio>

namespace
{

constexpr int kCount = 1000;  // not a multiple of the block: the bounds check is exercised

__global__ void fill(int* out, int count)
{
    int const i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < count)
    {
        out[i] = 3 * i + 1;
    }
}

bool ok(cudaError_t status, char const* what)
{
    if (status != cudaSuccess)
    {
        std::printf("sanitizer preflight: %s failed: %s (error %d)\n", what, cudaGetErrorString(status), status);
    }
    return status == cudaSuccess;
}

} // namespace

int main()
{
    int* device = nullptr;
    int host[kCount];
    if (!ok(cudaMalloc(&device, sizeof(host)), "cudaMalloc"))
    {
        return 1;
    }
    fill<<<(kCount + 255) / 256, 256>>>(device, kCount);
    if (!ok(cudaGetLastError(), "kernel launch") || !ok(cudaDeviceSynchronize(), "kernel")
        || !ok(cudaMemcpy(host, device, sizeof(host), cudaMemcpyDeviceToHost), "cudaMemcpy")
        || !ok(cudaFree(device), "cudaFree"))
    {
        return 1;
    }
    for (int i = 0; i < kCount; ++i)
    {
        if (host[i] != 3 * i + 1)
        {
            std::printf("sanitizer preflight: value %d is %d, not %d\n", i, host[i], 3 * i + 1);
            return 1;
        }
    }
    std::printf("sanitizer preflight: kernel ran, %d values right\n", kCount);
    return 0;
}
