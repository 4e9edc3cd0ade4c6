// A plain driver for the channel fuzz harness, for compilers without libFuzzer:
//
//   channel_fuzz_driver [--runs N] [--seed S] [FILE|DIR]...
//       Runs every input file (directories: every file in them), then N inputs made by mutating
//       those files and the built-in seeds with a seeded generator. Each input gets 5 seconds;
//       one that takes longer is reported as a hang and aborts the run.
//   channel_fuzz_driver --write-corpus DIR
//       Writes the built-in seeds into DIR (how tests/fuzz/corpus was made).
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cinttypes>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include "fuzz/channel_fuzz.hpp"
#include "weft/detail/layout.hpp"

namespace {

constexpr unsigned kInputSecondsMax = 5;

struct Input {
  std::string name;
  std::vector<std::uint8_t> bytes;
};

char g_current[512] = "?";

void on_alarm(int) {
  char message[600];
  const int length = std::snprintf(message, sizeof message,
                                   "channel_fuzz_driver: input %s did not finish within %u s: "
                                   "the harness hangs on it\n",
                                   g_current, kInputSecondsMax);
  if (length > 0) {
    const ssize_t ignored = ::write(2, message, static_cast<std::size_t>(length));
    static_cast<void>(ignored);
  }
  weft::fuzz::remove_workspace();
  std::abort();
}

void run(const std::string& name, const std::vector<std::uint8_t>& bytes) {
  std::snprintf(g_current, sizeof g_current, "%s", name.c_str());
  alarm(kInputSecondsMax);
  weft::fuzz::run_one(bytes.data(), bytes.size());
  alarm(0);
}

void add_file(const std::string& path, std::vector<Input>& inputs) {
  std::ifstream file(path, std::ios::binary);
  if (!file) {
    std::fprintf(stderr, "cannot read %s\n", path.c_str());
    std::exit(2);
  }
  inputs.push_back({path, std::vector<std::uint8_t>(std::istreambuf_iterator<char>(file), {})});
}

void add_path(const std::string& path, std::vector<Input>& inputs) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    std::fprintf(stderr, "cannot find %s\n", path.c_str());
    std::exit(2);
  }
  if (!S_ISDIR(st.st_mode)) {
    add_file(path, inputs);
    return;
  }
  std::vector<std::string> names;
  if (DIR* dir = opendir(path.c_str())) {
    while (const dirent* entry = readdir(dir)) {
      if (entry->d_name[0] != '.') names.emplace_back(entry->d_name);
    }
    closedir(dir);
  }
  std::sort(names.begin(), names.end());
  for (const std::string& name : names)
    add_file(std::string(path).append("/").append(name), inputs);
}

// A small structure-aware mutator: the harness's checks sit behind record header words and
// cursor values, which random bit flips alone rarely produce.
class Mutator {
 public:
  explicit Mutator(std::uint64_t seed) : engine_(seed) {}

  std::vector<std::uint8_t> mutate(std::vector<std::uint8_t> bytes) {
    const int rounds = static_cast<int>(below(4)) + 1;
    for (int round = 0; round < rounds; ++round) {
      if (bytes.empty()) bytes.resize(8);
      switch (below(7)) {
        case 0:  // Flip a few bits.
          for (std::uint64_t i = below(8) + 1; i > 0; --i) {
            bytes[below(bytes.size())] ^= static_cast<std::uint8_t>(1U << below(8));
          }
          break;
        case 1:  // A record header word at an aligned ring offset.
          put_word(bytes, weft::fuzz::kRingOffset + 8 * below(weft::fuzz::kRingBytes / 8),
                   record_word());
          break;
        case 2:  // Interesting cursors.
          put_word(bytes, below(2) == 0 ? weft::fuzz::kHeadOffset : weft::fuzz::kTailOffset,
                   cursor());
          break;
        case 3:  // Another record_bytes_max.
          put_word(bytes, weft::fuzz::kRecordMaxOffset,
                   (next() & 0xffff) | (bytes.size() > 3 ? bytes[3] : 0U) << 16);
          break;
        case 4:  // Truncate or extend.
          bytes.resize(below(weft::fuzz::kInputBytesMax + 64));
          break;
        case 5:  // A random header field for the (a) view: bytes [8, 4104) are the header.
          put_word(bytes, 8 + 8 * below(16), below(2) == 0 ? next() : below(1U << 16));
          break;
        default:  // The script and the flags.
          bytes[below(std::min<std::size_t>(bytes.size(), weft::fuzz::kRingOffset))] =
              static_cast<std::uint8_t>(next());
          break;
      }
    }
    return bytes;
  }

