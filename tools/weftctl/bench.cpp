// weftctl-bench: the figures behind weftctl's bar, measured in one run, side by side.
//
//   weftctl-bench ls    [--channels 100] [--runs 11]
//       Creates N live channels (every kind, with producers, consumers and traffic) and times
//       `weftctl ls` (default 50 ms rate sample, and --interval 0) from fork to exit.
//   weftctl-bench watch [--channels 100] [--pairs 7] [--phase 2.0] [--interval 1.0]
//       Streams 64-byte records through an SPSC channel between two pinned processes and
//       measures the rate in alternating phases without and with `weftctl watch --all` running
//       over the same directory (the streaming channel included), in ABBA order; reports the
//       median rate of each and the median and spread of the per-pair ratios.
//   weftctl-bench shmem-bench [--shmem-bench PATH] [--pairs 5]
//       The same comparison around whole `shmem-bench throughput --runs 1 --json` runs.
//
// Everything lives in a scratch directory under /dev/shm, removed at the end.
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "weft/broadcast.hpp"
#include "weft/mpsc.hpp"
#include "weft/spsc.hpp"

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

struct Spread {
  double median = 0;
  double min = 0;
  double max = 0;
};

Spread spread_of(std::vector<double> v) {
  Spread s;
  if (v.empty()) return s;
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  s.median = n % 2 == 1 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
  s.min = v.front();
  s.max = v.back();
  return s;
}

pid_t spawn(const std::vector<std::string>& argv, const char* out_path = "/dev/null") {
  const pid_t pid = fork();
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    const int out = open(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    const int null = open("/dev/null", O_RDWR);
    if (out < 0 || null < 0) _exit(126);
    dup2(null, 0);
    dup2(out, 1);
    dup2(null, 2);
    std::vector<char*> args;
    for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    execv(args[0], args.data());
    _exit(127);
  }
  return pid;
}

int wait_exit(pid_t pid) {
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

void pin_to(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(static_cast<std::size_t>(cpu), &set);
  sched_setaffinity(0, sizeof set, &set);
}

std::vector<int> allowed_cpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  std::vector<int> cpus;
  if (sched_getaffinity(0, sizeof set, &set) != 0) return cpus;
  for (int i = 0; i < CPU_SETSIZE; ++i) {
    if (CPU_ISSET(static_cast<std::size_t>(i), &set)) cpus.push_back(i);
  }
  return cpus;
}

std::string default_weftctl(const char* argv0) {
  const std::filesystem::path self = std::filesystem::weakly_canonical(argv0);
  return (self.parent_path() / "weftctl").string();
}

std::span<const std::byte> payload_of(const std::string& s) {
  return std::as_bytes(std::span<const char>(s.data(), s.size()));
}

// N channels of every kind with live handles and some records in them. Handles live as long as
// the Population.
struct Population {
  std::vector<weft::SpscProducer> spsc_p;
  std::vector<weft::SpscConsumer> spsc_c;
  std::vector<weft::MpscProducer> mpsc_p;
  std::vector<weft::MpscConsumer> mpsc_c;
  std::vector<weft::BroadcastProducer> bc_p;
  std::vector<weft::BroadcastConsumer> bc_c;

