// What the benchmark writes into a record and how it reads it back: every 8-byte word of an
// N-byte payload holds the record's sequence number (a tail shorter than a word holds its low
// bytes), so the reader can check order and integrity with one compare, and the writer does the
// work a real producer does: it stores N bytes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>

namespace shmem_bench {

inline void write_payload(std::byte* out, std::size_t size, std::uint64_t seq) noexcept {
  const std::size_t words = size / 8;
  for (std::size_t i = 0; i < words; ++i) std::memcpy(out + 8 * i, &seq, 8);
  for (std::size_t i = words * 8; i < size; ++i) {
    out[i] = static_cast<std::byte>(seq >> (8 * (i - words * 8)));
  }
}

// The sequence number as the payload holds it: all of it for payloads of 8 bytes or more, its
// low `size` bytes otherwise.
inline std::uint64_t expected_first_word(std::uint64_t seq, std::size_t size) noexcept {
  return size >= 8 ? seq : (size == 0 ? 0 : seq & ((std::uint64_t{1} << (8 * size)) - 1));
}

inline std::uint64_t read_first_word(std::span<const std::byte> payload) noexcept {
  if (payload.size() >= 8) [[likely]] {
    std::uint64_t word = 0;
    std::memcpy(&word, payload.data(), 8);
    return word;
  }
  std::uint64_t word = 0;
  for (std::size_t i = 0; i < payload.size(); ++i) {
    word |= static_cast<std::uint64_t>(payload[i]) << (8 * i);
  }
  return word;
}

// Reads every byte of the payload (8-byte words, then the tail) and returns their sum.
inline std::uint64_t sum_payload(std::span<const std::byte> payload) noexcept {
  const std::size_t words = payload.size() / 8;
  std::uint64_t sum = 0;
  for (std::size_t i = 0; i < words; ++i) {
    std::uint64_t word = 0;
    std::memcpy(&word, payload.data() + 8 * i, 8);
    sum += word;
  }
  for (std::size_t i = words * 8; i < payload.size(); ++i) {
    sum += static_cast<std::uint64_t>(payload[i]);
  }
  return sum;
}

}  // namespace shmem_bench
