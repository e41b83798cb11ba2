// The `process` backend plugin: the stock supervisor of child processes.
#include "mgmt/plugin.hpp"
#include "process_backend.hpp"

MGMT_BACKEND_PLUGIN(mgmt::process::ProcessBackend, "process", "1.0.0",
                    "Supervises child processes: restart policy, logs, lifecycle events")