 private:
  std::uint64_t next() { return engine_(); }
  std::uint64_t below(std::uint64_t bound) { return bound == 0 ? 0 : next() % bound; }

  static void put_word(std::vector<std::uint8_t>& bytes, std::size_t offset, std::uint64_t word) {
    if (bytes.size() < offset + 8) bytes.resize(offset + 8);
    std::memcpy(bytes.data() + offset, &word, 8);
  }

  std::uint64_t record_word() {
    const std::uint32_t types[] = {static_cast<std::uint32_t>(weft::detail::RecordType::kData),
                                   static_cast<std::uint32_t>(weft::detail::RecordType::kPadding),
                                   static_cast<std::uint32_t>(next())};
    const std::uint32_t lengths[] = {0,
                                     static_cast<std::uint32_t>(below(64)),
                                     static_cast<std::uint32_t>(below(2100)),
                                     static_cast<std::uint32_t>(4096 - 8 * below(512) - 8),
                                     0xffff'ffffU,
                                     static_cast<std::uint32_t>(next())};
    return (std::uint64_t{types[below(3)]} << 32) | lengths[below(6)];
  }

  std::uint64_t cursor() {
    switch (below(5)) {
      case 0:
        return 0;
      case 1:
        return 8 * below(1024);
      case 2:
        return 4096 * below(1000) + 8 * below(512);
      case 3:
        return UINT64_MAX - 8 * below(1024) - 7;
      default:
        return next();
    }
  }

  std::mt19937_64 engine_;
};

int write_corpus(const std::string& dir) {
  const auto seeds = weft::fuzz::make_seed_inputs();
  for (std::size_t i = 0; i < seeds.size(); ++i) {
    char name[64];
    std::snprintf(name, sizeof name, "%s/seed-%02zu", dir.c_str(), i);
    std::ofstream file(name, std::ios::binary);
    file.write(reinterpret_cast<const char*>(seeds[i].data()),
               static_cast<std::streamsize>(seeds[i].size()));
    if (!file) {
      std::fprintf(stderr, "cannot write %s\n", name);
      return 2;
    }
  }
  std::printf("wrote %zu seeds to %s\n", seeds.size(), dir.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::uint64_t runs = 0;
  std::uint64_t seed = std::random_device{}();
  std::vector<Input> inputs;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--runs" && i + 1 < argc) {
      runs = std::strtoull(argv[++i], nullptr, 10);
    } else if (arg == "--seed" && i + 1 < argc) {
      seed = std::strtoull(argv[++i], nullptr, 0);
    } else if (arg == "--write-corpus" && i + 1 < argc) {
      return write_corpus(argv[++i]);
    } else if (!arg.empty() && arg[0] == '-') {
      std::fprintf(stderr, "usage: %s [--runs N] [--seed S] [FILE|DIR]...\n", argv[0]);
      return 2;
    } else {
      add_path(arg, inputs);
    }
  }
  struct sigaction action {};
  action.sa_handler = on_alarm;
  sigemptyset(&action.sa_mask);
  sigaction(SIGALRM, &action, nullptr);

  const auto start = std::chrono::steady_clock::now();
  for (const Input& input : inputs) run(input.name, input.bytes);
  if (runs != 0) {
    std::printf("channel_fuzz_driver: %" PRIu64 " mutated inputs, --seed %" PRIu64 "\n", runs,
                seed);
    std::fflush(stdout);
    std::vector<Input> bases = inputs;
    for (auto& bytes : weft::fuzz::make_seed_inputs()) bases.push_back({"built-in", bytes});
    Mutator mutator(seed);
    std::mt19937_64 pick(seed ^ 0xabcdef);
    for (std::uint64_t i = 0; i < runs; ++i) {
      const Input& base = bases[pick() % bases.size()];
      run("mutation " + std::to_string(i) + " of " + base.name + " (--seed " +
              std::to_string(seed) + ")",
          mutator.mutate(base.bytes));
    }
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const weft::fuzz::Stats& stats = weft::fuzz::stats();
  std::printf("channel_fuzz_driver: %zu files and %" PRIu64
              " mutated inputs ran clean in %.2f s\n"
              "  %" PRIu64 " inputs, %" PRIu64 " headers accepted, %" PRIu64
              " channels opened, %" PRIu64 " records read, %" PRIu64 " corruptions found, %" PRIu64
              " producers attached, %" PRIu64 " records written\n",
              inputs.size(), runs, seconds, stats.inputs, stats.headers_accepted,
              stats.channels_opened, stats.records_read, stats.corruptions_found,
              stats.producers_attached, stats.records_written);
  return 0;
}
