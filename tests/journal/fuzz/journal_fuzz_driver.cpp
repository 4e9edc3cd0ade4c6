// A plain driver for the journal fuzz harness, for compilers without libFuzzer:
//
//   journal_fuzz_driver [--runs N] [--seed S] [FILE|DIR]...
//       Runs the built-in seeds and every input file (directories: every file in them), then N
//       inputs made by mutating them with a seeded generator.
#include <dirent.h>
#include <sys/stat.h>

#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include "journal_fuzz.hpp"

namespace {

void add_path(const std::string& path, std::vector<std::vector<std::uint8_t>>& inputs) {
  struct stat st {};
  if (stat(path.c_str(), &st) != 0) {
    std::fprintf(stderr, "journal_fuzz_driver: %s: not found\n", path.c_str());
    std::exit(2);
  }
  if (S_ISDIR(st.st_mode)) {
    DIR* dir = opendir(path.c_str());
    while (const dirent* entry = dir != nullptr ? readdir(dir) : nullptr) {
      if (entry->d_name[0] != '.') add_path(path + "/" + entry->d_name, inputs);
    }
    if (dir != nullptr) closedir(dir);
    return;
  }
  std::ifstream file(path, std::ios::binary);
  inputs.emplace_back(std::istreambuf_iterator<char>(file), std::istreambuf_iterator<char>());
}

}  // namespace

int main(int argc, char** argv) {
  std::uint64_t runs = 0;
  std::uint64_t seed = std::random_device{}();
  std::vector<std::vector<std::uint8_t>> inputs = weft::fuzz::make_journal_seeds();
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--runs") == 0 && i + 1 < argc) {
      runs = std::strtoull(argv[++i], nullptr, 10);
    } else if (std::strcmp(argv[i], "--seed") == 0 && i + 1 < argc) {
      seed = std::strtoull(argv[++i], nullptr, 10);
    } else {
      add_path(argv[i], inputs);
    }
  }
  if (const char* scale = std::getenv("WEFT_TEST_SCALE")) {
    const double factor = std::strtod(scale, nullptr);
    if (factor > 0 && factor < 1)
      runs = static_cast<std::uint64_t>(static_cast<double>(runs) * factor) + 1;
  }
  std::printf("journal_fuzz_driver: seed %" PRIu64 " (replay with --seed), %zu inputs, %" PRIu64
              " mutated runs\n",
              seed, inputs.size(), runs);
  for (const auto& input : inputs) weft::fuzz::run_journal_input(input.data(), input.size());
  std::mt19937_64 rng(seed);
  for (std::uint64_t run = 0; run < runs; ++run) {
    std::vector<std::uint8_t> input = inputs[rng() % inputs.size()];
    const std::uint64_t mutations = 1 + rng() % 8;
    for (std::uint64_t m = 0; m < mutations; ++m) {
      const std::uint64_t what = rng() % 4;
      if (input.empty() || what == 0) {
        input.insert(
            input.begin() + static_cast<std::ptrdiff_t>(input.empty() ? 0 : rng() % input.size()),
            static_cast<std::uint8_t>(rng()));
      } else if (what == 1) {
        input[rng() % input.size()] ^= static_cast<std::uint8_t>(1u << (rng() % 8));
      } else if (what == 2) {
        input.resize(rng() % (input.size() + 1));
      } else {
        input[rng() % input.size()] = static_cast<std::uint8_t>(rng());
      }
    }
    weft::fuzz::run_journal_input(input.data(), input.size());
  }
  const auto& stats = weft::fuzz::journal_fuzz_stats();
  std::printf("journal_fuzz_driver: %" PRIu64 " inputs: %" PRIu64 " recovered (%" PRIu64
              " with a torn tail, %" PRIu64 " records kept), %" PRIu64 " corrupt\n",
              stats.inputs, stats.recovered, stats.torn, stats.records, stats.corrupt);
  weft::fuzz::remove_journal_workspace();
  if (stats.recovered == 0 || stats.corrupt == 0) {
    std::printf("journal_fuzz_driver: the inputs no longer reach both outcomes\n");
    return 1;
  }
  return 0;
}
