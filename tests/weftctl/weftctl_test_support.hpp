// Running the weftctl binary from tests: its exit status and what it printed.
#pragma once

#include <string>
#include <vector>

namespace weft::test {

struct Ran {
  int exit_code = -1;  // -1 when it died of a signal.
  int signal = 0;
  std::string out;
  std::string err;
  [[nodiscard]] std::string describe() const;
};

// The weftctl built with the tests (WEFTCTL_PATH).
const char* weftctl_path();

// Runs weftctl with `args` and waits for it; stdout and stderr are captured separately. The
// child dies after `timeout_s` (SIGKILL) so that a hang fails the test instead of stalling it.
Ran run_weftctl(const std::vector<std::string>& args, unsigned timeout_s = 120);

// Runs `argv` (argv[0] a path) the same way.
Ran run_program(const std::vector<std::string>& argv, unsigned timeout_s = 120);

// A TCP port on 127.0.0.1 that was free a moment ago.
int free_loopback_port();

}  // namespace weft::test

namespace weft::test {

// A program running in the background (stdout and stderr to files), SIGKILLed and reaped on
// destruction; it dies with the test too (PR_SET_PDEATHSIG).
class Background {
 public:
  explicit Background(const std::vector<std::string>& argv);
  ~Background();
  Background(const Background&) = delete;
  Background& operator=(const Background&) = delete;
  [[nodiscard]] bool running();
  // Sends SIGTERM and waits up to `seconds`, then SIGKILL. Returns the exit status (-1: signal).
  int stop(unsigned seconds = 10);
  [[nodiscard]] std::string output() const;  // stdout and stderr so far.

 private:
  int pid_ = -1;
  bool reaped_ = false;
  int exit_code_ = -1;
  std::string dir_;
};

}  // namespace weft::test
