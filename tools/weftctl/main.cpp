// weftctl: inspect, check and export weft channels.
//
//   weftctl ls                      every channel: kind, fill, peers, rate, lag, status
//   weftctl show NAME               the whole header decoded
//   weftctl watch NAME | --all      a live, refreshing view
//   weftctl dump NAME [--hex]       the records between a consumer's cursor and the tail
//   weftctl verify NAME             every invariant of the header, the slots and the ring
//   weftctl unblock NAME            pad a dead MPSC producer's claim that blocks the head
//   weftctl gc | rm NAME            remove stale channels / one channel
//   weftctl metrics | serve         Prometheus exposition, printed or served on /metrics
//   weftctl journal ls|verify|dump  the journals weft-recorder writes
//
// Exit status: 0 all well, 1 a problem found (a stuck, stale or corrupt channel, a violation, a
// failed operation), 2 a usage error. Reading never disturbs a channel: no cursor moves, no role
// is taken, no lock is held (only unblock, gc and rm change anything).
#include <sys/resource.h>

#include <cstdio>
#include <string>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "weftctl.hpp"

int main(int argc, char** argv) {
  using namespace weftctl;
  CLI::App app{"weftctl: inspect, check and export weft shared-memory channels", "weftctl"};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string("weftctl ") + WEFT_VERSION_STRING);
  Global g;
  app.add_option("--dir", g.dir, "Channel directory (default: $WEFT_SHM_DIR, else /dev/shm/weft)");
  app.fallthrough();

  const auto add_json = [&g](CLI::App* command) {
    command->add_flag("--json", g.json, "Machine-readable JSON output");
  };

  LsOptions ls;
  CLI::App* ls_cmd =
      app.add_subcommand("ls", "Every channel: kind, fill, peers, rate, lag, status");
  add_json(ls_cmd);
  ls_cmd->add_option("--interval", ls.interval_ms, "Rate sampling interval in ms (0: no rates)")
      ->check(CLI::Range(0.0, 60000.0));
  ls_cmd
      ->add_option("--stuck-after", ls.stuck_after_s,
                   "Seconds without a consumer heartbeat (work pending) that count as stuck")
      ->check(CLI::Range(0, 86400));

  ShowOptions show;
  CLI::App* show_cmd = app.add_subcommand("show", "The whole header of one channel, decoded");
  show_cmd->add_option("name", show.name, "Channel name")->required();
  add_json(show_cmd);
  show_cmd->add_option("--interval", show.interval_ms, "Rate sampling interval in ms (0: none)")
      ->check(CLI::Range(0.0, 60000.0));
  show_cmd->add_option("--stuck-after", show.stuck_after_s, "As for ls")
      ->check(CLI::Range(0, 86400));

  WatchOptions watch;
  CLI::App* watch_cmd = app.add_subcommand("watch", "A live view of rates and lag, like top");
  auto* watch_name = watch_cmd->add_option("name", watch.name, "Channel name");
  auto* watch_all = watch_cmd->add_flag("--all", watch.all, "Every channel in the directory");
  watch_name->excludes(watch_all);
  add_json(watch_cmd);
  watch_cmd->add_option("--interval", watch.interval_s, "Seconds between refreshes (default 1)")
      ->check(CLI::Range(0.05, 3600.0));
  watch_cmd->add_option("--iterations", watch.iterations, "Refreshes, then exit (0: until ^C)");
  watch_cmd->add_flag("--no-clear", watch.no_clear, "Append views instead of redrawing");
  watch_cmd->add_option("--stuck-after", watch.stuck_after_s, "As for ls")
      ->check(CLI::Range(0, 86400));

  DumpCommandOptions dump;
  CLI::App* dump_cmd =
      app.add_subcommand("dump", "Records between a consumer's cursor and the tail (not consumed)");
  dump_cmd->add_option("name", dump.name, "Channel name")->required();
  add_json(dump_cmd);
  dump_cmd->add_flag("--hex", dump.hex, "Hex dump of every payload");
  dump_cmd->add_option("--count", dump.count, "Records at most (default 100)")
      ->check(CLI::Range(std::size_t{1}, std::size_t{1} << 40));
  dump_cmd
      ->add_option("--consumer", dump.consumer,
                   "Broadcast: the consumer slot to start at (default: the slowest)")
      ->check(CLI::Range(0, 1023));
  dump_cmd->add_option("--bytes", dump.bytes, "Payload bytes shown per record (default 4096)")
      ->check(CLI::Range(std::size_t{0}, std::size_t{1} << 32));
  dump_cmd->add_flag("--padding", dump.padding, "Show padding records too");

  VerifyOptions verify;
  CLI::App* verify_cmd =
      app.add_subcommand("verify", "Check every invariant; report each violation");
  verify_cmd->add_option("name", verify.name, "Channel name")->required();
  add_json(verify_cmd);

  UnblockOptions unblock;
  CLI::App* unblock_cmd = app.add_subcommand(
      "unblock", "MPSC: have a dead producer's claim at the head padded (see docs/weftctl.md)");
  unblock_cmd->add_option("name", unblock.name, "Channel name")->required();
  unblock_cmd
      ->add_option("--timeout", unblock.timeout_s,
                   "Seconds to wait (default: the channel's unblock timeout + 1)")
      ->check(CLI::Range(0.0, 86400.0));

  GcOptions gc;
  CLI::App* gc_cmd = app.add_subcommand(
      "gc", "Remove stale channels (no process has them open); never a live one");
  gc_cmd->add_flag("--dry-run,-n", gc.dry_run, "Say what would be removed");
  add_json(gc_cmd);

  RmOptions rm;
  CLI::App* rm_cmd = app.add_subcommand("rm", "Remove one channel");
  rm_cmd->add_option("name", rm.name, "Channel name")->required();
  rm_cmd->add_flag("--force", rm.force, "Remove it even while processes use it");

  CLI::App* metrics_cmd = app.add_subcommand(
      "metrics", "Print the Prometheus text exposition of every channel (and journal)");
  metrics_cmd->add_option("--journal-root", g.journal_root,
                          "Export the journals under this directory too");

  JournalCommandOptions journal;
  CLI::App* journal_cmd =
      app.add_subcommand("journal", "Journals written by weft-recorder (read-only)");
  journal_cmd->require_subcommand(1);
  CLI::App* journal_ls = journal_cmd->add_subcommand(
      "ls", "Segments, first and last sequence, durable position of each journal in DIR");
  journal_ls->add_option("dir", journal.dir, "A journal, or a journal root")->required();
  add_json(journal_ls);
  CLI::App* journal_verify =
      journal_cmd->add_subcommand("verify", "A full checksum scan of each journal in DIR");
  journal_verify->add_option("dir", journal.dir, "A journal, or a journal root")->required();
  add_json(journal_verify);
  CLI::App* journal_dump = journal_cmd->add_subcommand("dump", "The records of one journal");
  journal_dump->add_option("dir", journal.dir, "A journal directory")->required();
  add_json(journal_dump);
  journal_dump->add_option("--from", journal.from, "First sequence (default 1: the oldest)")
      ->check(CLI::Range(std::uint64_t{1}, ~std::uint64_t{0}));
  journal_dump->add_option("--count", journal.count, "Records at most (default 100)")
      ->check(CLI::Range(std::size_t{1}, std::size_t{1} << 40));
  journal_dump->add_flag("--hex", journal.hex, "Hex dump of every payload");
  journal_dump->add_option("--bytes", journal.bytes, "Payload bytes shown per record")
      ->check(CLI::Range(std::size_t{0}, std::size_t{1} << 32));

  ServeOptions serve;
  CLI::App* serve_cmd = app.add_subcommand("serve", "Serve the metrics over HTTP on /metrics");
  serve_cmd->add_option("--listen", serve.listen, "HOST:PORT (default 127.0.0.1:9464)");
  serve_cmd->add_option("--journal-root", g.journal_root,
                        "Export the journals under this directory too");
  serve_cmd->add_option("--max-seconds", serve.max_seconds, "Stop after this long (0: never)")
      ->check(CLI::Range(0.0, 1e9));

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return kExitUsage;
  }
  if (watch_cmd->parsed() && !watch.all && watch.name.empty()) {
    fmt::print(stderr, "weftctl watch: name a channel, or --all\n");
    return kExitUsage;
  }
  // ls and watch keep every channel mapped and its file open: allow as many as the hard limit.
  rlimit files{};
  if (getrlimit(RLIMIT_NOFILE, &files) == 0 && files.rlim_cur < files.rlim_max) {
    files.rlim_cur = files.rlim_max;
    setrlimit(RLIMIT_NOFILE, &files);
  }
  try {
    if (ls_cmd->parsed()) return cmd_ls(g, ls);
    if (show_cmd->parsed()) return cmd_show(g, show);
    if (watch_cmd->parsed()) return cmd_watch(g, watch);
    if (dump_cmd->parsed()) return cmd_dump(g, dump);
    if (verify_cmd->parsed()) return cmd_verify(g, verify);
    if (unblock_cmd->parsed()) return cmd_unblock(g, unblock);
    if (gc_cmd->parsed()) return cmd_gc(g, gc);
    if (rm_cmd->parsed()) return cmd_rm(g, rm);
    if (serve_cmd->parsed()) return cmd_serve(g, serve);
    if (journal_ls->parsed()) return cmd_journal_ls(g, journal);
    if (journal_verify->parsed()) return cmd_journal_verify(g, journal);
    if (journal_dump->parsed()) return cmd_journal_dump(g, journal);
    return cmd_metrics(g);
  } catch (const std::exception& e) {
    report_error(e.what());
    return kExitProblem;
  }
}
