// Built against the installed package: sends records from a forked producer process to this
// consumer process through an SPSC channel and checks every one. Exits 0 on success.
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>

#include "weft/weft.hpp"

int main() {
  char dir_template[] = "/tmp/weft-install-XXXXXX";
  const char* dir = mkdtemp(dir_template);
  if (dir == nullptr) return 1;
  constexpr std::uint64_t kRecords = 100000;
  auto channel = weft::Channel::create("install-test", {.capacity_bytes = 1 << 16, .dir = dir});
  if (!channel) {
    std::fprintf(stderr, "%s\n", channel.error().message().c_str());
    return 1;
  }
  const pid_t child = fork();
  if (child == 0) {
    auto producer = weft::SpscProducer::open("install-test", {.dir = dir});
    if (!producer) _exit(3);
    for (std::uint64_t i = 0; i < kRecords;) {
      if (producer->try_send(std::as_bytes(std::span(&i, 1))) == weft::SendStatus::kOk) ++i;
    }
    _exit(0);
  }
  auto consumer = weft::SpscConsumer::attach(std::move(*channel));
  if (!consumer) return 1;
  std::uint64_t expected = 0;
  bool in_order = true;
  while (expected < kRecords) {
    const auto result = consumer->poll([&](std::span<const std::byte> bytes) {
      std::uint64_t value = 0;
      std::memcpy(&value, bytes.data(), sizeof value);
      in_order = in_order && value == expected && bytes.size() == sizeof value;
      ++expected;
    });
    if (result.status == weft::PollStatus::kCorrupted) return 1;
    if (result.status == weft::PollStatus::kEmpty) {
      (void)consumer->wait(std::chrono::milliseconds(10));
    }
  }
  int status = 0;
  waitpid(child, &status, 0);
  (void)weft::Channel::unlink("install-test", dir);
  rmdir(dir);
  std::printf("install consumer: %llu records, in order: %s\n",
              static_cast<unsigned long long>(expected), in_order ? "yes" : "no");
  return in_order && WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : 1;
}
