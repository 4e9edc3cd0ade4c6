// The journal recovery fuzz harness (see journal_fuzz.cpp for the input layout).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace weft::fuzz {

// Runs one input; aborts when recovery breaks an invariant.
void run_journal_input(const std::uint8_t* data, std::size_t size);

struct JournalFuzzStats {
  std::uint64_t inputs = 0;
  std::uint64_t recovered = 0;  // Journal::open succeeded.
  std::uint64_t corrupt = 0;    // Journal::open said kCorrupted (and verify agreed).
  std::uint64_t torn = 0;       // Recovery dropped a torn tail.
  std::uint64_t records = 0;    // Records kept by recovery, summed.
};
const JournalFuzzStats& journal_fuzz_stats() noexcept;

// Removes the scratch directory.
void remove_journal_workspace() noexcept;

// Seeds: valid record chains as the writer frames them, torn and bit-flipped variants.
std::vector<std::vector<std::uint8_t>> make_journal_seeds();

}  // namespace weft::fuzz

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size);
