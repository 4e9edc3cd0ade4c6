// weftctl metrics and serve: the Prometheus text exposition (format 0.0.4) of every channel.
//
// Names follow the Prometheus conventions: the weft_ prefix, base units in the name (_bytes,
// _seconds), _total on counters, one family per quantity with labels for the channel and the
// consumer. Positions are byte counters that never wrap, so they are exported as counters
// (rate() of weft_channel_produced_bytes_total is the write bandwidth).
#include <dirent.h>
#include <httplib.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "weft/channel.hpp"
#include "weft/inspect.hpp"
#include "weft/journal.hpp"
#include "weftctl.hpp"

namespace weftctl {

namespace inspect = weft::inspect;

namespace {

// Label values escape backslash, double quote and newline (exposition format).
std::string escape_label(std::string_view value) {
  std::string out;
  for (const char c : value) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

// Collects samples per family so that each family is printed once, HELP and TYPE first.
class Exposition {
 public:
  void family(const std::string& name, const char* type, const char* help) {
    if (families_.count(name) == 0) {
      order_.push_back(name);
      families_[name] = Family{type, help, {}};
    }
  }
  void sample(const std::string& name, const std::string& labels, double value) {
    families_[name].samples.push_back(fmt::format("{}{{{}}} {}", name, labels, format(value)));
  }
  void sample(const std::string& name, const std::string& labels, std::uint64_t value) {
    families_[name].samples.push_back(fmt::format("{}{{{}}} {}", name, labels, value));
  }
  [[nodiscard]] std::string text() const {
    std::string out;
    for (const std::string& name : order_) {
      const Family& f = families_.at(name);
      out += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, f.help, name, f.type);
      for (const std::string& s : f.samples) out += s + "\n";
    }
    return out;
  }

 private:
  static std::string format(double value) {
    if (std::isnan(value)) return "NaN";
    if (std::isinf(value)) return value > 0 ? "+Inf" : "-Inf";
    return fmt::format("{}", value);
  }
  struct Family {
    const char* type;
    const char* help;
    std::vector<std::string> samples;
  };
  std::vector<std::string> order_;
  std::map<std::string, Family> families_;
};

void declare(Exposition& e) {
  e.family("weft_channel_info", "gauge", "Always 1: the channel's kind and flavour as labels");
  e.family("weft_channel_up", "gauge",
           "1 when the channel could be read and validated, 0 when it is corrupt or unreadable");
  e.family("weft_channel_capacity_bytes", "gauge", "Bytes in the channel's data ring");
  e.family("weft_channel_record_max_bytes", "gauge", "Largest record payload the channel takes");
  e.family("weft_channel_used_bytes", "gauge",
           "Ring bytes between the slowest consumer's cursor and the tail (fill)");
  e.family("weft_channel_produced_bytes_total", "counter",
           "Ring bytes written so far: the tail position, padding included");
  e.family("weft_channel_consumed_bytes_total", "counter",
           "Ring bytes a consumer has released so far: its head position");
  e.family("weft_channel_records_committed_total", "counter",
           "Data records committed by all producers");
  e.family("weft_channel_records_consumed_total", "counter", "Data records a consumer released");
  e.family("weft_channel_claims_refused_total", "counter",
           "Claims refused for lack of space (back pressure)");
  e.family("weft_channel_lag_bytes", "gauge", "Ring bytes committed that a consumer has not read");
  e.family("weft_channel_lag_records", "gauge",
           "Records committed that a consumer has not read (absent when unknown)");
  e.family("weft_channel_lost_records_total", "counter",
           "Lossy broadcast: records overwritten before the consumer read them");
  e.family("weft_channel_lost_bytes_total", "counter",
           "Lossy broadcast: ring bytes skipped with the lost records");
  e.family("weft_channel_producers", "gauge", "Registered producers by liveness");
  e.family("weft_channel_consumers", "gauge", "Registered consumers by liveness");
  e.family("weft_channel_unblocks_total", "counter",
           "MPSC: dead producers' claims the consumer turned into padding");
  e.family("weft_channel_unblocked_bytes_total", "counter",
           "MPSC: ring bytes padded over dead producers' claims");
  e.family("weft_channel_detaches_total", "counter",
           "Broadcast: dead consumers the producer detached");
  e.family("weft_channel_sleepers", "gauge", "Processes asleep on the channel's doorbell");
  e.family("weft_channel_heartbeat_age_seconds", "gauge",
           "Seconds since a role holder's last heartbeat (attach, wait or slow path)");
  e.family("weft_channel_status", "gauge",
           "1 for the channel's current status (ok, back_pressured, stuck, stale), 0 otherwise");
  e.family("weft_channel_created_timestamp_seconds", "gauge",
           "When the channel was created, in seconds since the Unix epoch");
  e.family("weft_channels", "gauge", "Channel files in the directory");
  e.family("weft_channel_durable_bytes_total", "counter",
           "Channel position up to which every record is durable in the journal");
  e.family("weft_channel_durable_lag_bytes", "gauge",
           "Ring bytes committed but not yet durable in the journal");
  e.family("weft_recorder_up", "gauge",
           "1 while a live recorder holds the channel's recorder role");
  e.family("weft_recorder_records_appended_total", "counter", "Records the recorder appended");
  e.family("weft_recorder_lost_records_total", "counter",
           "Lossy broadcast: records overwritten before the recorder read them");
  e.family("weft_journal_flushes_total", "counter", "Journal flushes that became durable");
  e.family("weft_journal_durable_bytes_total", "counter", "Framed journal bytes made durable");
  e.family("weft_journal_durable_records_total", "counter", "Journal records made durable");
  e.family("weft_journal_errors_total", "counter", "Journal write or sync failures");
  e.family("weft_journal_retries_total", "counter", "Short journal writes and EAGAIN resubmitted");
  e.family("weft_journal_flushes_in_flight", "gauge", "Journal flushes submitted, not yet durable");
  e.family("weft_batcher_arrival_records_per_second", "gauge",
           "The batcher's estimate (EMA) of the record arrival rate");
  e.family("weft_batcher_arrival_bytes_per_second", "gauge",
           "The batcher's estimate (EMA) of the byte arrival rate");
  e.family("weft_batcher_flush_fixed_seconds", "gauge",
           "The batcher's fitted flush cost: fixed part");
  e.family("weft_batcher_flush_seconds_per_byte", "gauge",
           "The batcher's fitted flush cost: per-byte part");
  e.family("weft_batcher_flush_cost_spread_seconds", "gauge",
           "The batcher's estimate of the flush cost's deviation from the fit");
  e.family("weft_batcher_gather_bytes", "gauge", "The batcher's choice: bytes to gather per flush");
  e.family("weft_batcher_max_delay_seconds", "gauge",
           "The batcher's choice: longest wait of the oldest pending record");
  e.family("weft_batcher_max_flushes_in_flight", "gauge",
           "The batcher's choice: flushes in flight at once");
  e.family("weft_batcher_max_io_workers", "gauge",
           "io-wq workers allowed to run the journal's writes and fsyncs (0: the kernel's limit)");
  e.family("weft_journal_up", "gauge",
           "1 when the journal's segments could be read, 0 when not (see weftctl journal verify)");
  e.family("weft_journal_segments", "gauge", "Segment files of the journal");
  e.family("weft_journal_first_sequence", "gauge", "Sequence of the oldest retained record");
  e.family("weft_journal_last_sequence", "gauge", "Sequence of the newest record on disk");
  e.family("weft_journal_records", "gauge", "Records retained in the journal");
  e.family("weft_journal_record_bytes", "gauge", "Bytes of framed records retained");
  e.family("weft_journal_disk_bytes", "gauge", "Bytes of the journal's segment files on disk");
}

std::string status_label(inspect::Status s) {
  switch (s) {
    case inspect::Status::kOk:
      return "ok";
    case inspect::Status::kBackPressured:
      return "back_pressured";
    case inspect::Status::kStuck:
      return "stuck";
    case inspect::Status::kStale:
      return "stale";
  }
  return "unknown";
}

void add_channel(Exposition& e, const inspect::ChannelSnapshot& s) {
  const std::string ch = fmt::format("channel=\"{}\"", escape_label(s.name));
  e.sample("weft_channel_info",
           fmt::format("{},kind=\"{}\",lossy=\"{}\"", ch, kind_name(s.kind), s.lossy ? "1" : "0"),
           std::uint64_t{1});
  e.sample("weft_channel_up", ch, std::uint64_t{1});
  e.sample("weft_channel_capacity_bytes", ch, s.capacity_bytes);
  e.sample("weft_channel_record_max_bytes", ch, s.record_bytes_max);
  e.sample("weft_channel_used_bytes", ch, s.used_bytes);
  e.sample("weft_channel_produced_bytes_total", ch, s.tail_position);
  e.sample("weft_channel_records_committed_total", ch, s.records_committed);
  e.sample("weft_channel_claims_refused_total", ch, s.claims_refused);
  e.sample("weft_channel_created_timestamp_seconds", ch,
           static_cast<double>(s.created_unix_ns) / 1e9);
  for (const inspect::ConsumerInfo& c : s.consumers) {
    const std::string cl = fmt::format("{},consumer=\"{}\"", ch, c.slot);
    if (c.head_position != ~std::uint64_t{0}) {
      e.sample("weft_channel_consumed_bytes_total", cl, c.head_position);
    }
    e.sample("weft_channel_records_consumed_total", cl, c.records_consumed);
    e.sample("weft_channel_lag_bytes", cl, c.lag_bytes);
    if (c.lag_records) e.sample("weft_channel_lag_records", cl, *c.lag_records);
    if (s.kind == weft::ChannelKind::kBroadcast && s.lossy) {
      e.sample("weft_channel_lost_records_total", cl, c.lost_records);
      e.sample("weft_channel_lost_bytes_total", cl, c.lost_bytes);
    }
    if (c.role.heartbeat_age_s >= 0) {
      e.sample("weft_channel_heartbeat_age_seconds", fmt::format("{},role=\"consumer\"", cl),
               static_cast<std::uint64_t>(c.role.heartbeat_age_s));
    }
  }
  for (const inspect::ProducerInfo& p : s.producers) {
    if (p.role.heartbeat_age_s >= 0) {
      e.sample("weft_channel_heartbeat_age_seconds",
               fmt::format("{},producer=\"{}\",role=\"producer\"", ch, p.slot),
               static_cast<std::uint64_t>(p.role.heartbeat_age_s));
    }
  }
  e.sample("weft_channel_producers", ch + ",state=\"alive\"", std::uint64_t{s.producers_alive});
  e.sample("weft_channel_producers", ch + ",state=\"dead\"", std::uint64_t{s.producers_dead});
  e.sample("weft_channel_consumers", ch + ",state=\"alive\"", std::uint64_t{s.consumers_alive});
  e.sample("weft_channel_consumers", ch + ",state=\"dead\"", std::uint64_t{s.consumers_dead});
  if (s.kind == weft::ChannelKind::kMpsc) {
    e.sample("weft_channel_unblocks_total", ch, s.unblocks);
    e.sample("weft_channel_unblocked_bytes_total", ch, s.unblocked_bytes);
  }
  if (s.kind == weft::ChannelKind::kBroadcast)
    e.sample("weft_channel_detaches_total", ch, s.detaches);
  e.sample("weft_channel_sleepers", ch + ",bell=\"data\"", std::uint64_t{s.data_sleepers});
  e.sample("weft_channel_sleepers", ch + ",bell=\"space\"", std::uint64_t{s.space_sleepers});
  if (s.journal) {
    const inspect::JournalInfo& j = *s.journal;
    e.sample("weft_channel_durable_bytes_total", ch, j.durable_position);
    e.sample("weft_channel_durable_lag_bytes", ch, j.durable_lag_bytes);
    e.sample("weft_recorder_up", ch,
             std::uint64_t{j.recorder.liveness == inspect::Liveness::kAlive ? 1U : 0U});
    e.sample("weft_recorder_records_appended_total", ch, j.records_appended);
    if (s.lossy) e.sample("weft_recorder_lost_records_total", ch, j.lost_records);
    e.sample("weft_journal_flushes_total", ch, j.flushes);
    e.sample("weft_journal_durable_bytes_total", ch, j.bytes_durable);
    e.sample("weft_journal_durable_records_total", ch, j.records_durable);
    e.sample("weft_journal_errors_total", ch, j.errors);
    e.sample("weft_journal_retries_total", ch, j.retries);
    e.sample("weft_journal_flushes_in_flight", ch, std::uint64_t{j.in_flight});
    e.sample("weft_batcher_arrival_records_per_second", ch, j.policy.arrival_records_per_s);
    e.sample("weft_batcher_arrival_bytes_per_second", ch, j.policy.arrival_bytes_per_s);
    e.sample("weft_batcher_flush_fixed_seconds", ch, j.policy.flush_fixed_ns / 1e9);
    e.sample("weft_batcher_flush_seconds_per_byte", ch, j.policy.flush_ns_per_byte / 1e9);
    e.sample("weft_batcher_flush_cost_spread_seconds", ch, j.policy.flush_cost_spread_ns / 1e9);
    e.sample("weft_batcher_gather_bytes", ch, j.policy.gather_bytes);
    e.sample("weft_batcher_max_delay_seconds", ch,
             static_cast<double>(j.policy.max_delay_ns) / 1e9);
    e.sample("weft_batcher_max_flushes_in_flight", ch, std::uint64_t{j.policy.max_in_flight});
    e.sample("weft_batcher_max_io_workers", ch, std::uint64_t{j.policy.max_io_workers});
  }
  for (const inspect::Status st : {inspect::Status::kOk, inspect::Status::kBackPressured,
                                   inspect::Status::kStuck, inspect::Status::kStale}) {
    e.sample("weft_channel_status", fmt::format("{},status=\"{}\"", ch, status_label(st)),
             std::uint64_t{s.status == st ? 1U : 0U});
  }
}

// Every journal under `root` (one per subdirectory, as weft-recorder --journal-root lays them
// out, or `root` itself): segments and sequences, from a read-only scan.
void add_journals(Exposition& e, const std::string& root, bool* any_error) {
  std::vector<std::string> dirs;
  auto own = weft::list_segments(root);
  if (own && !own->empty()) {
    dirs.push_back(root);
  } else if (DIR* d = opendir(root.c_str())) {
    while (const dirent* entry = readdir(d)) {
      const std::string name = entry->d_name;
      struct stat st {};
      const std::string path = root + "/" + name;
      if (name == "." || name == ".." || stat(path.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
        continue;
      }
      dirs.push_back(path);
    }
    closedir(d);
    std::sort(dirs.begin(), dirs.end());
  } else {
    *any_error = true;
    return;
  }
  for (const std::string& dir : dirs) {
    const std::string label = fmt::format("journal=\"{}\"", escape_label(dir));
    auto segments = weft::list_segments(dir);
    if (!segments) {
      *any_error = true;
      e.sample("weft_journal_up", label, std::uint64_t{0});
      continue;
    }
    if (segments->empty()) continue;
    std::uint64_t first = 0;
    std::uint64_t last = 0;
    std::uint64_t records = 0;
    std::uint64_t bytes = 0;
    std::uint64_t disk = 0;
    bool valid = true;
    for (const weft::SegmentInfo& s : *segments) {
      if (s.records != 0 && first == 0) first = s.first_sequence;
      if (s.last_sequence != 0) last = s.last_sequence;
      records += s.records;
      bytes += s.bytes;
      disk += s.file_bytes;
      valid = valid && s.header_valid;
    }
    e.sample("weft_journal_up", label, std::uint64_t{valid ? 1U : 0U});
    e.sample("weft_journal_segments", label, std::uint64_t{segments->size()});
    e.sample("weft_journal_first_sequence", label, first);
    e.sample("weft_journal_last_sequence", label, last);
    e.sample("weft_journal_records", label, records);
    e.sample("weft_journal_record_bytes", label, bytes);
    e.sample("weft_journal_disk_bytes", label, disk);
  }
}

}  // namespace

std::string render_metrics(const Global& g, bool* any_error,
                           std::map<std::string, inspect::ChannelSnapshot>* previous) {
  Exposition e;
  declare(e);
  *any_error = false;
  auto names = inspect::list_channels(g.dir);
  std::size_t count = 0;
  std::map<std::string, inspect::ChannelSnapshot> seen;
  if (names) {
    for (const std::string& name : *names) {
      ++count;
      auto view = inspect::ChannelView::open(name, g.dir);
      if (!view) {
        *any_error = true;
        e.sample("weft_channel_up", fmt::format("channel=\"{}\"", escape_label(name)),
                 std::uint64_t{0});
        continue;
      }
      inspect::ChannelSnapshot s = view->snapshot(true);
      auto stale = weft::Channel::is_stale(name, g.dir);
      const inspect::ChannelSnapshot* before = nullptr;
      if (previous != nullptr) {
        const auto it = previous->find(name);
        if (it != previous->end() && it->second.created_unix_ns == s.created_unix_ns) {
          before = &it->second;
        }
      }
      inspect::classify(s, before, stale.has_value() && *stale);
      add_channel(e, s);
      if (previous != nullptr) seen[name] = s;
    }
  } else if (names.error().code != weft::Errc::kNotFound) {
    *any_error = true;
  }
  if (previous != nullptr) *previous = std::move(seen);  // Removed channels are forgotten.
  if (!g.journal_root.empty()) add_journals(e, g.journal_root, any_error);
  e.sample("weft_channels",
           fmt::format("dir=\"{}\"", escape_label(weft::Channel::resolve_dir(g.dir))),
           std::uint64_t{count});
  return e.text();
}

int cmd_metrics(const Global& g) {
  bool any_error = false;
  const std::string text = render_metrics(g, &any_error);
  fmt::print("{}", text);
  return any_error ? kExitProblem : kExitOk;
}

namespace {
std::atomic<bool> g_stop{false};
void request_stop(int /*signal*/) { g_stop.store(true, std::memory_order_relaxed); }
}  // namespace

int cmd_serve(const Global& g, const ServeOptions& o) {
  const std::size_t colon = o.listen.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == o.listen.size()) {
    report_error(fmt::format("--listen '{}': expected HOST:PORT, e.g. 127.0.0.1:9464", o.listen));
    return kExitUsage;
  }
  std::string host = o.listen.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  int port = 0;
  try {
    std::size_t used = 0;
    port = std::stoi(o.listen.substr(colon + 1), &used);
    if (used != o.listen.size() - colon - 1 || port < 1 || port > 65535)
      throw std::out_of_range("port");
  } catch (const std::exception&) {
    report_error(fmt::format("--listen '{}': the port must be a number in 1..65535", o.listen));
    return kExitUsage;
  }
  httplib::Server server;
  // SO_REUSEADDR only: the library's default adds SO_REUSEPORT, which would let a second
  // exporter share the port silently instead of failing.
  server.set_socket_options([](socket_t sock) {
    int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
  });
  // The last scrape's snapshots, so that status judges progress between scrapes. httplib runs
  // handlers on a thread pool: one scrape at a time.
  std::mutex scrape_mutex;
  std::map<std::string, inspect::ChannelSnapshot> previous;
  server.Get("/metrics", [&](const httplib::Request&, httplib::Response& response) {
    bool any_error = false;
    const std::lock_guard<std::mutex> lock(scrape_mutex);
    response.set_content(render_metrics(g, &any_error, &previous),
                         "text/plain; version=0.0.4; charset=utf-8");
  });
  server.Get("/", [](const httplib::Request&, httplib::Response& response) {
    response.set_content("weftctl serve: metrics at /metrics\n", "text/plain; charset=utf-8");
  });
  if (!server.bind_to_port(host.c_str(), port)) {
    report_error(fmt::format("cannot listen on {}: the address is in use or not local", o.listen));
    return kExitProblem;
  }
  // The signal handler only sets a flag; this thread stops the server (stop() is not
  // async-signal-safe), also after --max-seconds.
  struct sigaction action {};
  action.sa_handler = request_stop;
  sigemptyset(&action.sa_mask);
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);
  std::atomic<bool> done{false};
  std::thread stopper([&server, &done, seconds = o.max_seconds] {
    const auto start = std::chrono::steady_clock::now();
    while (!done.load(std::memory_order_relaxed)) {
      const bool expired =
          seconds > 0 && std::chrono::steady_clock::now() - start >
                             std::chrono::milliseconds(static_cast<std::int64_t>(seconds * 1000));
      if (g_stop.load(std::memory_order_relaxed) || expired) {
        // stop() before listen_after_bind() started would be lost: wait until it runs.
        if (server.is_running()) {
          server.stop();
          return;
        }
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  });
  fmt::print(stderr, "weftctl: serving metrics on http://{}/metrics\n", o.listen);
  std::fflush(stderr);
  const bool ok = server.listen_after_bind();
  done.store(true, std::memory_order_relaxed);
  stopper.join();
  return ok ? kExitOk : kExitProblem;
}

}  // namespace weftctl
