// weftctl: the commands, shared between main.cpp (the command line) and their implementations.
// Every command returns its exit status: 0 all well, 1 a problem found, 2 a usage error.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "weft/inspect.hpp"

namespace weftctl {

inline constexpr int kExitOk = 0;
inline constexpr int kExitProblem = 1;
inline constexpr int kExitUsage = 2;

struct Global {
  std::string dir;           // Channel directory; empty: $WEFT_SHM_DIR, else /dev/shm/weft.
  std::string journal_root;  // metrics, serve: journals to export too (empty: none).
  bool json = false;
};

struct LsOptions {
  double interval_ms = 50;  // Sampling interval for rates; 0: no sampling.
  std::int64_t stuck_after_s = 5;
};
struct ShowOptions {
  std::string name;
  double interval_ms = 50;
  std::int64_t stuck_after_s = 5;
};
struct WatchOptions {
  std::string name;
  bool all = false;
  double interval_s = 1.0;
  std::uint64_t iterations = 0;  // 0: until interrupted.
  bool no_clear = false;
  std::int64_t stuck_after_s = 5;
};
struct DumpCommandOptions {
  std::string name;
  std::int32_t consumer = -1;
  std::size_t count = 100;
  bool hex = false;
  bool padding = false;
  std::size_t bytes = 4096;  // Payload bytes shown per record at most.
};
struct VerifyOptions {
  std::string name;
};
struct UnblockOptions {
  std::string name;
  double timeout_s = -1;  // -1: the channel's unblock timeout plus a second.
};
struct GcOptions {
  bool dry_run = false;
};
struct RmOptions {
  std::string name;
  bool force = false;
};
struct JournalCommandOptions {
  std::string dir;           // One journal, or a root holding one per channel.
  std::uint64_t from = 1;    // dump: first sequence.
  std::size_t count = 100;   // dump: records at most.
  bool hex = false;          // dump: hex dump of payloads.
  std::size_t bytes = 4096;  // dump: payload bytes shown per record.
};
struct ServeOptions {
  std::string listen = "127.0.0.1:9464";
  double max_seconds = 0;  // 0: until interrupted (tests stop it after a while).
};

int cmd_ls(const Global& g, const LsOptions& o);
int cmd_show(const Global& g, const ShowOptions& o);
int cmd_watch(const Global& g, const WatchOptions& o);
int cmd_dump(const Global& g, const DumpCommandOptions& o);
int cmd_verify(const Global& g, const VerifyOptions& o);
int cmd_unblock(const Global& g, const UnblockOptions& o);
int cmd_gc(const Global& g, const GcOptions& o);
int cmd_rm(const Global& g, const RmOptions& o);
int cmd_metrics(const Global& g);
int cmd_journal_ls(const Global& g, const JournalCommandOptions& o);
int cmd_journal_verify(const Global& g, const JournalCommandOptions& o);
int cmd_journal_dump(const Global& g, const JournalCommandOptions& o);
int cmd_serve(const Global& g, const ServeOptions& o);

// ---- shared helpers (channels.cpp)

const char* kind_name(weft::ChannelKind kind) noexcept;
// "spsc", "mpsc", "broadcast" or "broadcast-lossy".
std::string kind_label(const weft::inspect::ChannelSnapshot& s);
nlohmann::json to_json(const weft::inspect::ChannelSnapshot& s);
// Messages per second between two snapshots of one channel (0 when no time passed).
double rate_per_s(const weft::inspect::ChannelSnapshot& before,
                  const weft::inspect::ChannelSnapshot& after);
// "1.5 Mi", "512" style byte counts and "12.3 k" style rates, for tables.
std::string human_bytes(std::uint64_t bytes);
std::string human_rate(double per_s);
// Printable ASCII with C escapes for the rest, cut after `max_chars`.
std::string printable(const std::vector<std::byte>& bytes, std::size_t max_chars);
// A classic hex dump of `bytes`, saying how many of `total_length` were left out.
void print_hexdump(const std::vector<std::byte>& bytes, std::uint64_t total_length);
// Prints `message` as "weftctl: message" on stderr.
void report_error(const std::string& message);

// The Prometheus text exposition of every channel in the directory (metrics.cpp). `previous`,
// when given, holds each channel's snapshot from the last scrape (and is updated): the status
// then also judges progress (a live consumer that stopped moving is stuck), as ls does.
std::string render_metrics(
    const Global& g, bool* any_error,
    std::map<std::string, weft::inspect::ChannelSnapshot>* previous = nullptr);

}  // namespace weftctl
