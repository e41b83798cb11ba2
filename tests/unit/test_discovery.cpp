// Socket discovery must match the Go CLI's order exactly: both clients have to find the
// same server from the same environment.
#include <catch2/catch.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <string>

#include "mgmt/client.hpp"

namespace fs = std::filesystem;

namespace {

// Sets environment variables for one test and puts the old values back afterwards.
class EnvGuard {
 public:
  EnvGuard() {
    for (const char* name : {"CLIWRAP_RUNTIME_DIR", "XDG_CACHE_HOME", "HOME", "TMPDIR"}) {
      const char* v = std::getenv(name);
      saved_[name] = v ? std::optional<std::string>(v) : std::nullopt;
      ::unsetenv(name);
    }
  }
  ~EnvGuard() {
    for (const auto& [name, v] : saved_) {
      if (v) {
        ::setenv(name.c_str(), v->c_str(), 1);
      } else {
        ::unsetenv(name.c_str());
      }
    }
  }
  EnvGuard(const EnvGuard&) = delete;
  EnvGuard& operator=(const EnvGuard&) = delete;

  void set(const char* name, const std::string& v) { ::setenv(name, v.c_str(), 1); }

 private:
  std::map<std::string, std::optional<std::string>> saved_;
};

struct TempDir {
  fs::path path;
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "mgmtctl-disc-XXXXXX").string();
    REQUIRE(::mkdtemp(tmpl.data()) != nullptr);
    path = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
};

void write_file(const fs::path& p, const std::string& content) {
  fs::create_directories(p.parent_path());
  std::ofstream(p) << content;
}

}  // namespace

TEST_CASE("discover_socket falls back to $TMPDIR/cliwrap, then /tmp", "[mgmtctl][discovery]") {
  EnvGuard env;
  CHECK(mgmt::discover_socket(std::nullopt) == "/tmp/cliwrap/manager.sock");
  env.set("TMPDIR", "/var/tmp/");
  CHECK(mgmt::discover_socket(std::nullopt) == "/var/tmp/cliwrap/manager.sock");
  env.set("TMPDIR", "");
  CHECK(mgmt::discover_socket(std::nullopt) == "/tmp/cliwrap/manager.sock");
}

TEST_CASE("discover_socket order: flag, env, hint file, temp dir", "[mgmtctl][discovery]") {
  EnvGuard env;
  TempDir tmp;
  env.set("XDG_CACHE_HOME", (tmp.path / "cache").string());
  env.set("TMPDIR", (tmp.path / "t").string());
  const auto hint = tmp.path / "cache" / "cliwrap" / "runtime-dir";
  CHECK(mgmt::hint_file_path() == hint.string());

  // Nothing set: the temp dir.
  CHECK(mgmt::discover_socket(std::nullopt) == (tmp.path / "t/cliwrap/manager.sock").string());

  // The hint file: one line, trimmed.
  write_file(hint, "  /run/user/1000/cw \n");
  CHECK(mgmt::discover_socket(std::nullopt) == "/run/user/1000/cw/manager.sock");

  // The environment beats the hint.
  env.set("CLIWRAP_RUNTIME_DIR", "/srv/rt");
  CHECK(mgmt::discover_socket(std::nullopt) == "/srv/rt/manager.sock");

  // The flag beats everything.
  CHECK(mgmt::discover_socket(std::string("/flag/dir/")) == "/flag/dir/manager.sock");
}

TEST_CASE("an empty or unreadable hint file is ignored", "[mgmtctl][discovery]") {
  EnvGuard env;
  TempDir tmp;
  env.set("XDG_CACHE_HOME", tmp.path.string());
  env.set("TMPDIR", "/tt");
  const auto hint = tmp.path / "cliwrap" / "runtime-dir";

  write_file(hint, " \n\n");
  CHECK(mgmt::discover_socket(std::nullopt) == "/tt/cliwrap/manager.sock");

  // A directory where the file should be cannot be read as one.
  fs::remove(hint);
  fs::create_directories(hint);
  CHECK(mgmt::discover_socket(std::nullopt) == "/tt/cliwrap/manager.sock");
}

TEST_CASE("user_cache_dir: XDG_CACHE_HOME, else HOME/.cache, else none", "[mgmtctl][discovery]") {
  EnvGuard env;
  CHECK(mgmt::user_cache_dir().empty());
  CHECK(mgmt::hint_file_path().empty());
  CHECK(mgmt::discover_socket(std::nullopt) == "/tmp/cliwrap/manager.sock");

  env.set("HOME", "/home/ann");
  CHECK(mgmt::user_cache_dir() == "/home/ann/.cache");
  CHECK(mgmt::hint_file_path() == "/home/ann/.cache/cliwrap/runtime-dir");

  env.set("XDG_CACHE_HOME", "/xdg/cache");
  CHECK(mgmt::user_cache_dir() == "/xdg/cache");
  CHECK(mgmt::hint_file_path() == "/xdg/cache/cliwrap/runtime-dir");
}

TEST_CASE("the hint file under HOME/.cache is found", "[mgmtctl][discovery]") {
  EnvGuard env;
  TempDir tmp;
  env.set("HOME", tmp.path.string());
  write_file(tmp.path / ".cache/cliwrap/runtime-dir", "/from/home/hint");
  CHECK(mgmt::discover_socket(std::nullopt) == "/from/home/hint/manager.sock");
}

TEST_CASE("default_runtime_dir: $CLIWRAP_RUNTIME_DIR, else $TMPDIR/cliwrap", "[mgmtctl][discovery]") {
  EnvGuard env;
  CHECK(mgmt::default_runtime_dir() == "/tmp/cliwrap");
  env.set("TMPDIR", "/scratch");
  CHECK(mgmt::default_runtime_dir() == "/scratch/cliwrap");
  env.set("CLIWRAP_RUNTIME_DIR", "/run/mgmtd");
  CHECK(mgmt::default_runtime_dir() == "/run/mgmtd");
}
