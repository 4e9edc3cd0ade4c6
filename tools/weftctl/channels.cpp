// weftctl's channel commands: ls, show, watch, dump, verify, unblock, gc, rm. They read channels
// through weft::inspect (a read-only mapping: no role, no lock, no cursor moves); only unblock,
// gc and rm change anything, and each says what it changed.
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <ctime>
#include <iostream>
#include <map>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "weft/channel.hpp"
#include "weft/inspect.hpp"
#include "weft/mpsc.hpp"
#include "weft/numa.hpp"
#include "weftctl.hpp"

namespace weftctl {

namespace inspect = weft::inspect;
using nlohmann::json;
using weft::Channel;
using weft::ChannelKind;
using weft::ChannelPlacement;
using weft::NumaPolicy;
using weft::OpenOptions;
using weft::PageNodes;
using weft::Result;
using weft::unexpected;

namespace {

std::atomic<bool> g_interrupted{false};

void on_interrupt(int /*signal*/) { g_interrupted.store(true, std::memory_order_relaxed); }

void install_interrupt_handler() {
  struct sigaction action {};
  action.sa_handler = on_interrupt;
  sigemptyset(&action.sa_mask);
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);
}

void sleep_for_ms(double ms) {
  if (ms <= 0) return;
  std::this_thread::sleep_for(std::chrono::microseconds(static_cast<std::int64_t>(ms * 1000)));
}

std::string hex_string(const std::vector<std::byte>& bytes) {
  std::string out;
  out.reserve(bytes.size() * 2);
  for (const std::byte b : bytes) out += fmt::format("{:02x}", static_cast<unsigned>(b));
  return out;
}

std::string role_json_liveness(const inspect::RoleInfo& r) {
  return inspect::to_string(r.liveness);
}

json role_to_json(const inspect::RoleInfo& r) {
  json j = {{"pid", r.pid},
            {"liveness", role_json_liveness(r)},
            {"start_ticks", r.start_ticks},
            {"heartbeat_s", r.heartbeat_s},
            {"attach_count", r.attach_count}};
  j["heartbeat_age_s"] = r.heartbeat_age_s >= 0 ? json(r.heartbeat_age_s) : json(nullptr);
  return j;
}

json position_json(std::uint64_t p) { return p == ~std::uint64_t{0} ? json(nullptr) : json(p); }

// A channel opened for sampling: its view and the first snapshot.
struct Sampled {
  std::string name;
  std::optional<inspect::ChannelView> view;
  std::optional<inspect::ChannelSnapshot> before;
  std::optional<inspect::ChannelSnapshot> after;
  std::string error;
  bool stale = false;
  double rate = 0;
};

// Opens every named channel, snapshots them, waits `interval_ms` once for all, snapshots again
// and classifies. Corrupt or vanished channels carry their error.
std::vector<Sampled> sample(const Global& g, const std::vector<std::string>& names,
                            double interval_ms, std::int64_t stuck_after_s) {
  std::vector<Sampled> out(names.size());
  for (std::size_t i = 0; i < names.size(); ++i) {
    out[i].name = names[i];
    auto view = inspect::ChannelView::open(names[i], g.dir);
    if (!view) {
      out[i].error = view.error().message();
      continue;
    }
    out[i].view.emplace(std::move(*view));
    if (interval_ms > 0) out[i].before = out[i].view->snapshot(false);
  }
  if (interval_ms > 0) sleep_for_ms(interval_ms);
  for (Sampled& s : out) {
    if (!s.view) continue;
    s.after = s.view->snapshot(true);
    auto stale = weft::Channel::is_stale(s.name, g.dir);
    s.stale = stale.has_value() && *stale;
    inspect::classify(*s.after, s.before ? &*s.before : nullptr, s.stale, stuck_after_s);
    if (s.before) s.rate = rate_per_s(*s.before, *s.after);
  }
  return out;
}

bool is_problem(const Sampled& s) {
  if (!s.error.empty()) return true;
  return s.after->status == inspect::Status::kStuck || s.after->status == inspect::Status::kStale;
}

json ls_row_json(const Sampled& s, bool sampled) {
  if (!s.error.empty()) {
    return {{"name", s.name}, {"status", "error"}, {"error", s.error}};
  }
  const inspect::ChannelSnapshot& a = *s.after;
  json j = {{"name", s.name},
            {"kind", kind_name(a.kind)},
            {"lossy", a.lossy},
            {"capacity_bytes", a.capacity_bytes},
            {"used_bytes", a.used_bytes},
            {"fill_ratio", a.capacity_bytes == 0 ? 0.0
                                                 : static_cast<double>(a.used_bytes) /
                                                       static_cast<double>(a.capacity_bytes)},
            {"producers_alive", a.producers_alive},
            {"producers_dead", a.producers_dead},
            {"consumers_alive", a.consumers_alive},
            {"consumers_dead", a.consumers_dead},
            {"records_committed", a.records_committed},
            {"lag_bytes", a.lag_bytes},
            {"status", inspect::to_string(a.status)},
            {"reason", a.reason}};
  j["lag_records"] = a.lag_records ? json(*a.lag_records) : json(nullptr);
  j["messages_per_s"] = sampled ? json(s.rate) : json(nullptr);
  // Durable lag needs a journal attached (the recorder publishes the durable position).
  j["durable_lag_bytes"] = a.journal ? json(a.journal->durable_lag_bytes) : json(nullptr);
  return j;
}

std::string status_cell(const Sampled& s) {
  if (!s.error.empty()) return "ERROR";
  return inspect::to_string(s.after->status);
}

void print_table(const std::vector<Sampled>& rows, bool sampled) {
  fmt::print("{:<24} {:<15} {:>7} {:>6} {:>7} {:>7} {:>10} {:>9} {:>9} {:>8}  {}\n", "NAME", "KIND",
             "CAP", "FILL", "PROD", "CONS", "MSG/S", "LAG", "LAG_MSGS", "DURABLE", "STATUS");
  for (const Sampled& s : rows) {
    if (!s.error.empty()) {
      fmt::print("{:<24} {}  {}\n", s.name, "ERROR", s.error);
      continue;
    }
    const inspect::ChannelSnapshot& a = *s.after;
    const double fill = a.capacity_bytes == 0 ? 0.0
                                              : 100.0 * static_cast<double>(a.used_bytes) /
                                                    static_cast<double>(a.capacity_bytes);
    const std::string prod = a.producers_dead != 0
                                 ? fmt::format("{}+{}d", a.producers_alive, a.producers_dead)
                                 : fmt::format("{}", a.producers_alive);
    const std::string cons = a.consumers_dead != 0
                                 ? fmt::format("{}+{}d", a.consumers_alive, a.consumers_dead)
                                 : fmt::format("{}", a.consumers_alive);
    fmt::print("{:<24} {:<15} {:>7} {:>5.1f}% {:>7} {:>7} {:>10} {:>9} {:>9} {:>8}  {}\n", s.name,
               kind_label(a), human_bytes(a.capacity_bytes), fill, prod, cons,
               sampled ? human_rate(s.rate) : std::string("-"), human_bytes(a.lag_bytes),
               a.lag_records ? fmt::format("{}", *a.lag_records) : std::string("?"),
               a.journal ? human_bytes(a.journal->durable_lag_bytes) : std::string("-"),
               status_cell(s));
  }
}

}  // namespace

