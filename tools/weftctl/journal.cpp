// weftctl journal ls|verify|dump DIR: the journals the recorder writes (weft/journal.hpp), read
// without modifying anything. DIR is one journal (a directory of segment files) or a journal
// root holding one journal per channel (weft-recorder --journal-root).
#include "weft/journal.hpp"

#include <dirent.h>
#include <sys/stat.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "weft/inspect.hpp"
#include "weftctl.hpp"

namespace weftctl {

namespace inspect = weft::inspect;
using nlohmann::json;

namespace {

bool is_directory(const std::string& path) {
  struct stat st {};
  return stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

// The journals under `dir`: `dir` itself when it holds segments, else each subdirectory that does.
std::vector<std::string> journal_dirs(const std::string& dir) {
  auto own = weft::list_segments(dir);
  if (own && !own->empty()) return {dir};
  std::vector<std::string> out;
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) return out;
  while (const dirent* entry = readdir(d)) {
    const std::string name = entry->d_name;
    if (name == "." || name == "..") continue;
    const std::string path = dir + "/" + name;
    if (!is_directory(path)) continue;
    auto segments = weft::list_segments(path);
    if (segments && !segments->empty()) out.push_back(path);
  }
  closedir(d);
  std::sort(out.begin(), out.end());
  return out;
}

// The channel the journal follows, as the recorder wrote it into DIR/SOURCE:
// "<created_unix_ns> <name>". Empty when there is none.
std::pair<std::uint64_t, std::string> journal_source(const std::string& dir) {
  std::ifstream in(dir + "/SOURCE");
  std::uint64_t created = 0;
  std::string name;
  if (!(in >> created >> name)) return {0, {}};
  return {created, name};
}

// The durable position the channel's header publishes, when the channel exists and is the one
// the journal follows (same creation time).
std::optional<inspect::JournalInfo> channel_durable(const Global& g, const std::string& dir) {
  const auto [created, name] = journal_source(dir);
  if (name.empty()) return std::nullopt;
  auto view = inspect::ChannelView::open(name, g.dir);
  if (!view) return std::nullopt;
  const inspect::ChannelSnapshot s = view->snapshot(true);
  if (s.created_unix_ns != created || !s.journal) return std::nullopt;
  return s.journal;
}

json segment_json(const weft::SegmentInfo& s) {
  return {{"path", s.path},
          {"index", s.index},
          {"epoch", s.epoch},
          {"first_sequence", s.first_sequence},
          {"last_sequence", s.last_sequence},
          {"records", s.records},
          {"bytes", s.bytes},
          {"file_bytes", s.file_bytes},
          {"modified_unix_ns", s.modified_unix_ns},
          {"header_valid", s.header_valid}};
}

}  // namespace

int cmd_journal_ls(const Global& g, const JournalCommandOptions& o) {
  if (!is_directory(o.dir)) {
    report_error(fmt::format("journal directory {} does not exist", o.dir));
    return kExitProblem;
  }
  const std::vector<std::string> dirs = journal_dirs(o.dir);
  json list = json::array();
  bool problem = false;
  for (const std::string& dir : dirs) {
    auto segments = weft::list_segments(dir);
    json j = {{"dir", dir}};
    const auto [created, channel] = journal_source(dir);
    j["channel"] = channel.empty() ? json(nullptr) : json(channel);
    if (!segments) {
      j["error"] = segments.error().message();
      problem = true;
      list.push_back(j);
      continue;
    }
    json segs = json::array();
    std::uint64_t first = 0;
    std::uint64_t last = 0;
    std::uint64_t records = 0;
    std::uint64_t bytes = 0;
    std::uint64_t file_bytes = 0;
    for (const weft::SegmentInfo& s : *segments) {
      segs.push_back(segment_json(s));
      if (s.records != 0 && first == 0) first = s.first_sequence;
      if (s.last_sequence != 0) last = s.last_sequence;
      records += s.records;
      bytes += s.bytes;
      file_bytes += s.file_bytes;
      problem = problem || !s.header_valid;
    }
    j["segments"] = segs;
    j["first_sequence"] = first;
    j["last_sequence"] = last;
    j["records"] = records;
    j["bytes"] = bytes;
    j["file_bytes"] = file_bytes;
    const auto durable = channel_durable(g, dir);
    j["durable_sequence"] = durable ? json(durable->durable_sequence) : json(nullptr);
    j["durable_position"] = durable ? json(durable->durable_position) : json(nullptr);
    j["recorder"] = durable ? json(inspect::to_string(durable->recorder.liveness)) : json(nullptr);
    list.push_back(j);
  }
  if (g.json) {
    fmt::print("{}\n", json({{"root", o.dir}, {"journals", list}}).dump(2));
    return problem ? kExitProblem : kExitOk;
  }
  if (list.empty()) {
    fmt::print("no journal in {}\n", o.dir);
    return kExitOk;
  }
  for (const json& j : list) {
    fmt::print("{}{}\n", j["dir"].get<std::string>(),
               j["channel"].is_null()
                   ? ""
                   : fmt::format("  (channel {})", j["channel"].get<std::string>()));
    if (j.contains("error")) {
      fmt::print("  ERROR {}\n", j["error"].get<std::string>());
      continue;
    }
    fmt::print("  sequences {} .. {}  {} records  {} of records in {} on disk",
               j["first_sequence"].get<std::uint64_t>(), j["last_sequence"].get<std::uint64_t>(),
               j["records"].get<std::uint64_t>(), human_bytes(j["bytes"].get<std::uint64_t>()),
               human_bytes(j["file_bytes"].get<std::uint64_t>()));
    if (!j["durable_sequence"].is_null()) {
      fmt::print("  durable: sequence {} (channel position {}, recorder {})",
                 j["durable_sequence"].get<std::uint64_t>(),
                 j["durable_position"].get<std::uint64_t>(), j["recorder"].get<std::string>());
    }
    fmt::print("\n  {:>8} {:>6} {:>12} {:>12} {:>10} {:>10}  {}\n", "SEGMENT", "EPOCH", "FIRST",
               "LAST", "RECORDS", "BYTES", "HEADER");
    for (const json& s : j["segments"]) {
      fmt::print("  {:>8} {:>6} {:>12} {:>12} {:>10} {:>10}  {}\n", s["index"].get<std::uint64_t>(),
                 s["epoch"].get<std::uint64_t>(), s["first_sequence"].get<std::uint64_t>(),
                 s["last_sequence"].get<std::uint64_t>(), s["records"].get<std::uint64_t>(),
                 human_bytes(s["bytes"].get<std::uint64_t>()),
                 s["header_valid"].get<bool>() ? "ok" : "INVALID");
    }
  }
  return problem ? kExitProblem : kExitOk;
}

int cmd_journal_verify(const Global& g, const JournalCommandOptions& o) {
  if (!is_directory(o.dir)) {
    report_error(fmt::format("journal directory {} does not exist", o.dir));
    return kExitProblem;
  }
  std::vector<std::string> dirs = journal_dirs(o.dir);
  if (dirs.empty()) dirs.push_back(o.dir);  // Let verify_journal say what is missing.
  json list = json::array();
  bool problem = false;
  for (const std::string& dir : dirs) {
    auto report = weft::verify_journal(dir);
    json j = {{"dir", dir}};
    if (!report) {
      j["ok"] = false;
      j["error"] = report.error().message();
      problem = true;
      list.push_back(j);
      continue;
    }
    json issues = json::array();
    for (const weft::RecordIssue& issue : report->issues) {
      issues.push_back({{"segment", issue.segment},
                        {"offset", issue.offset},
                        {"sequence", issue.sequence},
                        {"what", issue.what}});
    }
    // A torn tail (bytes after the last whole record, from a crash mid-write) is what recovery
    // truncates: reported, not a failure. A bad record with good records after it is.
    const bool ok = !report->corrupted;
    j["ok"] = ok;
    j["segments"] = report->segments;
    j["records"] = report->records;
    j["bytes"] = report->bytes;
    j["first_sequence"] = report->first_sequence;
    j["last_sequence"] = report->last_sequence;
    j["torn_tail_bytes"] = report->torn_tail_bytes;
    j["corrupted"] = report->corrupted;
    j["issues"] = issues;
    const auto durable = channel_durable(g, dir);
    if (durable && durable->durable_sequence > report->last_sequence) {
      // The channel says more is durable than the disk holds: acknowledged records are missing.
      j["ok"] = false;
      j["missing_durable"] =
          fmt::format("the channel publishes durable sequence {} but the journal ends at {}",
                      durable->durable_sequence, report->last_sequence);
    }
    problem = problem || !j["ok"].get<bool>();
    list.push_back(j);
  }
  if (g.json) {
    fmt::print("{}\n", json({{"root", o.dir}, {"journals", list}, {"ok", !problem}}).dump(2));
    return problem ? kExitProblem : kExitOk;
  }
  for (const json& j : list) {
    if (j.contains("error")) {
      fmt::print("{}: FAILED\n  {}\n", j["dir"].get<std::string>(), j["error"].get<std::string>());
      continue;
    }
    fmt::print("{}: {}  {} segments, {} records (sequences {} .. {}), {} of payload{}\n",
               j["dir"].get<std::string>(), j["ok"].get<bool>() ? "ok" : "FAILED",
               j["segments"].get<std::uint64_t>(), j["records"].get<std::uint64_t>(),
               j["first_sequence"].get<std::uint64_t>(), j["last_sequence"].get<std::uint64_t>(),
               human_bytes(j["bytes"].get<std::uint64_t>()),
               j["torn_tail_bytes"].get<std::uint64_t>() != 0
                   ? fmt::format("; torn tail of {} bytes (recovery truncates it)",
                                 j["torn_tail_bytes"].get<std::uint64_t>())
                   : "");
    for (const json& issue : j["issues"]) {
      fmt::print("  {} offset {} (sequence {}): {}\n", issue["segment"].get<std::string>(),
                 issue["offset"].get<std::uint64_t>(), issue["sequence"].get<std::uint64_t>(),
                 issue["what"].get<std::string>());
    }
    if (j.contains("missing_durable"))
      fmt::print("  {}\n", j["missing_durable"].get<std::string>());
  }
  return problem ? kExitProblem : kExitOk;
}

int cmd_journal_dump(const Global& g, const JournalCommandOptions& o) {
  auto reader = weft::JournalReader::open(o.dir, o.from);
  if (!reader) {
    report_error(reader.error().message());
    return kExitProblem;
  }
  json records = json::array();
  std::size_t count = 0;
  bool corrupted = false;
  weft::JournalRecord record;
  while (count < o.count) {
    const weft::ReadStatus status = reader->next(record);
    if (status == weft::ReadStatus::kEnd) break;
    if (status == weft::ReadStatus::kCorrupted) {
      corrupted = true;
      break;
    }
    ++count;
    const std::size_t shown = std::min<std::size_t>(record.payload.size(), o.bytes);
    std::vector<std::byte> payload(record.payload.begin(),
                                   record.payload.begin() + static_cast<std::ptrdiff_t>(shown));
    if (g.json) {
      std::string hex;
      for (const std::byte b : payload) hex += fmt::format("{:02x}", static_cast<unsigned>(b));
      json j = {{"sequence", record.sequence},
                {"timestamp_ns", record.timestamp_ns},
                {"length", record.payload.size()},
                {"payload_hex", hex},
                {"truncated", shown < record.payload.size()}};
      j["source_position"] = record.source_position == ~std::uint64_t{0}
                                 ? json(nullptr)
                                 : json(record.source_position);
      records.push_back(j);
    } else {
      fmt::print("#{} {} bytes{}{}\n", record.sequence, record.payload.size(),
                 record.source_position == ~std::uint64_t{0}
                     ? ""
                     : fmt::format(" (channel end {})", record.source_position),
                 o.hex ? "" : fmt::format("  \"{}\"", printable(payload, 96)));
      if (o.hex) print_hexdump(payload, record.payload.size());
    }
  }
  if (g.json) {
    json doc = {{"dir", o.dir}, {"from", o.from}, {"records", records}, {"corrupted", corrupted}};
    if (corrupted) doc["error"] = reader->last_error().message();
    fmt::print("{}\n", doc.dump(2));
  } else if (corrupted) {
    report_error(reader->last_error().message());
  }
  return corrupted ? kExitProblem : kExitOk;
}

}  // namespace weftctl
