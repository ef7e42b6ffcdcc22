// Emulates one warp of the tensor-core tiled kernel on the CPU: ldmatrix (with and without
// .trans) and mma.m16n8k16 as the PTX ISA defines them, fed by the lane maps of mma_fragments.h in
// the same order as tensorCoreTiledKernel. S = Q K^T and O = P V must equal plain products, so a
// wrong register, lane or tile index in the kernel's addressing fails here without a GPU.
#include "mma_fragments.h"

#include <array>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

using namespace iqart::mma;

namespace
{

constexpr int kLanes = 32;
using Pair = std::array<float, 2>;            // the two halves of a 32-bit register
using Regs4 = std::array<std::array<Pair, 4>, kLanes>;
using Accum = std::array<std::array<float, 4>, kLanes>;

struct Matrix
{
    int rows, cols;
    std::vector<float> data;
    Matrix(int r, int c) : rows(r), cols(c), data(static_cast<size_t>(r) * c, 0.0f) {}
    float& at(int r, int c) { return data[static_cast<size_t>(r) * cols + c]; }
    float at(int r, int c) const { return data[static_cast<size_t>(r) * cols + c]; }
};

// ldmatrix .x4: lane l addresses row l % 8 of matrix l / 8 as (row, column) of `tile`.
Regs4 ldmatrix(Matrix const& tile, std::array<std::array<int, 2>, kLanes> const& address, bool transposed)
{
    Regs4 out{};
    for (int lane = 0; lane < kLanes; ++lane)
    {
        for (int m = 0; m < 4; ++m)
        {
            for (int i = 0; i < 2; ++i)
            {
                // Without .trans: row lane / 4 of the matrix, column 2 (lane % 4) + i.
                // With .trans: row 2 (lane % 4) + i, column lane / 4.
                int const row_in_matrix = transposed ? lane % 4 * 2 + i : lane / 4;
                int const column_in_matrix = transposed ? lane / 4 : lane % 4 * 2 + i;
                std::array<int, 2> const row_start = address[m * 8 + row_in_matrix];
                out[lane][m][i] = tile.at(row_start[0], row_start[1] + column_in_matrix);
            }
        }
    }
    return out;
}

// acc += A B for one warp, A given as 4 registers per lane, B as 2.
void mmaEmulated(Accum& acc, Regs4 const& a, std::array<std::array<Pair, 2>, kLanes> const& b)
{
    float A[16][16];
    float B[16][8];
    for (int lane = 0; lane < kLanes; ++lane)
    {
        for (int reg = 0; reg < 4; ++reg)
            for (int i = 0; i < 2; ++i)
                A[aRow(lane, reg)][aColumn(lane, reg) + i] = a[lane][reg][i];
        for (int reg = 0; reg < 2; ++reg)
            for (int i = 0; i < 2; ++i)
                B[bRow(lane, reg) + i][bColumn(lane)] = b[lane][reg][i];
    }
    for (int lane = 0; lane < kLanes; ++lane)
    {
        for (int e = 0; e < 4; ++e)
        {
            float sum = 0.0f;
            for (int k = 0; k < 16; ++k)
                sum += A[cRow(lane, e)][k] * B[k][cColumn(lane, e)];
            acc[lane][e] += sum;
        }
    }
}

std::array<std::array<Pair, 2>, kLanes> pick(Regs4 const& regs, int first)
{
    std::array<std::array<Pair, 2>, kLanes> out{};
    for (int lane = 0; lane < kLanes; ++lane)
    {
        out[lane][0] = regs[lane][first];
        out[lane][1] = regs[lane][first + 1];
    }
    return out;
}

int failures = 0;

void expectNear(float got, float want, char const* what, int row, int column)
{
    if (std::fabs(got - want) > 1e-4f * (1.0f + std::fabs(want)))
    {
        if (failures++ < 10)
            std::fprintf(stderr, "%s[%d][%d]: got %g, want %g\n", what, row, column, got, want);
    }
}

// One warp: 16 query rows, kKeys keys, D dims, in the kernel's loop order.
template <int D, int kKeys>
void checkWarp(std::mt19937& rng)
{
    std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
    Matrix q(16, D), k(kKeys, D), v(kKeys, D);
    for (Matrix* m : {&q, &k, &v})
        for (float& x : m->data)
            x = dist(rng);

    // Q as A registers, as the kernel reads them from global memory.
    constexpr int kSteps = D / 16;
    std::vector<Regs4> q_frag(kSteps);
    for (int step = 0; step < kSteps; ++step)
        for (int lane = 0; lane < kLanes; ++lane)
            for (int reg = 0; reg < 4; ++reg)
                for (int i = 0; i < 2; ++i)
                    q_frag[step][lane][reg][i] = q.at(aRow(lane, reg), step * 16 + aColumn(lane, reg) + i);

    // S = Q K^T.
    std::vector<Accum> score(kKeys / 8, Accum{});
    for (int step = 0; step < kSteps; ++step)
    {
        for (int pair = 0; pair < kKeys / 16; ++pair)
        {
            std::array<std::array<int, 2>, kLanes> address{};
            for (int lane = 0; lane < kLanes; ++lane)
                address[lane] = {pair * 16 + keyTileRow(lane), step * 16 + keyTileColumn(lane)};
            Regs4 const k_frag = ldmatrix(k, address, false);
            mmaEmulated(score[2 * pair], q_frag[step], pick(k_frag, 0));
            mmaEmulated(score[2 * pair + 1], q_frag[step], pick(k_frag, 2));
        }
    }
    Matrix p(16, kKeys);
    for (int n = 0; n < kKeys / 8; ++n)
        for (int lane = 0; lane < kLanes; ++lane)
            for (int e = 0; e < 4; ++e)
            {
                int const row = cRow(lane, e);
                int const key = n * 8 + cColumn(lane, e);
                float want = 0.0f;
                for (int d = 0; d < D; ++d)
                    want += q.at(row, d) * k.at(key, d);
                expectNear(score[n][lane][e], want, "S", row, key);
                p.at(row, key) = std::tanh(score[n][lane][e]); // any elementwise map, as softmax is
            }

    // O = P V with P's C registers reused as A registers.
    constexpr int kDimTiles = D / 8;
    std::vector<Accum> acc(kDimTiles, Accum{});
    for (int j = 0; j < kKeys / 16; ++j)
    {
        Regs4 p_frag{};
        for (int lane = 0; lane < kLanes; ++lane)
            for (int half_tile = 0; half_tile < 2; ++half_tile)
                for (int r = 0; r < 2; ++r)
                    p_frag[lane][2 * half_tile + r] = {std::tanh(score[2 * j + half_tile][lane][2 * r]),
                        std::tanh(score[2 * j + half_tile][lane][2 * r + 1])};
        for (int pair = 0; pair < kDimTiles / 2; ++pair)
        {
            std::array<std::array<int, 2>, kLanes> address{};
            for (int lane = 0; lane < kLanes; ++lane)
                address[lane] = {j * 16 + valueTileRow(lane), pair * 16 + valueTileColumn(lane)};
            Regs4 const v_frag = ldmatrix(v, address, true);
            mmaEmulated(acc[2 * pair], p_frag, pick(v_frag, 0));
            mmaEmulated(acc[2 * pair + 1], p_frag, pick(v_frag, 2));
        }
    }
    for (int n = 0; n < kDimTiles; ++n)
        for (int lane = 0; lane < kLanes; ++lane)
            for (int e = 0; e < 4; ++e)
            {
                int const row = cRow(lane, e);
                int const d = n * 8 + cColumn(lane, e);
                float want = 0.0f;
                for (int key = 0; key < kKeys; ++key)
                    want += p.at(row, key) * v.at(key, d);
                expectNear(acc[n][lane][e], want, "O", row, d);
            }
}

} // namespace

int main()
{
    std::mt19937 rng(7);
    checkWarp<32, 64>(rng);
    checkWarp<64, 64>(rng);
    checkWarp<128, 32>(rng);
    if (failures)
    {
        std::fprintf(stderr, "fragments: %d mismatches\n", failures);
        return 1;
    }
    std::printf("fragments: all checks passed\n");
    return 0;
}