// ---- helpers -----------------------------------------------------------------------------------

// Printable ASCII, with C escapes for the rest.
std::string printable(const std::vector<std::byte>& bytes, std::size_t max_chars) {
  std::string out;
  for (const std::byte b : bytes) {
    if (out.size() >= max_chars) {
      out += "...";
      break;
    }
    const auto c = static_cast<unsigned char>(b);
    if (c == '\\') {
      out += "\\\\";
    } else if (c >= 0x20 && c < 0x7f) {
      out += static_cast<char>(c);
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\t') {
      out += "\\t";
    } else {
      out += fmt::format("\\x{:02x}", c);
    }
  }
  return out;
}

void print_hexdump(const std::vector<std::byte>& bytes, std::uint64_t total_length) {
  for (std::size_t offset = 0; offset < bytes.size(); offset += 16) {
    std::string hex;
    std::string ascii;
    for (std::size_t i = 0; i < 16; ++i) {
      if (offset + i < bytes.size()) {
        const auto c = static_cast<unsigned char>(bytes[offset + i]);
        hex += fmt::format("{:02x} ", c);
        ascii += (c >= 0x20 && c < 0x7f) ? static_cast<char>(c) : '.';
      } else {
        hex += "   ";
      }
      if (i == 7) hex += ' ';
    }
    fmt::print("    {:08x}  {} |{}|\n", offset, hex, ascii);
  }
  if (bytes.size() < total_length) {
    fmt::print("    ... {} more bytes (--bytes shows more)\n", total_length - bytes.size());
  }
}

const char* kind_name(ChannelKind kind) noexcept {
  switch (kind) {
    case ChannelKind::kSpsc:
      return "spsc";
    case ChannelKind::kMpsc:
      return "mpsc";
    case ChannelKind::kBroadcast:
      return "broadcast";
  }
  return "unknown";
}

std::string kind_label(const inspect::ChannelSnapshot& s) {
  if (s.kind == ChannelKind::kBroadcast) return s.lossy ? "broadcast-lossy" : "broadcast";
  return kind_name(s.kind);
}

double rate_per_s(const inspect::ChannelSnapshot& before, const inspect::ChannelSnapshot& after) {
  const std::int64_t dt = after.taken_ns - before.taken_ns;
  if (dt <= 0 || after.records_committed < before.records_committed) return 0;
  return static_cast<double>(after.records_committed - before.records_committed) * 1e9 /
         static_cast<double>(dt);
}

std::string human_bytes(std::uint64_t bytes) {
  constexpr const char* kUnits[] = {"", "Ki", "Mi", "Gi", "Ti"};
  double value = static_cast<double>(bytes);
  int unit = 0;
  while (value >= 1024 && unit < 4) {
    value /= 1024;
    ++unit;
  }
  if (unit == 0) return fmt::format("{}", bytes);
  return value >= 100 ? fmt::format("{:.0f}{}", value, kUnits[unit])
                      : fmt::format("{:.1f}{}", value, kUnits[unit]);
}

std::string human_rate(double per_s) {
  if (per_s < 1000) return fmt::format("{:.0f}", per_s);
  if (per_s < 1e6) return fmt::format("{:.1f}k", per_s / 1e3);
  if (per_s < 1e9) return fmt::format("{:.2f}M", per_s / 1e6);
  return fmt::format("{:.2f}G", per_s / 1e9);
}

void report_error(const std::string& message) { fmt::print(stderr, "weftctl: {}\n", message); }

