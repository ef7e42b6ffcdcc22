// SHA-256 (FIPS 180-4), for checking graphs and plans against the digests their records hold.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>

namespace iqart
{

class Sha256
{
public:
    Sha256();
    void update(void const* data, std::size_t size);
    std::string hexdigest(); // finishes the hash: call once

private:
    void block(uint8_t const* chunk);
    std::array<uint32_t, 8> state_;
    std::array<uint8_t, 64> buffer_{};
    std::size_t buffered_ = 0;
    uint64_t total_bytes_ = 0;
};

std::string sha256_bytes(void const* data, std::size_t size);

} // namespace iqart
