// SPDX-License-Identifier: MIT
// privileges.cpp - server.user/group/allow_root: lookup, decision, drop (see privileges.hpp).
//
// The drop uses setresgid/setresuid so that the saved IDs go too (a plain seteuid() would let a
// later exploit switch back to root), and initgroups so that the user's own group memberships
// (e.g. postfix, for socket_group or a map file) replace root's. glibc applies each of these
// calls to every thread of the process, so a thread started before the drop is dropped as well.
#include "server/privileges.hpp"

#include <grp.h>
#include <pwd.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string_view>

#include <fmt/format.h>

namespace relayguard::server_detail {
namespace {

// Buffer for getpwnam_r/getgrnam_r/getgrgid_r; large enough for any sane passwd/group entry
// (a group with thousands of members would need more: that is reported, not truncated).
constexpr std::size_t account_lookup_buffer_bytes = 65536;

ConfigError key_error(const std::string& path, std::string_view key, std::string message)
{
    return ConfigError{path, 0, std::string(key), std::move(message)};
}

// group_name - the name of `gid`, "" if it has none (a primary group missing from /etc/group).
std::string group_name(gid_t gid)
{
    std::vector<char> buf(account_lookup_buffer_bytes);
    group gr{};
    group* found = nullptr;
    if (::getgrgid_r(gid, &gr, buf.data(), buf.size(), &found) != 0 || !found) return {};
    return gr.gr_name;
}

} // namespace

ProcessIdentity current_identity() noexcept
{
    return ProcessIdentity{::geteuid(), ::getegid()};
}

boost::system::result<std::optional<Account>, ConfigError> lookup_account(const ServerConfig& config,
                                                                         const std::string& config_path)
{
    if (config.user.empty()) {
        if (!config.group.empty())
            return key_error(config_path, "server.group",
                             fmt::format("group \"{}\" is set but server.user is not; set both, or neither",
                                         config.group));
        return std::optional<Account>{};
    }

    std::vector<char> buf(account_lookup_buffer_bytes);
    Account account;
    {
        passwd pw{};
        passwd* found = nullptr;
        const int rc = ::getpwnam_r(config.user.c_str(), &pw, buf.data(), buf.size(), &found);
        // getpwnam_r reports "no such user" as 0 and no entry, or (some NSS modules) as ENOENT.
        if (rc != 0 && rc != ENOENT)
            return key_error(config_path, "server.user",
                             fmt::format("cannot look up user \"{}\": {}", config.user, std::strerror(rc)));
        if (!found) return key_error(config_path, "server.user", fmt::format("unknown user \"{}\"", config.user));
        account.user = pw.pw_name;
        account.uid = pw.pw_uid;
        account.gid = pw.pw_gid;
    }

    if (config.group.empty()) {
        account.group = group_name(account.gid);
        return std::optional<Account>{std::move(account)};
    }
    group gr{};
    group* found = nullptr;
    const int rc = ::getgrnam_r(config.group.c_str(), &gr, buf.data(), buf.size(), &found);
    if (rc != 0 && rc != ENOENT)
        return key_error(config_path, "server.group",
                         fmt::format("cannot look up group \"{}\": {}", config.group, std::strerror(rc)));
    if (!found) return key_error(config_path, "server.group", fmt::format("unknown group \"{}\"", config.group));
    account.group = gr.gr_name;
    account.gid = gr.gr_gid;
    return std::optional<Account>{std::move(account)};
}

boost::system::result<PrivilegePlan, ConfigError> plan_privileges(const ServerConfig& config,
                                                                 const std::string& config_path,
                                                                 bool allow_root_flag, ProcessIdentity who)
{
    auto account = lookup_account(config, config_path);
    if (!account) return account.error();
    PrivilegePlan plan;
    const bool root_allowed = config.allow_root || allow_root_flag;
    const char* const allowed_by = config.allow_root ? "server.allow_root" : "--allow-root";

    if (who.euid == 0) {
        if (!*account) {
            if (!root_allowed)
                return ConfigError{config_path, 0, "",
                                   "refusing to run as root: set server.user, or server.allow_root = true "
                                   "(or start with --allow-root)"};
            plan.warnings.push_back(fmt::format("running as root ({}); set server.user to run as a user "
                                                "of its own once the sockets are bound",
                                                allowed_by));
            return plan;
        }
        const Account& to = **account;
        if (to.uid == 0) {
            if (!root_allowed)
                return key_error(config_path, "server.user",
                                 fmt::format("user \"{}\" has uid 0: refusing to run as root; set "
                                             "server.allow_root = true (or start with --allow-root) if meant",
                                             to.user));
            plan.warnings.push_back(
                fmt::format("running as root: server.user \"{}\" has uid 0 ({})", to.user, allowed_by));
            return plan;
        }
        plan.drop_to = to;
        return plan;
    }

    // Not root: an identity can only be kept, never changed. Going on (with a warning) rather
    // than failing, as nginx does with its `user` directive: whoever started us unprivileged
    // (systemd's User=, a test, a developer) chose the identity, and it has no root to lose.
    if (!*account) return plan;
    const Account& want = **account;
    if (who.euid != want.uid) {
        plan.warnings.push_back(fmt::format("server.user is \"{}\" (uid {}), but relayguard was started as uid {}, "
                                            "not root, and cannot switch users: going on as uid {}",
                                            want.user, want.uid, who.euid, who.euid));
    } else if (who.egid != want.gid) {
        plan.warnings.push_back(fmt::format("server.group: running with gid {}, not \"{}\" (gid {}), and only root "
                                            "can switch groups: going on with gid {}",
                                            who.egid, want.group, want.gid, who.egid));
    }
    return plan;
}

std::optional<std::string> drop_privileges(const Account& to)
{
    // Groups first: once the uid is not root, neither the groups nor the gid can change.
    if (::initgroups(to.user.c_str(), to.gid) != 0)
        return fmt::format("initgroups(\"{}\", {}): {}", to.user, to.gid, std::strerror(errno));
    if (::setresgid(to.gid, to.gid, to.gid) != 0)
        return fmt::format("setresgid({}): {}", to.gid, std::strerror(errno));
    if (::setresuid(to.uid, to.uid, to.uid) != 0)
        return fmt::format("setresuid({}): {}", to.uid, std::strerror(errno));

    // Verify. The calls above are all-or-nothing, but a drop that silently left a saved uid of
    // 0 behind would be worse than not starting.
    uid_t ruid = 0, euid = 0, suid = 0;
    gid_t rgid = 0, egid = 0, sgid = 0;
    if (::getresuid(&ruid, &euid, &suid) != 0 || ::getresgid(&rgid, &egid, &sgid) != 0)
        return fmt::format("getresuid/getresgid: {}", std::strerror(errno));
    if (ruid != to.uid || euid != to.uid || suid != to.uid || rgid != to.gid || egid != to.gid || sgid != to.gid)
        return fmt::format("after the drop the ids are uid {}/{}/{} gid {}/{}/{}, want uid {} gid {}", ruid, euid,
                           suid, rgid, egid, sgid, to.uid, to.gid);
    if (::setuid(0) == 0 || ::seteuid(0) == 0)
        return fmt::format("setuid(0) succeeded after dropping to \"{}\": root could be regained", to.user);
    if (::setgid(0) == 0 && to.gid != 0)
        return fmt::format("setgid(0) succeeded after dropping to \"{}\"", to.user);
    return std::nullopt;
}

} // namespace relayguard::server_detail
