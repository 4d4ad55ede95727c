// SPDX-License-Identifier: MIT
// privileges.hpp - who the daemon runs as: the decision at start, and the one-way drop.
//
// plan_privileges() runs before anything is bound: it resolves server.user/server.group and
// decides, from the identity the process started with, to drop, to stay, or to refuse (root
// without a user). drop_privileges() switches groups, gid and uid for good (saved IDs too) and
// checks that root cannot be regained. Not thread-safe: call it while no other thread runs.
// SECURITY: a failed drop is fatal to the start, never a warning.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

#include <boost/system/result.hpp>

#include <relayguard/config.hpp>

namespace relayguard::server_detail {

// The account server.user names, resolved.
struct Account {
    std::string user;
    std::string group; // server.group, or the name of the user's primary group ("" if it has none)
    uid_t uid = 0;
    gid_t gid = 0;
};

// The effective identity of the process (injected, so that the decision is testable).
struct ProcessIdentity {
    uid_t euid = 0;
    gid_t egid = 0;
};

// What plan_privileges() decided.
struct PrivilegePlan {
    std::optional<Account> drop_to;    // set: call drop_privileges() once everything is bound
    std::vector<std::string> warnings; // to log once logging is set up
};

// current_identity - geteuid()/getegid().
ProcessIdentity current_identity() noexcept;

// lookup_account - server.user and server.group resolved; nullopt when server.user is empty.
// Errors name the key: "FILE: server.user: unknown user \"x\"", and server.group set without
// server.user is an error too (there is nobody to give the group to). Used by --check-config.
boost::system::result<std::optional<Account>, ConfigError> lookup_account(const ServerConfig& config,
                                                                         const std::string& config_path);

// plan_privileges - the decision for a process running as `who`:
// - root, user set: drop to it (a user with uid 0 only with allow_root);
// - root, no user: refused unless allow_root (config) or `allow_root_flag` (--allow-root);
// - not root, user set: fine if already that user, else a warning (it cannot switch) and on;
// - not root, no user: nothing to do.
boost::system::result<PrivilegePlan, ConfigError> plan_privileges(const ServerConfig& config,
                                                                 const std::string& config_path,
                                                                 bool allow_root_flag, ProcessIdentity who);

// drop_privileges - initgroups(user, gid), then real, effective and saved gid and uid to the
// account's; verifies the result and that setuid(0) now fails. Returns why it failed, if it did
// (the caller must not go on). Precondition: running as root.
std::optional<std::string> drop_privileges(const Account& to);

} // namespace relayguard::server_detail
