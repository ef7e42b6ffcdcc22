// Where each lane of a warp holds its pieces of the tensor-core tiles used by the fp16 tiled
// kernel: mma.sync.m16n8k16 (fp16 in, fp32 accumulate) fed by ldmatrix. The lane <-> element
// maps are plain arithmetic shared by the kernel and a CPU test (kernels/tests/test_fragments.cpp)
// that emulates a warp, so a wrong index is caught without a GPU. The maps follow the PTX ISA,
// "Matrix fragments for mma.m16n8k16 with floating point type" and "ldmatrix".
#pragma once

#include "softmax_merge.h" // IQART_HOST_DEVICE

#include <stdint.h>

namespace iqart
{
namespace mma
{

// A lane's group (lane / 4) picks rows, its place in the group (lane % 4) picks column pairs.
IQART_HOST_DEVICE inline int groupOf(int lane)
{
    return lane / 4;
}

IQART_HOST_DEVICE inline int pairColumn(int lane)
{
    return lane % 4 * 2;
}

// A, 16x16 row-major, four 32-bit registers of two halves: register r holds row
// group + 8 (r & 1), columns pairColumn + 8 (r >> 1) and the next one.
IQART_HOST_DEVICE inline int aRow(int lane, int reg)
{
    return groupOf(lane) + 8 * (reg & 1);
}

IQART_HOST_DEVICE inline int aColumn(int lane, int reg)
{
    return pairColumn(lane) + 8 * (reg >> 1);
}

// B, 16x8 (k x n), two registers: register r holds k = pairColumn + 8 r and the next one, n = group.
IQART_HOST_DEVICE inline int bRow(int lane, int reg)
{
    return pairColumn(lane) + 8 * reg;
}

IQART_HOST_DEVICE inline int bColumn(int lane)
{
    return groupOf(lane);
}

// C and D, 16x8 fp32, four floats: element e is row group + 8 (e >> 1), column pairColumn + (e & 1).
// Two neighbouring C tiles in n are, element for element, the A registers of the next product:
// C tile 2j gives A registers 0 (e = 0, 1) and 1 (e = 2, 3), tile 2j + 1 gives registers 2 and 3.
IQART_HOST_DEVICE inline int cRow(int lane, int element)
{
    return groupOf(lane) + 8 * (element >> 1);
}

IQART_HOST_DEVICE inline int cColumn(int lane, int element)
{
    return pairColumn(lane) + (element & 1);
}

// ldmatrix .x4 takes from lane l the address of row l % 8 of its matrix l / 8. Without .trans a
// lane receives, of matrix m, register m = row group, columns pairColumn and the next one; with
// .trans, rows pairColumn and the next one, column group.
//
// K tile (keys x dims, row-major) read without .trans gives the B registers of S = Q K^T for two
// 8-key tiles: matrices (keys 0-7, dims 0-7), (keys 0-7, dims 8-15), (keys 8-15, dims 0-7),
// (keys 8-15, dims 8-15) are B registers 0 and 1 of key tile 0, then of key tile 1.
IQART_HOST_DEVICE inline int keyTileRow(int lane)
{
    return lane / 16 * 8 + lane % 8;
}

IQART_HOST_DEVICE inline int keyTileColumn(int lane)
{
    return lane / 8 % 2 * 8;
}

// V tile (keys x dims, row-major) read with .trans gives the B registers of O = P V for two 8-dim
// tiles: matrices (keys 0-7, dims 0-7), (keys 8-15, dims 0-7), (keys 0-7, dims 8-15),
// (keys 8-15, dims 8-15) are B registers 0 and 1 of dim tile 0, then of dim tile 1.
IQART_HOST_DEVICE inline int valueTileRow(int lane)
{
    return lane / 8 % 2 * 8 + lane % 8;
}

IQART_HOST_DEVICE inline int valueTileColumn(int lane)
{
    return lane / 16 * 8;
}

#if defined(__CUDACC__)

__device__ inline uint32_t sharedAddress(void const* pointer)
{
    return static_cast<uint32_t>(__cvta_generic_to_shared(pointer));
}

// The PTX wrappers exist only where the instructions do (sm_80 and newer); older targets never
// reach the tensor-core kernel (see fusedCrossAttentionUsesTensorCores).
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800

__device__ inline void loadMatrices(uint32_t (&regs)[4], void const* row)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(regs[0]), "=r"(regs[1]), "=r"(regs[2]), "=r"(regs[3])
                 : "r"(sharedAddress(row)));
}

__device__ inline void loadMatricesTransposed(uint32_t (&regs)[4], void const* row)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(regs[0]), "=r"(regs[1]), "=r"(regs[2]), "=r"(regs[3])
                 : "r"(sharedAddress(row)));
}

// acc (16x8 fp32) += a (16x16 fp16) * b (16x8 fp16)
__device__ inline void multiplyAccumulate(float (&acc)[4], uint32_t const (&a)[4], uint32_t b0, uint32_t b1)
{
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(acc[0]), "+f"(acc[1]), "+f"(acc[2]), "+f"(acc[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// 16 bytes global -> shared without staging in registers; bytes = 0 fills the 16 bytes with zeros
// (a row past the last key) and reads nothing.
__device__ inline void copyAsync16(void* shared, void const* global, int bytes)
{
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(sharedAddress(shared)), "l"(global),
                 "r"(bytes));
}

__device__ inline void commitCopies()
{
    asm volatile("cp.async.commit_group;\n" ::);
}

// Waits until at most `Pending` committed groups are still in flight.
template <int Pending>
__device__ inline void waitCopies()
{
    asm volatile("cp.async.wait_group %0;\n" ::"n"(Pending));
}

#endif
#endif

} // namespace mma
} // namespace iqart