  bool create(const std::string& dir, int count, std::string* error) {
    const std::string record(48, 'r');
    for (int i = 0; i < count; ++i) {
      weft::ChannelOptions o;
      o.dir = dir;
      o.capacity_bytes = std::uint64_t{1} << 16;
      o.producers_max = 8;
      o.consumers_max = 8;
      const std::string name = fmt::format("chan-{:03}", i);
      switch (i % 4) {
        case 0: {
          auto p = weft::SpscProducer::create(name, o);
          if (!p) return fail(p.error(), error);
          for (int k = 0; k < 20; ++k) (void)p->try_send(payload_of(record));
          spsc_p.push_back(std::move(*p));
          auto c = weft::SpscConsumer::open(name, {dir, false});
          if (!c) return fail(c.error(), error);
          spsc_c.push_back(std::move(*c));
          break;
        }
        case 1: {
          o.kind = weft::ChannelKind::kMpsc;
          auto p = weft::MpscProducer::create(name, o);
          if (!p) return fail(p.error(), error);
          for (int k = 0; k < 20; ++k) (void)p->try_send(payload_of(record));
          mpsc_p.push_back(std::move(*p));
          auto c = weft::MpscConsumer::open(name, {dir, false});
          if (!c) return fail(c.error(), error);
          mpsc_c.push_back(std::move(*c));
          break;
        }
        default: {
          o.kind = weft::ChannelKind::kBroadcast;
          o.lossy = i % 4 == 3;
          auto p = weft::BroadcastProducer::create(name, o);
          if (!p) return fail(p.error(), error);
          auto c = weft::BroadcastConsumer::open(name, {dir, false});
          if (!c) return fail(c.error(), error);
          for (int k = 0; k < 20; ++k) (void)p->try_send(payload_of(record));
          bc_p.push_back(std::move(*p));
          bc_c.push_back(std::move(*c));
          break;
        }
      }
    }
    return true;
  }
  static bool fail(const weft::Error& e, std::string* error) {
    *error = e.message();
    return false;
  }
};

