// weft-recorder: makes channels durable. For each --channel it runs one recorder (a shard, on its
// own thread) that tails the channel and appends to the journal in JOURNAL_ROOT/NAME, publishing
// the durable position into the channel header. Stops cleanly on SIGTERM or SIGINT (exit 0),
// resumes after a crash without losing a durable record or duplicating one.
//
//   weft-recorder --channel NAME [--channel NAME ...] --journal-root DIR [--shm-dir DIR]
//                 [--retain-bytes N] [--retain-age SECONDS]
//
// Exit status: 0 after a clean stop, 1 when a recorder failed (the message says which channel
// and why), 2 on a usage error.
#include <pthread.h>
#include <signal.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>

#include "weft/flush_policy.hpp"
#include "weft/journal.hpp"
#include "weft/recorder.hpp"

namespace {

constexpr int kExitRunError = 1;
constexpr int kExitUsage = 2;

struct Config {
  std::vector<std::string> channels;
  std::string journal_root;
  std::string shm_dir;
  std::uint64_t retain_bytes = 0;
  std::uint64_t retain_age_s = 0;
  std::string sync = "auto";
  std::uint64_t segment_bytes = std::uint64_t{64} << 20;
  std::uint32_t spare_segments = 1;
  bool spin = false;
};

weft::JournalSync parse_sync(const std::string& text) {
  if (text == "fdatasync") return weft::JournalSync::kWriteFdatasync;
  if (text == "direct") return weft::JournalSync::kDirectDsync;
  if (text == "none") return weft::JournalSync::kNone;
  return weft::JournalSync::kAuto;
}

}  // namespace

int main(int argc, char** argv) {
  Config config;
  CLI::App app{"weft-recorder: record channels into journals (one shard per --channel)"};
  app.add_option("--channel", config.channels, "Channel to record (repeat for shards)")->required();
  app.add_option("--journal-root", config.journal_root,
                 "Directory holding one journal per channel (DIR/NAME)")
      ->required();
  app.add_option("--shm-dir", config.shm_dir,
                 "Directory of the channel files (default: $WEFT_SHM_DIR, else /dev/shm/weft)");
  app.add_option("--retain-bytes", config.retain_bytes,
                 "Keep at most this many bytes of segments per journal (0: no limit)");
  app.add_option("--retain-age", config.retain_age_s,
                 "Remove segments last written more than this many seconds ago (0: never)");
  app.add_option("--sync", config.sync,
                 "auto (default: direct where the file system takes O_DIRECT, else fdatasync; "
                 "none on tmpfs), fdatasync, direct or none")
      ->check(CLI::IsMember({"auto", "fdatasync", "direct", "none"}));
  app.add_option("--segment-bytes", config.segment_bytes,
                 "Bytes per segment file (default 64 MiB)");
  app.add_option("--spare-segments", config.spare_segments,
                 "Segments prepared (zero-filled or recycled) ahead of use (default 1)");
  app.add_flag("--spin", config.spin, "Busy-poll instead of sleeping (lowest latency, one core)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "weft-recorder: %s\nRun with --help for usage.\n", e.what());
    return kExitUsage;
  }
  for (std::size_t i = 0; i < config.channels.size(); ++i) {
    for (std::size_t j = 0; j < i; ++j) {
      if (config.channels[i] == config.channels[j]) {
        std::fprintf(stderr, "weft-recorder: --channel %s given twice\n",
                     config.channels[i].c_str());
        return kExitUsage;
      }
    }
  }

  // Block the stop signals in every thread; one thread takes them with sigwait.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  std::vector<weft::Recorder> recorders;
  for (const std::string& channel : config.channels) {
    weft::RecorderOptions options;
    options.shm_dir = config.shm_dir;
    options.spin = config.spin;
    options.journal.retain_bytes = config.retain_bytes;
    options.journal.retain_age = std::chrono::seconds(config.retain_age_s);
    options.journal.sync = parse_sync(config.sync);
    options.journal.segment_bytes = config.segment_bytes;
    options.journal.spare_segments = config.spare_segments;
    const std::string dir = config.journal_root + "/" + channel;
    auto recorder = weft::Recorder::open(channel, dir, std::move(options));
    if (!recorder) {
      std::fprintf(stderr, "weft-recorder: channel %s (journal %s): %s\n", channel.c_str(),
                   dir.c_str(), recorder.error().message().c_str());
      return kExitRunError;
    }
    const weft::RecoveryReport& recovery = recorder->journal().recovery();
    std::fprintf(stderr,
                 "weft-recorder: %s -> %s: recovered %llu records (last sequence %llu), dropped "
                 "%llu torn records (%llu bytes); sync %s\n",
                 channel.c_str(), dir.c_str(), static_cast<unsigned long long>(recovery.records),
                 static_cast<unsigned long long>(recovery.last_sequence),
                 static_cast<unsigned long long>(recovery.dropped_records),
                 static_cast<unsigned long long>(recovery.dropped_bytes),
                 weft::journal_sync_name(recorder->journal().sync_mode()));
    recorders.push_back(std::move(*recorder));
  }

  std::atomic<bool> stop{false};
  std::atomic<int> failures{0};
  std::vector<std::thread> shards;
  for (std::size_t i = 0; i < recorders.size(); ++i) {
    shards.emplace_back([&, i] {
      auto ran = recorders[i].run(stop);
      if (!ran) {
        std::fprintf(stderr, "weft-recorder: channel %s: %s\n", config.channels[i].c_str(),
                     ran.error().message().c_str());
        // Relaxed: counted and read after join().
        failures.fetch_add(1, std::memory_order_relaxed);
        // Relaxed: a stop request; the other shards see it within one idle wait.
        stop.store(true, std::memory_order_relaxed);
        kill(getpid(), SIGTERM);  // Wake the signal thread.
      }
    });
  }
  int signal_number = 0;
  sigwait(&stop_signals, &signal_number);
  stop.store(true, std::memory_order_relaxed);  // Relaxed: see above.
  for (std::thread& shard : shards) shard.join();
  for (std::size_t i = 0; i < recorders.size(); ++i) {
    const weft::RecorderStats stats = recorders[i].stats();
    std::fprintf(stderr,
                 "weft-recorder: %s: stopped; %llu records appended, %llu flushes, durable "
                 "position %llu\n",
                 config.channels[i].c_str(), static_cast<unsigned long long>(stats.records),
                 static_cast<unsigned long long>(stats.journal.flushes),
                 static_cast<unsigned long long>(stats.durable_position));
  }
  recorders.clear();
  return failures.load(std::memory_order_relaxed) == 0 ? 0 : kExitRunError;
}