json to_json(const inspect::ChannelSnapshot& s) {
  json producers = json::array();
  for (const inspect::ProducerInfo& p : s.producers) {
    json j = {{"slot", p.slot},
              {"role", role_to_json(p.role)},
              {"records_committed", p.records_committed},
              {"claims_refused", p.claims_refused}};
    if (s.kind == ChannelKind::kMpsc) {
      j["intent"] = position_json(p.intent);
      j["intent_end"] = position_json(p.intent_end);
      j["chunk_start"] = position_json(p.chunk_start);
      j["chunk_end"] = position_json(p.chunk_end);
      j["chunk_limit"] = position_json(p.chunk_limit);
      j["write_position"] = position_json(p.write_position);
    }
    producers.push_back(j);
  }
  json consumers = json::array();
  for (const inspect::ConsumerInfo& c : s.consumers) {
    json j = {{"slot", c.slot},
              {"role", role_to_json(c.role)},
              {"head_position", position_json(c.head_position)},
              {"records_consumed", c.records_consumed},
              {"lag_bytes", c.lag_bytes}};
    j["lag_records"] = c.lag_records ? json(*c.lag_records) : json(nullptr);
    if (s.kind == ChannelKind::kBroadcast) {
      j["lost_records"] = c.lost_records;
      j["lost_bytes"] = c.lost_bytes;
      j["detached"] = c.detached;
      j["sleeping"] = c.sleeping;
    }
    consumers.push_back(j);
  }
  json j = {{"name", s.name},
            {"path", s.path},
            {"kind", kind_name(s.kind)},
            {"lossy", s.lossy},
            {"layout",
             {{"layout_version", s.layout_version},
              {"size_bytes", s.size_bytes},
              {"header_bytes", s.header_bytes},
              {"capacity_bytes", s.capacity_bytes},
              {"record_bytes_max", s.record_bytes_max},
              {"producers_max", s.producers_max},
              {"consumers_max", s.consumers_max},
              {"unblock_timeout_ns", s.unblock_timeout_ns},
              {"created_unix_ns", s.created_unix_ns},
              {"creator_pid", s.creator_pid},
              {"header_name", s.meta_name},
              {"file_mode", fmt::format("{:04o}", s.file_mode)},
              {"file_uid", s.file_uid},
              {"file_gid", s.file_gid}}},
            {"cursors",
             {{"tail_position", s.tail_position},
              {"head_position", s.head_position},
              {"reserve_position", s.reserve_position},
              {"zeroing_end", s.zeroing_end},
              {"taken_start", s.taken_start},
              {"taken_end", position_json(s.taken_end)},
              {"taken_slot", s.taken_slot}}},
            {"bells",
             {{"data_sleepers", s.data_sleepers},
              {"data_seq", s.data_seq},
              {"space_sleepers", s.space_sleepers},
              {"space_seq", s.space_seq}}},
            {"counters",
             {{"records_committed", s.records_committed},
              {"records_consumed", s.records_consumed},
              {"claims_refused", s.claims_refused},
              {"unblocks", s.unblocks},
              {"unblocked_bytes", s.unblocked_bytes},
              {"detaches", s.detaches}}},
            {"producers", producers},
            {"consumers", consumers},
            {"producers_alive", s.producers_alive},
            {"producers_dead", s.producers_dead},
            {"consumers_alive", s.consumers_alive},
            {"consumers_dead", s.consumers_dead},
            {"used_bytes", s.used_bytes},
            {"lag_bytes", s.lag_bytes},
            {"head_blocked_by_dead_producer", s.head_blocked_by_dead_producer},
            {"stale", s.stale},
            {"status", inspect::to_string(s.status)},
            {"reason", s.reason}};
  j["lag_records"] = s.lag_records ? json(*s.lag_records) : json(nullptr);
  j["blocking_slot"] = s.blocking_slot >= 0 ? json(s.blocking_slot) : json(nullptr);
  if (s.journal) {
    const inspect::JournalInfo& jr = *s.journal;
    j["journal"] = {{"recorder", role_to_json(jr.recorder)},
                    {"durable_position", jr.durable_position},
                    {"durable_sequence", jr.durable_sequence},
                    {"durable_lag_bytes", jr.durable_lag_bytes},
                    {"records_appended", jr.records_appended},
                    {"lost_records", jr.lost_records},
                    {"sync", jr.sync},
                    {"in_flight", jr.in_flight},
                    {"flushes", jr.flushes},
                    {"bytes_durable", jr.bytes_durable},
                    {"records_durable", jr.records_durable},
                    {"errors", jr.errors},
                    {"retries", jr.retries},
                    {"stats_consistent", jr.stats_consistent},
                    {"batcher",
                     {{"arrival_records_per_s", jr.policy.arrival_records_per_s},
                      {"arrival_bytes_per_s", jr.policy.arrival_bytes_per_s},
                      {"flush_fixed_ns", jr.policy.flush_fixed_ns},
                      {"flush_ns_per_byte", jr.policy.flush_ns_per_byte},
                      {"flush_cost_spread_ns", jr.policy.flush_cost_spread_ns},
                      {"gather_bytes", jr.policy.gather_bytes},
                      {"max_delay_ns", jr.policy.max_delay_ns},
                      {"max_in_flight", jr.policy.max_in_flight},
                      {"max_io_workers", jr.policy.max_io_workers}}}};
  } else {
    j["journal"] = nullptr;  // No recorder has attached.
  }
  return j;
}

// ---- ls ----------------------------------------------------------------------------------------

int cmd_ls(const Global& g, const LsOptions& o) {
  auto names = inspect::list_channels(g.dir);
  if (!names) {
    report_error(names.error().message());
    return kExitProblem;
  }
  const std::vector<Sampled> rows = sample(g, *names, o.interval_ms, o.stuck_after_s);
  const bool sampled = o.interval_ms > 0;
  bool problem = false;
  for (const Sampled& s : rows) problem = problem || is_problem(s);
  if (g.json) {
    json list = json::array();
    for (const Sampled& s : rows) list.push_back(ls_row_json(s, sampled));
    const json doc = {{"dir", weft::Channel::resolve_dir(g.dir)},
                      {"interval_ms", o.interval_ms},
                      {"channels", list},
                      {"problems", problem}};
    fmt::print("{}\n", doc.dump(2));
  } else if (rows.empty()) {
    fmt::print("no channels in {}\n", weft::Channel::resolve_dir(g.dir));
  } else {
    print_table(rows, sampled);
  }
  return problem ? kExitProblem : kExitOk;
}