struct ScratchDir {
  std::string path;
  ScratchDir() {
    char pattern[] = "/dev/shm/weftctl-bench.XXXXXX";
    if (mkdtemp(pattern) != nullptr) path = pattern;
  }
  ~ScratchDir() {
    std::error_code ec;
    if (!path.empty()) std::filesystem::remove_all(path, ec);
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
};

int bench_ls(const std::string& weftctl, int channels, int runs, bool json_out) {
  ScratchDir dir;
  Population population;
  std::string error;
  if (!population.create(dir.path, channels, &error)) {
    fmt::print(stderr, "weftctl-bench: {}\n", error);
    return 1;
  }
  std::vector<double> sampled_ms;
  std::vector<double> unsampled_ms;
  std::vector<double> json_ms;
  for (int r = 0; r < runs + 1; ++r) {  // The first round warms caches and page tables.
    for (int variant = 0; variant < 3; ++variant) {
      std::vector<std::string> argv{weftctl, "--dir", dir.path, "ls"};
      if (variant == 1) argv.insert(argv.end(), {"--interval", "0"});
      if (variant == 2) argv.emplace_back("--json");
      const auto start = Clock::now();
      const int code = wait_exit(spawn(argv));
      const double ms = seconds_since(start) * 1e3;
      if (code != 0) {
        fmt::print(stderr, "weftctl-bench: weftctl ls exited with {}\n", code);
        return 1;
      }
      if (r == 0) continue;
      (variant == 0 ? sampled_ms : variant == 1 ? unsampled_ms : json_ms).push_back(ms);
    }
  }
  const Spread a = spread_of(sampled_ms);
  const Spread b = spread_of(unsampled_ms);
  const Spread c = spread_of(json_ms);
  if (json_out) {
    const nlohmann::json doc = {
        {"channels", channels},
        {"runs", runs},
        {"ls_ms", {{"median", a.median}, {"min", a.min}, {"max", a.max}}},
        {"ls_no_sampling_ms", {{"median", b.median}, {"min", b.min}, {"max", b.max}}},
        {"ls_json_ms", {{"median", c.median}, {"min", c.min}, {"max", c.max}}},
        {"bar_ms", 100}};
    fmt::print("{}\n", doc.dump(2));
  } else {
    fmt::print("weftctl ls over {} live channels, {} runs, wall time from fork to exit:\n",
               channels, runs);
    fmt::print("  ls (50 ms rate sample)   median {:7.1f} ms  [{:.1f} .. {:.1f}]\n", a.median,
               a.min, a.max);
    fmt::print("  ls --interval 0          median {:7.1f} ms  [{:.1f} .. {:.1f}]\n", b.median,
               b.min, b.max);
    fmt::print("  ls --json                median {:7.1f} ms  [{:.1f} .. {:.1f}]\n", c.median,
               c.min, c.max);
    fmt::print("  bar: under 100 ms\n");
  }
  return 0;
}

struct StreamShared {
  std::atomic<std::uint64_t> consumed{0};
  std::atomic<int> stop{0};
  std::atomic<int> ready{0};
};

int bench_watch(const std::string& weftctl, int channels, int pairs, double phase_s,
                double interval_s, bool json_out) {
  ScratchDir dir;
  Population population;
  std::string error;
  if (!population.create(dir.path, channels - 1, &error)) {
    fmt::print(stderr, "weftctl-bench: {}\n", error);
    return 1;
  }
  weft::ChannelOptions o;
  o.dir = dir.path;
  o.capacity_bytes = std::uint64_t{1} << 20;
  if (auto c = weft::Channel::create("stream", o); !c) {
    fmt::print(stderr, "weftctl-bench: {}\n", c.error().message());
    return 1;
  }
  void* memory = mmap(nullptr, sizeof(StreamShared), PROT_READ | PROT_WRITE,
                      MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (memory == MAP_FAILED) return 1;
  auto* shared = new (memory) StreamShared();
  const std::vector<int> cpus = allowed_cpus();
  const int cpu_a = cpus.empty() ? 0 : cpus[0];
  const int cpu_b = cpus.size() > 1 ? cpus[1] : cpu_a;
  const weft::OpenOptions open_options{dir.path, false};
  const pid_t consumer = fork();
  if (consumer == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    pin_to(cpu_b);
    auto c = weft::SpscConsumer::open("stream", open_options);
    if (!c) _exit(1);
    shared->ready.fetch_add(1);
    std::uint64_t count = 0;
    while (shared->stop.load(std::memory_order_relaxed) == 0) {
      const weft::PollResult r = c->poll([](std::span<const std::byte>) {}, 256);
      if (r.count != 0) {
        count += r.count;
        shared->consumed.store(count, std::memory_order_relaxed);
      }
    }
    _exit(0);
  }
  const pid_t producer = fork();
  if (producer == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    pin_to(cpu_a);
    auto p = weft::SpscProducer::open("stream", open_options);
    if (!p) _exit(1);
    shared->ready.fetch_add(1);
    std::byte record[64] = {};
    while (shared->stop.load(std::memory_order_relaxed) == 0) {
      for (int i = 0; i < 256; ++i) (void)p->try_send(record);
    }
    _exit(0);
  }
  while (shared->ready.load() < 2) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  std::this_thread::sleep_for(std::chrono::milliseconds(500));  // Warm-up.
  std::vector<double> watch_cpu_share;  // CPU seconds the watch process used per second.
  const auto measure = [&](bool with_watch) {
    pid_t watch = -1;
    if (with_watch) {
      watch = spawn({weftctl, "--dir", dir.path, "watch", "--all", "--no-clear", "--interval",
                     fmt::format("{}", interval_s)});
      // Let it start (its first refresh maps every channel) before the phase begins.
      std::this_thread::sleep_for(std::chrono::milliseconds(300));
    }
    const std::uint64_t before = shared->consumed.load();
    const auto start = Clock::now();
    std::this_thread::sleep_for(std::chrono::duration<double>(phase_s));
    const std::uint64_t after = shared->consumed.load();
    const double rate = static_cast<double>(after - before) / seconds_since(start);
    if (watch > 0) {
      const double alive_s = seconds_since(start) + 0.3;
      kill(watch, SIGTERM);
      int status = 0;
      rusage usage{};
      wait4(watch, &status, 0, &usage);
      const double cpu_s =
          static_cast<double>(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) +
          static_cast<double>(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6;
      watch_cpu_share.push_back(cpu_s / alive_s);
    }
    return rate;
  };
  std::vector<double> without;
  std::vector<double> with;
  std::vector<double> ratios;
  for (int pair = 0; pair < pairs; ++pair) {
    double a = 0;
    double b = 0;
    if (pair % 2 == 0) {  // ABBA: cancels a slow drift.
      a = measure(false);
      b = measure(true);
    } else {
      b = measure(true);
      a = measure(false);
    }
    without.push_back(a);
    with.push_back(b);
    ratios.push_back(b / a);
  }
  shared->stop.store(1);
  wait_exit(producer);
  wait_exit(consumer);
  munmap(memory, sizeof(StreamShared));
  const Spread a = spread_of(without);
  const Spread b = spread_of(with);
  const Spread r = spread_of(ratios);
  const Spread cpu = spread_of(watch_cpu_share);
  if (json_out) {
    const nlohmann::json doc = {
        {"channels", channels},
        {"pairs", pairs},
        {"watch_cpu_share", {{"median", cpu.median}, {"min", cpu.min}, {"max", cpu.max}}},
        {"phase_s", phase_s},
        {"watch_interval_s", interval_s},
        {"cpus", {cpu_a, cpu_b}},
        {"without_watch_msgs_per_s", {{"median", a.median}, {"min", a.min}, {"max", a.max}}},
        {"with_watch_msgs_per_s", {{"median", b.median}, {"min", b.min}, {"max", b.max}}},
        {"ratio_with_to_without", {{"median", r.median}, {"min", r.min}, {"max", r.max}}},
        {"bar_slowdown", 0.02}};
    fmt::print("{}\n", doc.dump(2));
  } else {
    fmt::print(
        "SPSC streaming, 64 B records, producer on CPU {} and consumer on CPU {}; {} "
        "channels in the directory; {} ABBA pairs of {:.1f} s phases\n",
        cpu_a, cpu_b, channels, pairs, phase_s);
    fmt::print("  without watch          median {:>12.0f} msgs/s  [{:.0f} .. {:.0f}]\n", a.median,
               a.min, a.max);
    fmt::print("  with watch --all {:.1f}s  median {:>12.0f} msgs/s  [{:.0f} .. {:.0f}]\n",
               interval_s, b.median, b.min, b.max);
    fmt::print(
        "  ratio with/without     median {:.4f}  [{:.4f} .. {:.4f}]  (slowdown {:+.2f}%; "
        "bar: at most 2%)\n",
        r.median, r.min, r.max, (1 - r.median) * 100);
    fmt::print(
        "  watch's own CPU use    median {:.3f}% of one CPU  [{:.3f} .. {:.3f}] (start-up "
        "included)\n",
        cpu.median * 100, cpu.min * 100, cpu.max * 100);
  }
  return 0;
}

int bench_shmem(const std::string& weftctl, const std::string& shmem_bench, int channels, int pairs,
                double interval_s, bool json_out) {
  ScratchDir dir;
  Population population;
  std::string error;
  if (!population.create(dir.path, channels, &error)) {
    fmt::print(stderr, "weftctl-bench: {}\n", error);
    return 1;
  }
  const std::string out = dir.path + "/.shmem-bench.json";
  const auto run_once = [&](bool with_watch) -> std::optional<double> {
    pid_t watch = -1;
    if (with_watch) {
      watch = spawn({weftctl, "--dir", dir.path, "watch", "--all", "--no-clear", "--interval",
                     fmt::format("{}", interval_s)});
      std::this_thread::sleep_for(std::chrono::milliseconds(300));
    }
    const int code =
        wait_exit(spawn({shmem_bench, "throughput", "--runs", "1", "--json"}, out.c_str()));
    if (watch > 0) {
      kill(watch, SIGTERM);
      wait_exit(watch);
    }
    if (code != 0) return std::nullopt;
    try {
      std::FILE* f = std::fopen(out.c_str(), "r");
      if (f == nullptr) return std::nullopt;
      const nlohmann::json doc = nlohmann::json::parse(f);
      std::fclose(f);
      // The weft figure: msgs_per_s at the top level or in the first result.
      if (doc.contains("msgs_per_s")) return doc["msgs_per_s"].get<double>();
      if (doc.contains("results") && !doc["results"].empty()) {
        return doc["results"][0]["msgs_per_s"].get<double>();
      }
    } catch (const std::exception&) {
    }
    return std::nullopt;
  };
  std::vector<double> without;
  std::vector<double> with;
  std::vector<double> ratios;
  for (int pair = 0; pair < pairs; ++pair) {
    std::optional<double> a;
    std::optional<double> b;
    if (pair % 2 == 0) {
      a = run_once(false);
      b = run_once(true);
    } else {
      b = run_once(true);
      a = run_once(false);
    }
    if (!a || !b) {
      fmt::print(stderr, "weftctl-bench: shmem-bench throughput failed or printed no msgs_per_s\n");
      return 1;
    }
    without.push_back(*a);
    with.push_back(*b);
    ratios.push_back(*b / *a);
  }
  const Spread a = spread_of(without);
  const Spread b = spread_of(with);
  const Spread r = spread_of(ratios);
  if (json_out) {
    fmt::print(
        "{}\n",
        nlohmann::json(
            {{"pairs", pairs},
             {"without_watch_msgs_per_s", {{"median", a.median}, {"min", a.min}, {"max", a.max}}},
             {"with_watch_msgs_per_s", {{"median", b.median}, {"min", b.min}, {"max", b.max}}},
             {"ratio_with_to_without", {{"median", r.median}, {"min", r.min}, {"max", r.max}}}})
            .dump(2));
  } else {
    fmt::print(
        "shmem-bench throughput --runs 1, {} ABBA pairs, weftctl watch --all every {:.1f} s "
        "over {} channels:\n",
        pairs, interval_s, channels);
    fmt::print("  without watch  median {:>12.0f} msgs/s  [{:.0f} .. {:.0f}]\n", a.median, a.min,
               a.max);
    fmt::print("  with watch     median {:>12.0f} msgs/s  [{:.0f} .. {:.0f}]\n", b.median, b.min,
               b.max);
    fmt::print("  ratio          median {:.4f}  [{:.4f} .. {:.4f}]  (slowdown {:+.2f}%)\n",
               r.median, r.min, r.max, (1 - r.median) * 100);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"weftctl-bench: the figures behind weftctl's bar", "weftctl-bench"};
  app.require_subcommand(1);
  std::string weftctl = default_weftctl(argv[0]);
  bool json_out = false;
  app.add_option("--weftctl", weftctl, "The weftctl binary (default: beside this one)");
  app.add_flag("--json", json_out, "JSON output");
  app.fallthrough();
  int channels = 100;
  int runs = 11;
  CLI::App* ls = app.add_subcommand("ls", "Time weftctl ls over N live channels");
  ls->add_option("--channels", channels, "Channels (default 100)")->check(CLI::Range(1, 10000));
  ls->add_option("--runs", runs, "Runs (default 11)")->check(CLI::Range(1, 1000));
  int pairs = 7;
  double phase_s = 2.0;
  double interval_s = 1.0;
  CLI::App* watch = app.add_subcommand("watch", "Streaming rate with and without weftctl watch");
  watch->add_option("--channels", channels, "Channels in the directory (default 100)")
      ->check(CLI::Range(1, 10000));
  watch->add_option("--pairs", pairs, "ABBA pairs (default 7)")->check(CLI::Range(1, 1000));
  watch->add_option("--phase", phase_s, "Seconds per phase (default 2)")
      ->check(CLI::Range(0.1, 600.0));
  watch->add_option("--interval", interval_s, "watch --interval (default 1)")
      ->check(CLI::Range(0.05, 60.0));
  std::string shmem_bench;
  CLI::App* shmem = app.add_subcommand(
      "shmem-bench", "shmem-bench throughput runs with and without weftctl watch --all");
  shmem->add_option("--shmem-bench", shmem_bench, "The shmem-bench binary")->required();
  shmem->add_option("--channels", channels, "Channels for watch to read (default 100)")
      ->check(CLI::Range(1, 10000));
  shmem->add_option("--pairs", pairs, "ABBA pairs (default 7)")->check(CLI::Range(1, 1000));
  shmem->add_option("--interval", interval_s, "watch --interval (default 1)")
      ->check(CLI::Range(0.05, 60.0));
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);
    return code == 0 ? 0 : 2;
  }
  if (access(weftctl.c_str(), X_OK) != 0) {
    fmt::print(stderr, "weftctl-bench: {} is not executable: pass --weftctl\n", weftctl);
    return 2;
  }
  if (ls->parsed()) return bench_ls(weftctl, channels, runs, json_out);
  if (watch->parsed()) return bench_watch(weftctl, channels, pairs, phase_s, interval_s, json_out);
  return bench_shmem(weftctl, shmem_bench, channels, pairs, interval_s, json_out);
}
