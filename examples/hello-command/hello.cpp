// hello: the smallest useful extra command, and a template for writing your own.
//
//   request  {name: str}   (optional; an empty payload is fine)
//   answer   {err: "", greeting: "Hello, Ada", processes: 3, running: 2}
//
// Like every extra command it answers on the type it was called with, with a map that
// always has `err`; a request it cannot decode gets the protocol's generic error reply
// (a StatusResponse, 0xA3). Map it in mgmt.yaml and call it with mgmtctl:
//
//   commands:
//     0xAD: {plugin: /path/to/hello.so, version: "^1.0", config: {greeting: Hello}}
//
//   mgmtctl call 0xAD '{"name": "Ada"}'
#include <stdexcept>
#include <string>

#include <nlohmann/json.hpp>

#include "mgmt/commands.hpp"         // reply_command(): answer on the request's own type
#include "mgmt/handler_support.hpp"  // reply_error(): the generic 0xA3 error reply
#include "mgmt/plugin.hpp"           // PluginEnv, MGMT_COMMAND_PLUGIN

namespace {

class Hello final : public mgmt::Handler {
 public:
  // Runs once at start-up. Throwing refuses the configuration: mgmtd prints the message
  // with the plugin's file and exits 2 (yaml-cpp's own errors name the line).
  explicit Hello(const mgmt::PluginEnv& env) : backend_(*env.backend) {
    if (env.config && env.config["greeting"]) greeting_ = env.config["greeting"].as<std::string>();
    if (greeting_.empty()) throw std::runtime_error("hello: `greeting` must not be empty");
  }

  // Runs on the server's I/O thread: never block here.
  void handle(std::shared_ptr<mgmt::Exchange> ex) override {
    // Decode tolerantly, as the protocol asks: no payload or no `name` means the default,
    // unknown keys are ignored, a value of the wrong kind is an error naming the field.
    std::string name = "world";
    if (!ex->payload().empty()) {
      const auto req = nlohmann::json::from_msgpack(ex->payload(), /*strict=*/true,
                                                    /*allow_exceptions=*/false);
      if (!req.is_object()) {
        mgmt::reply_error(*ex, "cannot decode the hello request: not a MessagePack map");
        return;
      }
      if (const auto it = req.find("name"); it != req.end() && !it->is_null()) {
        if (!it->is_string()) {
          mgmt::reply_error(*ex, "cannot decode the hello request: field 'name': expected a string");
          return;
        }
        name = it->get<std::string>();
      }
    }

    std::size_t running = 0;
    const auto entries = backend_.list();  // cheap and non-blocking by the Backend contract
    for (const auto& e : entries) running += e.state == mgmt::state::running;

    const nlohmann::json answer = {{"err", ""},
                                   {"greeting", greeting_ + ", " + name},
                                   {"processes", entries.size()},
                                   {"running", running}};
    const auto bytes = nlohmann::json::to_msgpack(answer);
    mgmt::reply_command(*ex, std::string(bytes.begin(), bytes.end()));
  }

 private:
  mgmt::Backend& backend_;
  std::string greeting_ = "Hello";
};

}  // namespace

// Exports mgmt_plugin_info (kind command, ABI, name and version from mgmt_add_plugin) and
// the factory.
MGMT_COMMAND_PLUGIN(Hello, MGMT_PLUGIN_NAME, MGMT_PLUGIN_VERSION,
                    "greets, and counts the supervised processes")