// ---- show --------------------------------------------------------------------------------------

namespace {

void print_role(const char* label, std::uint32_t slot, const inspect::RoleInfo& r) {
  fmt::print("  {} {:>4}  pid {:<8} {:<6} heartbeat {:>6}  attaches {}\n", label, slot, r.pid,
             inspect::to_string(r.liveness),
             r.heartbeat_age_s >= 0 ? fmt::format("{}s ago", r.heartbeat_age_s) : "never",
             r.attach_count);
}

std::string pos_text(std::uint64_t p) {
  return p == ~std::uint64_t{0} ? std::string("-") : fmt::format("{}", p);
}

void print_show(const inspect::ChannelSnapshot& s, std::optional<double> rate) {
  fmt::print("channel {}  ({})\n", s.name, s.path);
  fmt::print("status: {}{}\n", inspect::to_string(s.status),
             s.reason.empty() ? "" : fmt::format(" — {}", s.reason));
  fmt::print("layout:\n");
  fmt::print("  kind {}  layout_version {}  file {} bytes (mode {:04o}, uid {}, gid {})\n",
             kind_label(s), s.layout_version, s.size_bytes, s.file_mode, s.file_uid, s.file_gid);
  fmt::print("  header {} bytes  ring {} bytes  record_bytes_max {}\n", s.header_bytes,
             s.capacity_bytes, s.record_bytes_max);
  if (s.kind == ChannelKind::kMpsc) {
    fmt::print("  producer slots {}  unblock timeout {:.3f} s\n", s.producers_max,
               static_cast<double>(s.unblock_timeout_ns) / 1e9);
  }
  if (s.kind == ChannelKind::kBroadcast) fmt::print("  consumer slots {}\n", s.consumers_max);
  const std::time_t created = static_cast<std::time_t>(s.created_unix_ns / 1'000'000'000);
  std::tm tm{};
  gmtime_r(&created, &tm);
  fmt::print("  created {:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z by pid {}  header name '{}'\n",
             tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
             s.creator_pid, s.meta_name);
  fmt::print("cursors:\n");
  fmt::print("  tail_position {}  head_position {}  used {} bytes ({:.1f}%)\n", s.tail_position,
             s.head_position, s.used_bytes,
             100.0 * static_cast<double>(s.used_bytes) / static_cast<double>(s.capacity_bytes));
  if (s.kind == ChannelKind::kMpsc) {
    fmt::print("  zeroing_end {}  taken [{}, {}) of slot {}\n", s.zeroing_end, s.taken_start,
               pos_text(s.taken_end), s.taken_slot);
  }
  if (s.kind == ChannelKind::kBroadcast && s.lossy) {
    fmt::print("  reserve_position {}\n", s.reserve_position);
  }
  fmt::print("  lag {} bytes, {} records{}\n", s.lag_bytes,
             s.lag_records ? fmt::format("{}", *s.lag_records) : std::string("?"),
             s.head_blocked_by_dead_producer
                 ? fmt::format("  (head blocked by dead producer slot {})", s.blocking_slot)
                 : "");
  fmt::print("bells:\n  data: {} sleepers, seq {}   space: {} sleepers, seq {}\n", s.data_sleepers,
             s.data_seq, s.space_sleepers, s.space_seq);
  fmt::print("counters:\n  records committed {}  consumed {}  claims refused {}\n",
             s.records_committed, s.records_consumed, s.claims_refused);
  if (s.kind == ChannelKind::kMpsc) {
    fmt::print("  unblocks {} ({} bytes padded)\n", s.unblocks, s.unblocked_bytes);
  }
  if (s.kind == ChannelKind::kBroadcast) fmt::print("  detaches {}\n", s.detaches);
  if (rate) fmt::print("  rate {} msgs/s (sampled)\n", human_rate(*rate));
  fmt::print("producers ({} alive, {} dead):\n", s.producers_alive, s.producers_dead);
  for (const inspect::ProducerInfo& p : s.producers) {
    print_role("slot", p.slot, p.role);
    fmt::print("             committed {}  refused {}", p.records_committed, p.claims_refused);
    if (s.kind == ChannelKind::kMpsc) {
      fmt::print("  chunk [{}, {}) limit {}  write {}  intent [{}, {})", pos_text(p.chunk_start),
                 pos_text(p.chunk_end), pos_text(p.chunk_limit), pos_text(p.write_position),
                 pos_text(p.intent), pos_text(p.intent_end));
    }
    fmt::print("\n");
  }
  fmt::print("consumers ({} alive, {} dead):\n", s.consumers_alive, s.consumers_dead);
  for (const inspect::ConsumerInfo& c : s.consumers) {
    print_role("slot", c.slot, c.role);
    fmt::print("             head {}  consumed {}  lag {} bytes / {} records",
               pos_text(c.head_position), c.records_consumed, c.lag_bytes,
               c.lag_records ? fmt::format("{}", *c.lag_records) : std::string("?"));
    if (s.kind == ChannelKind::kBroadcast) {
      fmt::print("  lost {} records ({} bytes){}{}", c.lost_records, c.lost_bytes,
                 c.detached ? "  detached" : "", c.sleeping ? "  asleep" : "");
    }
    fmt::print("\n");
  }
  if (!s.journal) {
    fmt::print("journal: none attached\n");
    return;
  }
  const inspect::JournalInfo& j = *s.journal;
  fmt::print("journal (recorder):\n");
  print_role("recorder", 0, j.recorder);
  fmt::print("  durable position {} (sequence {})  durable lag {} bytes  sync {}\n",
             j.durable_position, j.durable_sequence, j.durable_lag_bytes, j.sync);
  fmt::print("  appended {} records  durable {} records / {} bytes in {} flushes  in flight {}\n",
             j.records_appended, j.records_durable, j.bytes_durable, j.flushes, j.in_flight);
  fmt::print("  errors {}  retries {}  lost (lossy) {}{}\n", j.errors, j.retries, j.lost_records,
             j.stats_consistent ? "" : "  (statistics were changing while read)");
  fmt::print("batcher:\n");
  fmt::print(
      "  estimates: arrivals {:.0f} records/s, {:.0f} bytes/s; flush cost {:.0f} ns + "
      "{:.3f} ns/byte (spread {:.0f} ns)\n",
      j.policy.arrival_records_per_s, j.policy.arrival_bytes_per_s, j.policy.flush_fixed_ns,
      j.policy.flush_ns_per_byte, j.policy.flush_cost_spread_ns);
  fmt::print(
      "  choices: gather {} bytes, wait at most {:.1f} us, {} flushes in flight at most, io-wq "
      "workers {}\n",
      j.policy.gather_bytes, static_cast<double>(j.policy.max_delay_ns) / 1e3,
      j.policy.max_in_flight,
      j.policy.max_io_workers == 0 ? std::string("(kernel's limit)")
                                   : std::to_string(j.policy.max_io_workers));
}

// Where the channel's pages are (issue 8): what its creator asked for, from the header, and what
// the kernel reports now (move_pages, a query that moves nothing). A read-only open: no role, no
// lock, no cursor.
Result<ChannelPlacement> read_placement(const Global& g, const std::string& name) {
  OpenOptions options;
  options.dir = g.dir;
  options.read_only = true;
  auto channel = Channel::open(name, options);
  if (!channel) return unexpected(channel.error());
  return channel->placement();
}

std::string node_counts(const PageNodes& pages) {
  std::string out;
  for (std::size_t node = 0; node < pages.pages_on_node.size(); ++node) {
    if (pages.pages_on_node[node] == 0) continue;
    out += fmt::format("{}node {}: {} pages", out.empty() ? "" : ", ", node,
                       pages.pages_on_node[node]);
  }
  if (pages.pages_absent != 0) {
    out += fmt::format("{}{} not present", out.empty() ? "" : ", ", pages.pages_absent);
  }
  return out.empty() ? std::string("no pages") : out;
}

void print_placement(const Result<ChannelPlacement>& placement) {
  fmt::print("placement:\n");
  if (!placement) {
    fmt::print("  unknown: {}\n", placement.error().message());
    return;
  }
  const ChannelPlacement& p = *placement;
  fmt::print(
      "  pages of {} KiB  node requested {}{}  policy {}  mlock {}\n", p.page_bytes / 1024,
      p.node_requested < 0 ? std::string("none") : fmt::format("{}", p.node_requested),
      p.cpu_requested < 0 ? std::string() : fmt::format(" (node of CPU {})", p.cpu_requested),
      p.policy == NumaPolicy::kBind ? "bind" : "preferred", p.lock_memory ? "yes" : "no");
  if (p.pages_known) {
    fmt::print("  pages now: {}\n", node_counts(p.pages));
  } else {
    fmt::print("  pages now: unknown (no NUMA support in this kernel or libnuma)\n");
  }
}

json placement_json(const Result<ChannelPlacement>& placement) {
  if (!placement) return json{{"error", placement.error().message()}};
  const ChannelPlacement& p = *placement;
  json j{{"page_bytes", p.page_bytes},
         {"node_requested", p.node_requested < 0 ? json(nullptr) : json(p.node_requested)},
         {"cpu_requested", p.cpu_requested < 0 ? json(nullptr) : json(p.cpu_requested)},
         {"policy", p.policy == NumaPolicy::kBind ? "bind" : "preferred"},
         {"mlock", p.lock_memory},
         {"pages_known", p.pages_known}};
  if (p.pages_known) {
    j["pages_on_node"] = p.pages.pages_on_node;
    j["pages_absent"] = p.pages.pages_absent;
  }
  return j;
}

}  // namespace

int cmd_show(const Global& g, const ShowOptions& o) {
  std::vector<Sampled> rows = sample(g, {o.name}, o.interval_ms, o.stuck_after_s);
  Sampled& s = rows.front();
  if (!s.error.empty()) {
    report_error(s.error);
    return kExitProblem;
  }
  const std::optional<double> rate =
      o.interval_ms > 0 ? std::optional<double>(s.rate) : std::nullopt;
  if (g.json) {
    json j = to_json(*s.after);
    j["messages_per_s"] = rate ? json(*rate) : json(nullptr);
    j["placement"] = placement_json(read_placement(g, o.name));
    fmt::print("{}\n", j.dump(2));
  } else {
    print_show(*s.after, rate);
    print_placement(read_placement(g, o.name));
  }
  return is_problem(s) ? kExitProblem : kExitOk;
}

// ---- watch -------------------------------------------------------------------------------------

int cmd_watch(const Global& g, const WatchOptions& o) {
  if (o.interval_s <= 0) {
    report_error("--interval must be positive");
    return kExitUsage;
  }
  install_interrupt_handler();
  // Views stay mapped between refreshes; the directory is listed again every time (--all).
  std::map<std::string, inspect::ChannelView> views;
  std::map<std::string, inspect::ChannelSnapshot> previous;
  const bool clear = !o.no_clear && !g.json && isatty(STDOUT_FILENO) != 0;
  bool problem = false;
  for (std::uint64_t iteration = 0; o.iterations == 0 || iteration < o.iterations; ++iteration) {
    if (iteration != 0) {
      // Sleep in small steps so that Ctrl-C ends the view at once.
      const auto until = std::chrono::steady_clock::now() +
                         std::chrono::microseconds(static_cast<std::int64_t>(o.interval_s * 1e6));
      while (!g_interrupted.load(std::memory_order_relaxed) &&
             std::chrono::steady_clock::now() < until) {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
    }
    if (g_interrupted.load(std::memory_order_relaxed)) break;
    std::vector<std::string> names;
    if (o.all) {
      auto listed = inspect::list_channels(g.dir);
      if (!listed) {
        report_error(listed.error().message());
        return kExitProblem;
      }
      names = std::move(*listed);
    } else {
      names = {o.name};
    }
    std::vector<Sampled> rows(names.size());
    for (std::size_t i = 0; i < names.size(); ++i) {
      Sampled& s = rows[i];
      s.name = names[i];
      auto it = views.find(s.name);
      if (it == views.end()) {
        auto view = inspect::ChannelView::open(s.name, g.dir);
        if (!view) {
          s.error = view.error().message();
          previous.erase(s.name);
          continue;
        }
        it = views.emplace(s.name, std::move(*view)).first;
      }
      if (auto valid = it->second.revalidate(); !valid) {
        s.error = valid.error().message();  // Truncated or rewritten since: map it afresh.
        views.erase(it);
        previous.erase(s.name);
        continue;
      }
      s.after = it->second.snapshot(true);
      auto stale = weft::Channel::is_stale(s.name, g.dir);
      if (!stale && stale.error().code == weft::Errc::kNotFound) {
        s.error = stale.error().message();  // Removed since: drop its view.
        s.after.reset();
        views.erase(it);
        previous.erase(s.name);
        continue;
      }
      s.stale = stale.has_value() && *stale;
      const auto prev = previous.find(s.name);
      const inspect::ChannelSnapshot* before = prev == previous.end() ? nullptr : &prev->second;
      inspect::classify(*s.after, before, s.stale, o.stuck_after_s);
      if (before != nullptr) s.rate = rate_per_s(*before, *s.after);
      previous[s.name] = *s.after;
    }
    // Forget channels that disappeared from the listing.
    for (auto it = views.begin(); it != views.end();) {
      if (std::find(names.begin(), names.end(), it->first) == names.end()) {
        previous.erase(it->first);
        it = views.erase(it);
      } else {
        ++it;
      }
    }
    problem = false;
    for (const Sampled& s : rows) problem = problem || is_problem(s);
    if (g.json) {
      json list = json::array();
      for (const Sampled& s : rows) list.push_back(ls_row_json(s, iteration != 0));
      const json doc = {{"iteration", iteration}, {"channels", list}};
      fmt::print("{}\n", doc.dump());
    } else {
      if (clear) fmt::print("\x1b[H\x1b[2J");
      const std::time_t now = std::time(nullptr);
      std::tm tm{};
      localtime_r(&now, &tm);
      fmt::print("weftctl watch {}  every {:.1f} s  {:02}:{:02}:{:02}  ({} channels)\n",
                 o.all ? weft::Channel::resolve_dir(g.dir) : o.name, o.interval_s, tm.tm_hour,
                 tm.tm_min, tm.tm_sec, rows.size());
      print_table(rows, iteration != 0);
      if (!clear) fmt::print("\n");
    }
    std::fflush(stdout);
  }
  return problem ? kExitProblem : kExitOk;
}

// ---- dump --------------------------------------------------------------------------------------

int cmd_dump(const Global& g, const DumpCommandOptions& o) {
  auto view = inspect::ChannelView::open(o.name, g.dir);
  if (!view) {
    report_error(view.error().message());
    return kExitProblem;
  }
  if (o.consumer >= 0 && view->kind() != ChannelKind::kBroadcast) {
    report_error(
        fmt::format("--consumer applies to broadcast channels; '{}' is {} and has one "
                    "consumer cursor",
                    o.name, kind_name(view->kind())));
    return kExitUsage;
  }
  inspect::DumpOptions options;
  options.consumer_slot = o.consumer;
  options.count_max = o.count;
  options.payload_bytes_max = o.bytes;
  options.include_padding = o.padding;
  auto result = view->dump(options);
  if (!result) {
    report_error(result.error().message());
    return kExitProblem;
  }
  if (g.json) {
    json records = json::array();
    for (const inspect::DumpedRecord& r : result->records) {
      json j = {{"position", r.position},
                {"type", r.gap ? "uncommitted" : (r.padding ? "padding" : "data")},
                {"length", r.length}};
      j["sequence"] = r.sequence ? json(*r.sequence) : json(nullptr);
      if (!r.padding && !r.gap) {
        j["payload_hex"] = hex_string(r.payload);
        j["truncated"] = r.payload.size() < r.length;
      }
      records.push_back(j);
    }
    const json doc = {{"channel", o.name},    {"from", result->from},
                      {"tail", result->tail}, {"complete", result->complete},
                      {"note", result->note}, {"records", records}};
    fmt::print("{}\n", doc.dump(2));
    return kExitOk;
  }
  fmt::print("{}: {} bytes from cursor {} to tail {}\n", o.name, result->tail - result->from,
             result->from, result->tail);
  for (const inspect::DumpedRecord& r : result->records) {
    const std::string seq = r.sequence ? fmt::format(" seq {}", *r.sequence) : std::string();
    if (r.gap) {
      fmt::print("@{} uncommitted claim, {} bytes\n", r.position, r.length);
      continue;
    }
    if (r.padding) {
      fmt::print("@{} padding {} bytes{}\n", r.position, r.length, seq);
      continue;
    }
    if (o.hex) {
      fmt::print("@{} {} bytes{}\n", r.position, r.length, seq);
      print_hexdump(r.payload, r.length);
    } else {
      fmt::print("@{} {} bytes{}  \"{}\"\n", r.position, r.length, seq, printable(r.payload, 96));
    }
  }
  if (!result->note.empty()) fmt::print("({})\n", result->note);
  return kExitOk;
}

// ---- verify ------------------------------------------------------------------------------------

int cmd_verify(const Global& g, const VerifyOptions& o) {
  auto view = inspect::ChannelView::open(o.name, g.dir);
  if (!view) {
    // A header that fails validation is the first violation: report it like the others.
    if (g.json) {
      const json doc = {
          {"channel", o.name},
          {"ok", false},
          {"violations",
           json::array({{{"field", "header"}, {"message", view.error().message()}}})}};
      fmt::print("{}\n", doc.dump(2));
    } else {
      fmt::print("{}: FAILED\n  header: {}\n", o.name, view.error().message());
    }
    return kExitProblem;
  }
  const std::vector<inspect::Violation> violations = view->verify();
  if (g.json) {
    json list = json::array();
    for (const inspect::Violation& v : violations) {
      list.push_back({{"field", v.field}, {"message", v.message}});
    }
    const json doc = {{"channel", o.name}, {"ok", violations.empty()}, {"violations", list}};
    fmt::print("{}\n", doc.dump(2));
  } else if (violations.empty()) {
    fmt::print("{}: ok (header, slots and ring invariants hold)\n", o.name);
  } else {
    fmt::print("{}: FAILED, {} violation{}\n", o.name, violations.size(),
               violations.size() == 1 ? "" : "s");
    for (const inspect::Violation& v : violations) fmt::print("  {}: {}\n", v.field, v.message);
  }
  return violations.empty() ? kExitOk : kExitProblem;
}

// ---- unblock -----------------------------------------------------------------------------------
//
// Only the MPSC consumer may pad a dead producer's claim: padding written by anyone else could
// land after the consumer consumed and zeroed that space, on bytes a producer has claimed again.
// So weftctl never writes into a ring that a live consumer reads. When the consumer role is free
// or its holder is dead, weftctl takes the role itself (so no consumer can attach meanwhile),
// runs the consumer's own stall check until it pads the claim (after the channel's unblock
// timeout, counted from now), and gives the role back without consuming a record. When a live
// consumer holds the role, that consumer pads the claim itself once it has blocked for the
// timeout: weftctl waits for it and reports the outcome.

int cmd_unblock(const Global& g, const UnblockOptions& o) {
  auto view = inspect::ChannelView::open(o.name, g.dir);
  if (!view) {
    report_error(view.error().message());
    return kExitProblem;
  }
  if (view->kind() != ChannelKind::kMpsc) {
    fmt::print(
        "{}: nothing to unblock: only MPSC channels have claims that a dead producer can "
        "leave behind ({} channel; {})\n",
        o.name, kind_name(view->kind()),
        view->kind() == ChannelKind::kBroadcast ? "its producer detaches dead consumers by itself"
                                                : "a dead SPSC producer blocks nothing");
    return kExitOk;
  }
  const inspect::ChannelSnapshot before = view->snapshot(true);
  if (!before.head_blocked_by_dead_producer) {
    fmt::print("{}: nothing to unblock: the head ({}) is not waiting on a dead producer's claim\n",
               o.name, before.head_position);
    return kExitOk;
  }
  const double timeout_s =
      o.timeout_s >= 0 ? o.timeout_s : static_cast<double>(before.unblock_timeout_ns) / 1e9 + 1.0;
  const auto deadline = std::chrono::steady_clock::now() +
                        std::chrono::microseconds(static_cast<std::int64_t>(timeout_s * 1e6));
  const bool consumer_alive = !before.consumers.empty() &&
                              before.consumers.front().role.liveness == inspect::Liveness::kAlive;
  if (consumer_alive) {
    fmt::print(
        "{}: the live consumer (pid {}) pads the dead producer's claim itself after the "
        "unblock timeout ({:.3f} s); waiting for it\n",
        o.name, before.consumers.front().role.pid,
        static_cast<double>(before.unblock_timeout_ns) / 1e9);
    while (std::chrono::steady_clock::now() < deadline) {
      const inspect::ChannelSnapshot now = view->snapshot(true);
      if (now.unblocks > before.unblocks || now.head_position != before.head_position) {
        fmt::print("{}: unblocked by the consumer: {} bytes padded, head now at {}\n", o.name,
                   now.unblocked_bytes - before.unblocked_bytes, now.head_position);
        return kExitOk;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    report_error(
        fmt::format("{}: the consumer (pid {}) did not unblock the head within {:.1f} s: "
                    "is it polling? (a consumer that neither polls nor waits never "
                    "checks)",
                    o.name, before.consumers.front().role.pid, timeout_s));
    return kExitProblem;
  }
  // Take the consumer role ourselves; it is given back when `consumer` goes out of scope.
  bool padded = false;
  std::uint64_t at = 0;
  {
    weft::OpenOptions open_options;
    open_options.dir = g.dir;
    auto consumer = weft::MpscConsumer::open(o.name, open_options);
    if (!consumer) {
      report_error(consumer.error().message());
      return kExitProblem;
    }
    at = consumer->position();
    fmt::print(
        "{}: took the consumer role (it was {}); padding the dead producer's claim at {} "
        "after the unblock timeout ({:.3f} s)\n",
        o.name, before.consumers.empty() ? "free" : "held by a dead process", at,
        static_cast<double>(before.unblock_timeout_ns) / 1e9);
    std::fflush(stdout);
    while (std::chrono::steady_clock::now() < deadline) {
      if (consumer->check_stalled()) {
        padded = true;
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }
  const inspect::ChannelSnapshot after = view->snapshot(true);
  if (!padded) {
    report_error(
        fmt::format("{}: the claim at {} was not padded within {:.1f} s", o.name, at, timeout_s));
    return kExitProblem;
  }
  fmt::print(
      "{}: unblocked: {} bytes padded at {}; the next consumer reads on from there; role "
      "given back\n",
      o.name, after.unblocked_bytes - before.unblocked_bytes, at);
  return kExitOk;
}

// ---- gc and rm ---------------------------------------------------------------------------------

int cmd_gc(const Global& g, const GcOptions& o) {
  auto names = inspect::list_channels(g.dir);
  if (!names) {
    if (names.error().code == weft::Errc::kNotFound) {
      fmt::print("{}\n", g.json ? R"({"removed":[],"kept":[],"errors":[]})" : "nothing to do");
      return kExitOk;
    }
    report_error(names.error().message());
    return kExitProblem;
  }
  json removed = json::array();
  json kept = json::array();
  json errors = json::array();
  for (const std::string& name : *names) {
    auto stale = weft::Channel::is_stale(name, g.dir);
    if (!stale) {
      if (stale.error().code == weft::Errc::kNotFound) continue;  // Removed meanwhile.
      errors.push_back({{"name", name}, {"error", stale.error().message()}});
      continue;
    }
    if (!*stale) {
      kept.push_back({{"name", name}, {"reason", "in use"}});
      continue;
    }
    // Belt and braces: no lock is held, but does a registered process still run? Then keep it.
    std::string live;
    if (auto view = inspect::ChannelView::open(name, g.dir)) {
      const inspect::ChannelSnapshot s = view->snapshot(true);
      for (const auto& p : s.producers) {
        if (p.role.liveness == inspect::Liveness::kAlive)
          live = fmt::format("producer pid {}", p.role.pid);
      }
      for (const auto& c : s.consumers) {
        if (c.role.liveness == inspect::Liveness::kAlive)
          live = fmt::format("consumer pid {}", c.role.pid);
      }
    }
    if (!live.empty()) {
      kept.push_back(
          {{"name", name}, {"reason", fmt::format("unlocked, but registered {} is alive", live)}});
      continue;
    }
    if (o.dry_run) {
      removed.push_back({{"name", name}, {"dry_run", true}});
      continue;
    }
    auto gone = weft::Channel::remove_if_stale(name, g.dir);
    if (!gone) {
      errors.push_back({{"name", name}, {"error", gone.error().message()}});
    } else if (*gone) {
      removed.push_back({{"name", name}});
    } else {
      kept.push_back({{"name", name}, {"reason", "opened meanwhile"}});
    }
  }
  if (auto temps = inspect::list_orphan_temp_files(g.dir)) {
    const std::string dir = weft::Channel::resolve_dir(g.dir);
    for (const std::string& temp : *temps) {
      if (o.dry_run) {
        removed.push_back({{"name", temp}, {"dry_run", true}, {"temporary", true}});
      } else if (::unlink((dir + "/" + temp).c_str()) == 0) {
        removed.push_back({{"name", temp}, {"temporary", true}});
      }
    }
  }
  if (g.json) {
    fmt::print("{}\n", json({{"removed", removed}, {"kept", kept}, {"errors", errors}}).dump(2));
  } else {
    for (const json& r : removed) {
      fmt::print("{} {}{}\n", o.dry_run ? "would remove" : "removed", r["name"].get<std::string>(),
                 r.contains("temporary") ? " (creation left over)" : "");
    }
    for (const json& k : kept) {
      fmt::print("kept {}: {}\n", k["name"].get<std::string>(), k["reason"].get<std::string>());
    }
    for (const json& e : errors) report_error(e["error"].get<std::string>());
    if (removed.empty() && errors.empty()) fmt::print("no stale channels\n");
  }
  return errors.empty() ? kExitOk : kExitProblem;
}

int cmd_rm(const Global& g, const RmOptions& o) {
  auto stale = weft::Channel::is_stale(o.name, g.dir);
  if (!stale) {
    report_error(stale.error().message());
    return kExitProblem;
  }
  if (!*stale && !o.force) {
    report_error(
        fmt::format("channel '{}' is in use (a process has it open): stop its users "
                    "first, or --force to remove the name anyway (processes that have it "
                    "mapped keep using it, and new ones cannot find it)",
                    o.name));
    return kExitProblem;
  }
  if (*stale) {
    auto removed = weft::Channel::remove_if_stale(o.name, g.dir);
    if (!removed) {
      report_error(removed.error().message());
      return kExitProblem;
    }
    if (!*removed && !o.force) {
      report_error(fmt::format("channel '{}' was opened meanwhile; not removed", o.name));
      return kExitProblem;
    }
    if (*removed) {
      fmt::print("removed {}\n", o.name);
      return kExitOk;
    }
  }
  auto unlinked = weft::Channel::unlink(o.name, g.dir);
  if (!unlinked) {
    report_error(unlinked.error().message());
    return kExitProblem;
  }
  fmt::print("removed {} (it was in use: its users keep their mapping)\n", o.name);
  return kExitOk;
}

}  // namespace weftctl
