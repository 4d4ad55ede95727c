// SPDX-License-Identifier: MIT
// logging.hpp - the process's log target and level (spdlog behind it; not part of this API).
//
// init_logging() picks stderr or syslog (facility mail, ident "relayguard") and the level; it is
// called at start and on reload. Logging itself is thread-safe.
#pragma once

#include <relayguard/config.hpp>

namespace relayguard {

void init_logging(const LogConfig& config);

} // namespace relayguard
